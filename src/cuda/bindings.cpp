// pybind11 glue for fastemb._C_cuda (optional module, built when nvcc is found).
// Pointers arrive as Python ints (device addresses, 0 = null) and the stream as the integer value
// of a cudaStream_t (torch.cuda.current_stream().cuda_stream). The GIL is released around the
// launches; std::invalid_argument -> ValueError, std::runtime_error (CUDA errors) -> RuntimeError.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "binary/binary.h"
#include "binary_cuda.cuh"
#include "centroid/centroid.h"
#include "centroid_cuda.cuh"

#include "binding_args.h"
#include "cuda_bindings_common.h"

namespace py = pybind11;
using namespace fastemb;
using bindings::make_binarize_problem;
using bindings::make_binary_problem;
using bindings::make_centroid_problem;
using bindings::ptr;

using bindings::as_stream;

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "fastemb CUDA kernels (internal: use the fastemb package)";
  m.def("device_count", [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky error: no driver or no device
      return 0;
    }
    return n;
  });

  m.def(
      "centroid_forward",
      [](uintptr_t x, int dtype, int64_t n, int64_t d, uintptr_t labels, bool labels_int32, uintptr_t offsets, int64_t k,
         uintptr_t weights, int reduce, int normalize, double eps, bool leave_one_out, uintptr_t out, uintptr_t counts,
         uintptr_t wsum, uintptr_t arg, uintptr_t out_norm, bool deterministic, uintptr_t stream) {
        const centroid::Problem p =
            make_centroid_problem(x, dtype, n, d, labels, labels_int32, offsets, k, weights, reduce, normalize, eps, leave_one_out);
        const centroid::ForwardOutputs o = bindings::make_centroid_outputs(out, counts, wsum, arg, out_norm);
        py::gil_scoped_release release;
        centroid::cuda::forward(p, o, deterministic, as_stream(stream));
      },
      py::arg("x"), py::arg("dtype"), py::arg("n"), py::arg("d"), py::arg("labels"), py::arg("labels_int32"),
      py::arg("offsets"), py::arg("k"), py::arg("weights"), py::arg("reduce"), py::arg("normalize"), py::arg("eps"),
      py::arg("leave_one_out"), py::arg("out"), py::arg("counts"), py::arg("wsum"), py::arg("arg"), py::arg("out_norm"),
      py::arg("deterministic") = false, py::arg("stream") = 0);

  m.def(
      "centroid_backward",
      [](uintptr_t x, int dtype, int64_t n, int64_t d, uintptr_t labels, bool labels_int32, uintptr_t offsets, int64_t k,
         uintptr_t weights, int reduce, int normalize, double eps, bool leave_one_out, uintptr_t grad_out, uintptr_t out,
         uintptr_t counts, uintptr_t wsum, uintptr_t arg, uintptr_t out_norm, uintptr_t grad_x, uintptr_t grad_w,
         bool deterministic, uintptr_t stream) {
        const centroid::Problem p =
            make_centroid_problem(x, dtype, n, d, labels, labels_int32, offsets, k, weights, reduce, normalize, eps, leave_one_out);
        const centroid::BackwardInputs in = bindings::make_centroid_saved(grad_out, out, counts, wsum, arg, out_norm);
        const centroid::BackwardOutputs o = bindings::make_centroid_grads(grad_x, grad_w);
        py::gil_scoped_release release;
        centroid::cuda::backward(p, in, o, deterministic, as_stream(stream));
      },
      py::arg("x"), py::arg("dtype"), py::arg("n"), py::arg("d"), py::arg("labels"), py::arg("labels_int32"),
      py::arg("offsets"), py::arg("k"), py::arg("weights"), py::arg("reduce"), py::arg("normalize"), py::arg("eps"),
      py::arg("leave_one_out"), py::arg("grad_out"), py::arg("out"), py::arg("counts"), py::arg("wsum"), py::arg("arg"),
      py::arg("out_norm"), py::arg("grad_x"), py::arg("grad_w"), py::arg("deterministic") = false,
      py::arg("stream") = 0);

  // ---- binary codes (SDC). q/d: uint8 [n, bits, nbytes] C-contiguous device arrays; mode 0 =
  // hamming, 1 = sdc. Same results as _C.binary_scores / _C.binary_topk.
  m.def(
      "binary_scores",
      [](uintptr_t q, int64_t nq, uintptr_t d, int64_t nd, int bits, int64_t nbytes, int64_t dim, int mode,
         uintptr_t out, uintptr_t stream) {
        const binary::Problem p = make_binary_problem(q, nq, d, nd, bits, nbytes, dim, mode);
        py::gil_scoped_release release;
        binary::cuda::scores(p, ptr<int32_t>(out), as_stream(stream));
      },
      py::arg("q"), py::arg("nq"), py::arg("d"), py::arg("nd"), py::arg("bits"), py::arg("nbytes"), py::arg("dim"),
      py::arg("mode"), py::arg("out"), py::arg("stream") = 0);
  m.def(
      "binary_topk",
      [](uintptr_t q, int64_t nq, uintptr_t d, int64_t nd, int bits, int64_t nbytes, int64_t dim, int64_t k,
         uintptr_t scores, uintptr_t ids, uintptr_t stream) {
        const binary::Problem p = make_binary_problem(q, nq, d, nd, bits, nbytes, dim, 1);
        py::gil_scoped_release release;
        binary::cuda::topk(p, k, ptr<int32_t>(scores), ptr<int64_t>(ids), as_stream(stream));
      },
      py::arg("q"), py::arg("nq"), py::arg("d"), py::arg("nd"), py::arg("bits"), py::arg("nbytes"), py::arg("dim"),
      py::arg("k"), py::arg("scores"), py::arg("ids"), py::arg("stream") = 0);
  // binarize: the same arguments as _C.binary_binarize (device addresses) + bad (device int32 flag,
  // set to 1 on NaN / inf) and the stream.
  m.def(
      "binary_binarize",
      [](uintptr_t x, int dtype, int64_t n, int64_t m_, int64_t ld, int bits, uintptr_t scale, int64_t scale_stride,
         bool gt, uintptr_t out, uintptr_t bad, uintptr_t stream) {
        const binary::BinarizeProblem p = make_binarize_problem(x, dtype, n, m_, ld, bits, scale, scale_stride, gt);
        py::gil_scoped_release release;
        binary::cuda::binarize(p, ptr<uint8_t>(out), ptr<int32_t>(bad), as_stream(stream));
      },
      py::arg("x"), py::arg("dtype"), py::arg("n"), py::arg("m"), py::arg("ld"), py::arg("bits"), py::arg("scale"),
      py::arg("scale_stride"), py::arg("gt"), py::arg("out"), py::arg("bad"), py::arg("stream") = 0);

  bindings::bind_ternary_cuda(m);
  bindings::bind_graph_cuda(m);
  bindings::bind_multivector_cuda(m);
}
