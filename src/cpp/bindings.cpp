// pybind11 glue for fastemb._C. Kernels take raw buffer addresses (Python ints) so that NumPy
// arrays and torch tensors (bf16 included, which NumPy cannot hold) reach them without copies.
// The Python layer validates dtypes, shapes and contiguity before calling; the C++ layer checks
// values (labels, offsets) again. The GIL is released inside every kernel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "binary/binary.h"
#include "centroid/centroid.h"
#include "common/cpu_features.h"
#include "common/thread_pool.h"

#include "binding_args.h"
#include "bindings_common.h"

namespace py = pybind11;
using namespace fastemb;
using bindings::make_binarize_problem;
using bindings::make_binary_problem;
using bindings::make_centroid_problem;
using bindings::ptr;

#ifndef FASTEMB_VERSION
#define FASTEMB_VERSION "0.0.0"
#endif

namespace fastemb::bindings {

Isa isa_from_name(const std::string& name) {
  if (name.empty()) return active_isa();
  Isa isa;
  if (!parse_isa(name, &isa)) throw std::invalid_argument(std::string("isa must be one of ") + isa_names_for_arch() + ", got '" + name + "'");
  if (!isa_supported(isa)) throw std::invalid_argument("isa '" + name + "' is not supported by this CPU");
  return isa;
}

}  // namespace fastemb::bindings

