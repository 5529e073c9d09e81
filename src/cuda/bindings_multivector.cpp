// pybind11 glue for the multi-vector family of fastemb._C_cuda (registered from bindings.cpp). Device
// buffers as addresses (Python ints), the CUDA stream as an int (0 = default stream). Same names and
// positional arguments as fastemb._C's multivector_* functions, with `stream` in place of `isa`;
// multivector_fde also takes the required keyword `max_tokens` (the longest set: the set bounds stay on
// the device).
#include <pybind11/pybind11.h>

#include <cstdint>

#include "binding_args.h"
#include "cuda_bindings_common.h"
#include "multivector/multivector.h"
#include "multivector_cuda.cuh"

namespace py = pybind11;

namespace fastemb::bindings {

void bind_multivector_cuda(py::module_& m) {
  m.def(
      "multivector_maxsim",
      [](uintptr_t q, int64_t q_rows, uintptr_t q_begin, uintptr_t q_end, int64_t nq, uintptr_t d, int64_t d_rows,
         uintptr_t d_begin, uintptr_t d_end, int64_t nd, int64_t dim, uintptr_t out, uintptr_t stream) {
        py::gil_scoped_release release;
        multivector::cuda::maxsim(make_token_sets(q, q_rows, dim, q_begin, q_end, nq),
                                  make_token_sets(d, d_rows, dim, d_begin, d_end, nd), ptr<float>(out), as_stream(stream));
      },
      py::arg("q"), py::arg("q_rows"), py::arg("q_begin"), py::arg("q_end"), py::arg("nq"), py::arg("d"),
      py::arg("d_rows"), py::arg("d_begin"), py::arg("d_end"), py::arg("nd"), py::arg("dim"), py::arg("out"),
      py::arg("stream") = 0);
  m.def(
      "multivector_fde",
      [](uintptr_t x, int64_t rows, uintptr_t begin, uintptr_t end, int64_t n, int64_t dim, int64_t repetitions,
         int k_sim, int64_t d_proj, int64_t final_dim, bool document, bool fill_empty, uint64_t seed, uintptr_t out,
         uintptr_t stream, int64_t max_tokens) {
        multivector::FdeSpec s;
        s.repetitions = repetitions;
        s.k_sim = k_sim;
        s.d_proj = d_proj;
        s.final_dim = final_dim;
        s.document = document;
        s.fill_empty = fill_empty;
        s.seed = seed;
        py::gil_scoped_release release;
        multivector::cuda::muvera_fde(s, make_token_sets(x, rows, dim, begin, end, n), max_tokens, ptr<float>(out),
                                      as_stream(stream));
      },
      py::arg("x"), py::arg("rows"), py::arg("begin"), py::arg("end"), py::arg("n"), py::arg("dim"),
      py::arg("repetitions"), py::arg("k_sim"), py::arg("d_proj"), py::arg("final_dim"), py::arg("document"),
      py::arg("fill_empty"), py::arg("seed"), py::arg("out"), py::arg("stream") = 0, py::kw_only(),
      py::arg("max_tokens"));
}

}  // namespace fastemb::bindings
