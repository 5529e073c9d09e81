// pybind11 glue for the graph family of fastemb._C_cuda (registered from bindings.cpp). Device
// buffers as addresses (Python ints), the CUDA stream as an int (0 = default stream). Same names and
// positional arguments as fastemb._C's graph_* functions, with `stream` in place of `isa`; the CSR
// functions also take the required keyword `nnz` (the length of indices, and of data when given):
// the kernels clamp every row's edge range into [0, nnz] instead of validating the CSR per call
// (graph_validate_csr does that, once). Keyword-only, so a call written for the old signature fails
// instead of shifting its arguments.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "binding_args.h"
#include "cuda_bindings_common.h"
#include "graph/graph.h"
#include "graph_cuda.cuh"

namespace py = pybind11;

namespace fastemb::bindings {


void bind_graph_cuda(py::module_& m) {
  m.def(
      "graph_random_rows",
      [](uint64_t seed, uint64_t threshold, double value, int64_t d, int64_t row0, int64_t rows, uintptr_t row_scale,
         uintptr_t out, uintptr_t stream) {
        py::gil_scoped_release release;
        graph::cuda::random_rows(make_random_spec(seed, threshold, value, d), row0, rows, ptr<const float>(row_scale),
                                 ptr<float>(out), as_stream(stream));
      },
      py::arg("seed"), py::arg("threshold"), py::arg("value"), py::arg("d"), py::arg("row0"), py::arg("rows"),
      py::arg("row_scale"), py::arg("out"), py::arg("stream") = 0);
  m.def(
      "graph_project_dense",
      [](uint64_t seed, uint64_t threshold, double value, int64_t d, uintptr_t x, int64_t rows, int64_t n_in,
         uintptr_t out, uintptr_t stream) {
        py::gil_scoped_release release;
        graph::cuda::project_dense(make_random_spec(seed, threshold, value, d), ptr<const float>(x), rows, n_in,
                                   ptr<float>(out), as_stream(stream));
      },
      py::arg("seed"), py::arg("threshold"), py::arg("value"), py::arg("d"), py::arg("x"), py::arg("rows"),
      py::arg("n_in"), py::arg("out"), py::arg("stream") = 0);
  m.def(
      "graph_validate_csr",
      [](uintptr_t indptr, uintptr_t indices, bool indices_int32, int64_t rows, int64_t cols, int64_t nnz,
         uintptr_t stream) {
        py::gil_scoped_release release;
        graph::cuda::validate_csr(make_csr(indptr, indices, indices_int32, 0, rows, cols), nnz, as_stream(stream));
      },
      py::arg("indptr"), py::arg("indices"), py::arg("indices_int32"), py::arg("rows"), py::arg("cols"),
      py::arg("nnz"), py::arg("stream") = 0,
      "Full check of a device CSR [rows, cols] with nnz = len(indices): indptr[0] == 0, nondecreasing, "
      "indptr[rows] == nnz, every index in [0, cols). One stream sync; ValueError naming the argument.");
  m.def(
      "graph_project_csr",
      [](uint64_t seed, uint64_t threshold, double value, int64_t d, uintptr_t indptr, uintptr_t indices,
         bool indices_int32, uintptr_t data, int64_t rows, int64_t cols, uintptr_t out, uintptr_t stream, int64_t nnz) {
        py::gil_scoped_release release;
        graph::cuda::project_csr(make_random_spec(seed, threshold, value, d),
                                 make_csr(indptr, indices, indices_int32, data, rows, cols), nnz, ptr<float>(out),
                                 as_stream(stream));
      },
      py::arg("seed"), py::arg("threshold"), py::arg("value"), py::arg("d"), py::arg("indptr"), py::arg("indices"),
      py::arg("indices_int32"), py::arg("data"), py::arg("rows"), py::arg("cols"), py::arg("out"),
      py::arg("stream") = 0, py::kw_only(), py::arg("nnz"));
  m.def(
      "graph_propagate",
      [](uintptr_t indptr, uintptr_t indices, bool indices_int32, uintptr_t data, int64_t n, uintptr_t row_scale,
         uintptr_t prev, int64_t d, uintptr_t cur, bool normalize, bool propagate_normalized, double alpha,
         uintptr_t accum, uintptr_t stream, int64_t nnz) {
        py::gil_scoped_release release;
        graph::cuda::propagate(make_csr(indptr, indices, indices_int32, data, n, n), nnz, ptr<const float>(row_scale),
                               ptr<const float>(prev), d, ptr<float>(cur), normalize, propagate_normalized,
                               static_cast<float>(alpha), ptr<float>(accum), as_stream(stream));
      },
      py::arg("indptr"), py::arg("indices"), py::arg("indices_int32"), py::arg("data"), py::arg("n"),
      py::arg("row_scale"), py::arg("prev"), py::arg("d"), py::arg("cur"), py::arg("normalize"),
      py::arg("propagate_normalized"), py::arg("alpha"), py::arg("accum"), py::arg("stream") = 0, py::kw_only(),
      py::arg("nnz"));
  m.def(
      "graph_propagate_random",
      [](uint64_t seed, uint64_t threshold, double value, int64_t d, uintptr_t init_scale, uintptr_t indptr,
         uintptr_t indices, bool indices_int32, uintptr_t data, int64_t n, uintptr_t row_scale, uintptr_t cur,
         bool normalize, bool propagate_normalized, double alpha, uintptr_t accum, uintptr_t stream, int64_t nnz) {
        py::gil_scoped_release release;
        graph::cuda::propagate_random(make_random_spec(seed, threshold, value, d), ptr<const float>(init_scale),
                                      make_csr(indptr, indices, indices_int32, data, n, n), nnz,
                                      ptr<const float>(row_scale),
                                      ptr<float>(cur), normalize, propagate_normalized, static_cast<float>(alpha),
                                      ptr<float>(accum), as_stream(stream));
      },
      py::arg("seed"), py::arg("threshold"), py::arg("value"), py::arg("d"), py::arg("init_scale"), py::arg("indptr"),
      py::arg("indices"), py::arg("indices_int32"), py::arg("data"), py::arg("n"), py::arg("row_scale"),
      py::arg("cur"), py::arg("normalize"), py::arg("propagate_normalized"), py::arg("alpha"), py::arg("accum"),
      py::arg("stream") = 0, py::kw_only(), py::arg("nnz"));
  m.def(
      "graph_accumulate",
      [](uintptr_t x, int64_t rows, int64_t d, bool normalize, double alpha, uintptr_t accum, uintptr_t stream) {
        py::gil_scoped_release release;
        graph::cuda::accumulate(ptr<const float>(x), rows, d, normalize, static_cast<float>(alpha), ptr<float>(accum),
                                as_stream(stream));
      },
      py::arg("x"), py::arg("rows"), py::arg("d"), py::arg("normalize"), py::arg("alpha"), py::arg("accum"),
      py::arg("stream") = 0);
  m.def(
      "graph_standardize_columns",
      [](uintptr_t x, int64_t rows, int64_t d, uintptr_t mean, uintptr_t std, uintptr_t stream) {
        py::gil_scoped_release release;
        graph::cuda::standardize_columns(ptr<float>(x), rows, d, ptr<double>(mean), ptr<double>(std),
                                         as_stream(stream));
      },
      py::arg("x"), py::arg("rows"), py::arg("d"), py::arg("mean"), py::arg("std"), py::arg("stream") = 0);
}

}  // namespace fastemb::bindings