using bindings::isa_from_name;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastemb native CPU kernels (internal: use the fastemb package)";
  m.attr("__version__") = FASTEMB_VERSION;

  // The data address of a NumPy array for the kernels (fastemb._backend.address): ~10x cheaper than
  // ndarray.ctypes.data, which builds a ctypes helper object per call (10 of them per ternary GEMV call).
  m.def("array_address", [](py::handle obj) -> uintptr_t {
    if (!py::isinstance<py::array>(obj)) throw py::type_error("array_address: expected a numpy.ndarray");
    const auto a = py::reinterpret_borrow<py::array>(obj);
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
      throw py::value_error("internal error: a misaligned array reached the native kernels (fastemb should have "
                            "copied it; please report this)");
    return reinterpret_cast<uintptr_t>(a.data());
  });
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("active_isa_error", [] { return active_isa_error(); });
  m.def("set_active_isa", [](const std::string& name) { set_active_isa(isa_from_name(name)); });
  m.def("supported_isas", [] {
    py::list out;
    for (Isa isa : kAllIsas)
      if (isa_supported(isa)) out.append(isa_name(isa));
    return out;
  });
  m.def("cpu_features", [] {
    const CpuFeatures& f = cpu_features();
    py::dict out;
    out["avx2"] = f.avx2;
    out["fma"] = f.fma;
    out["f16c"] = f.f16c;
    out["bmi2"] = f.bmi2;
    out["popcnt"] = f.popcnt;
    out["avx512f"] = f.avx512f;
    out["avx512bw"] = f.avx512bw;
    out["avx512vl"] = f.avx512vl;
    out["avx512dq"] = f.avx512dq;
    out["avx512vpopcntdq"] = f.avx512vpopcntdq;
    out["avx512vnni"] = f.avx512vnni;
    out["avxvnni"] = f.avxvnni;
    out["asimd"] = f.asimd;
    out["asimddp"] = f.asimddp;
    out["i8mm"] = f.i8mm;
    return out;
  });
  m.def("get_num_threads", &get_num_threads);
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
    py::gil_scoped_release release;
    set_num_threads(n);
  });

  m.def(
      "centroid_forward",
      [](uintptr_t x, int dtype, int64_t n, int64_t d, uintptr_t labels, bool labels_int32, uintptr_t offsets, int64_t k,
         uintptr_t weights, int reduce, int normalize, double eps, bool leave_one_out, uintptr_t out, uintptr_t counts,
         uintptr_t wsum, uintptr_t arg, uintptr_t out_norm, const std::string& isa) {
        const centroid::Problem p =
            make_centroid_problem(x, dtype, n, d, labels, labels_int32, offsets, k, weights, reduce, normalize, eps, leave_one_out);
        const centroid::ForwardOutputs o = bindings::make_centroid_outputs(out, counts, wsum, arg, out_norm);
        const Isa chosen = isa_from_name(isa);
        py::gil_scoped_release release;
        centroid::forward_isa(chosen, p, o);
      },
      py::arg("x"), py::arg("dtype"), py::arg("n"), py::arg("d"), py::arg("labels"), py::arg("labels_int32"),
      py::arg("offsets"), py::arg("k"), py::arg("weights"), py::arg("reduce"), py::arg("normalize"), py::arg("eps"),
      py::arg("leave_one_out"), py::arg("out"), py::arg("counts"), py::arg("wsum"), py::arg("arg"), py::arg("out_norm"),
      py::arg("isa") = "");

  m.def(
      "centroid_backward",
      [](uintptr_t x, int dtype, int64_t n, int64_t d, uintptr_t labels, bool labels_int32, uintptr_t offsets, int64_t k,
         uintptr_t weights, int reduce, int normalize, double eps, bool leave_one_out, uintptr_t grad_out, uintptr_t out,
         uintptr_t counts, uintptr_t wsum, uintptr_t arg, uintptr_t out_norm, uintptr_t grad_x, uintptr_t grad_w,
         const std::string& isa) {
        const centroid::Problem p =
            make_centroid_problem(x, dtype, n, d, labels, labels_int32, offsets, k, weights, reduce, normalize, eps, leave_one_out);
        const centroid::BackwardInputs in = bindings::make_centroid_saved(grad_out, out, counts, wsum, arg, out_norm);
        const centroid::BackwardOutputs o = bindings::make_centroid_grads(grad_x, grad_w);
        const Isa chosen = isa_from_name(isa);
        py::gil_scoped_release release;
        centroid::backward_isa(chosen, p, in, o);
      },
      py::arg("x"), py::arg("dtype"), py::arg("n"), py::arg("d"), py::arg("labels"), py::arg("labels_int32"),
      py::arg("offsets"), py::arg("k"), py::arg("weights"), py::arg("reduce"), py::arg("normalize"), py::arg("eps"),
      py::arg("leave_one_out"), py::arg("grad_out"), py::arg("out"), py::arg("counts"), py::arg("wsum"), py::arg("arg"),
      py::arg("out_norm"), py::arg("grad_x"), py::arg("grad_w"), py::arg("isa") = "");

  // ---- binary codes (SDC). q/d: uint8 [n, bits, nbytes] C-contiguous; mode 0 = hamming, 1 = sdc.
  m.def(
      "binary_scores",
      [](uintptr_t q, int64_t nq, uintptr_t d, int64_t nd, int bits, int64_t nbytes, int64_t dim, int mode,
         uintptr_t out, const std::string& isa) {
        const binary::Problem p = make_binary_problem(q, nq, d, nd, bits, nbytes, dim, mode);
        const Isa chosen = isa_from_name(isa);
        py::gil_scoped_release release;
        binary::scores_isa(chosen, p, ptr<int32_t>(out));
      },
      py::arg("q"), py::arg("nq"), py::arg("d"), py::arg("nd"), py::arg("bits"), py::arg("nbytes"), py::arg("dim"),
      py::arg("mode"), py::arg("out"), py::arg("isa") = "");
  m.def(
      "binary_topk",
      [](uintptr_t q, int64_t nq, uintptr_t d, int64_t nd, int bits, int64_t nbytes, int64_t dim, int64_t k,
         uintptr_t scores, uintptr_t ids, const std::string& isa) {
        const binary::Problem p = make_binary_problem(q, nq, d, nd, bits, nbytes, dim, 1);
        const Isa chosen = isa_from_name(isa);
        py::gil_scoped_release release;
        binary::topk_isa(chosen, p, k, ptr<int32_t>(scores), ptr<int64_t>(ids));
      },
      py::arg("q"), py::arg("nq"), py::arg("d"), py::arg("nd"), py::arg("bits"), py::arg("nbytes"), py::arg("dim"),
      py::arg("k"), py::arg("scores"), py::arg("ids"), py::arg("isa") = "");
  // binarize: x [n, m] (row stride ld elements; dtype 0 f32, 1 f64, 2 f16, 3 bf16) -> out uint8
  // [n, bits, ceil(m / 8)]. scale: 0 (mean|x| per row) or the address of float64 values read with
  // scale_stride 0 (scalar) or 1 ([n]). Returns False when x holds NaN or inf.
  m.def(
      "binary_binarize",
      [](uintptr_t x, int dtype, int64_t n, int64_t m_, int64_t ld, int bits, uintptr_t scale, int64_t scale_stride,
         bool gt, uintptr_t out, const std::string& isa) {
        const binary::BinarizeProblem p = make_binarize_problem(x, dtype, n, m_, ld, bits, scale, scale_stride, gt);
        const Isa chosen = isa_from_name(isa);
        py::gil_scoped_release release;
        return binary::binarize_isa(chosen, p, ptr<uint8_t>(out));
      },
      py::arg("x"), py::arg("dtype"), py::arg("n"), py::arg("m"), py::arg("ld"), py::arg("bits"), py::arg("scale"),
      py::arg("scale_stride"), py::arg("gt"), py::arg("out"), py::arg("isa") = "");
  // The binary kernel variant a requested ISA runs (avx512 without VPOPCNTDQ runs avx2).
  m.def("binary_kernel_isa", [](const std::string& isa) { return std::string(isa_name(binary::kernel_isa(isa_from_name(isa)))); },
        py::arg("isa") = "");

  bindings::bind_ternary(m);
  bindings::bind_graph(m);
  bindings::bind_multivector(m);
}
