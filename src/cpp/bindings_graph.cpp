// pybind11 glue for the graph family of fastemb._C (registered from bindings.cpp). Buffers are
// addresses (Python ints); the Python layer (the fastemb/graph/ package) checks dtypes, shapes and
// contiguity, the C++ layer checks values again (std::invalid_argument -> ValueError).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "binding_args.h"
#include "bindings_common.h"
#include "common/memory.h"
#include "graph/graph.h"

namespace py = pybind11;

namespace fastemb::bindings {


void bind_graph(py::module_& m) {
  m.def(
      "graph_random_rows",
      [](uint64_t seed, uint64_t threshold, double value, int64_t d, int64_t row0, int64_t rows, uintptr_t row_scale,
         uintptr_t out, const std::string& isa) {
        const Isa i = isa_from_name(isa);
        py::gil_scoped_release release;
        graph::random_rows_isa(i, make_random_spec(seed, threshold, value, d), row0, rows, ptr<const float>(row_scale),
                               ptr<float>(out));
      },
      py::arg("seed"), py::arg("threshold"), py::arg("value"), py::arg("d"), py::arg("row0"), py::arg("rows"),
      py::arg("row_scale"), py::arg("out"), py::arg("isa") = "",
      "out[i, j] = R[row0 + i, j] * row_scale[i] (row_scale 0 = none); float32 [rows, d].");
  m.def(
      "graph_project_dense",
      [](uint64_t seed, uint64_t threshold, double value, int64_t d, uintptr_t x, int64_t rows, int64_t n_in,
         uintptr_t out, const std::string& isa) {
        const Isa i = isa_from_name(isa);
        py::gil_scoped_release release;
        graph::project_dense_isa(i, make_random_spec(seed, threshold, value, d), ptr<const float>(x), rows, n_in,
                                 ptr<float>(out));
      },
      py::arg("seed"), py::arg("threshold"), py::arg("value"), py::arg("d"), py::arg("x"), py::arg("rows"),
      py::arg("n_in"), py::arg("out"), py::arg("isa") = "", "out [rows, d] = x [rows, n_in] @ R (float32).");
  m.def(
      "graph_project_csr",
      [](uint64_t seed, uint64_t threshold, double value, int64_t d, uintptr_t indptr, uintptr_t indices,
         bool indices_int32, uintptr_t data, int64_t rows, int64_t cols, uintptr_t out, const std::string& isa) {
        const Isa i = isa_from_name(isa);
        py::gil_scoped_release release;
        graph::project_csr_isa(i, make_random_spec(seed, threshold, value, d),
                               make_csr(indptr, indices, indices_int32, data, rows, cols), ptr<float>(out));
      },
      py::arg("seed"), py::arg("threshold"), py::arg("value"), py::arg("d"), py::arg("indptr"), py::arg("indices"),
      py::arg("indices_int32"), py::arg("data"), py::arg("rows"), py::arg("cols"), py::arg("out"),
      py::arg("isa") = "", "out [rows, d] = X @ R for CSR X [rows, cols] (data 0 = all ones).");
  m.def(
      "graph_propagate",
      [](uintptr_t indptr, uintptr_t indices, bool indices_int32, uintptr_t data, int64_t n, uintptr_t row_scale,
         uintptr_t prev, int64_t d, uintptr_t cur, bool normalize, bool propagate_normalized, double alpha,
         uintptr_t accum, const std::string& isa, bool accum_init) {
        const Isa i = isa_from_name(isa);
        py::gil_scoped_release release;
        graph::propagate_isa(i, make_csr(indptr, indices, indices_int32, data, n, n), ptr<const float>(row_scale),
                             ptr<const float>(prev), d, ptr<float>(cur), normalize, propagate_normalized,
                             static_cast<float>(alpha), ptr<float>(accum), accum_init);
      },
      py::arg("indptr"), py::arg("indices"), py::arg("indices_int32"), py::arg("data"), py::arg("n"),
      py::arg("row_scale"), py::arg("prev"), py::arg("d"), py::arg("cur"), py::arg("normalize"),
      py::arg("propagate_normalized"), py::arg("alpha"), py::arg("accum"), py::arg("isa") = "",
      py::arg("accum_init") = false,
      "One fused FastRP step (graph.h propagate): cur = diag(row_scale) A prev, row-L2 and accumulation fused; "
      "accum_init: accum = 0 + alpha * v (accum not read).");
  m.def(
      "graph_propagate_random",
      [](uint64_t seed, uint64_t threshold, double value, int64_t d, uintptr_t init_scale, uintptr_t indptr,
         uintptr_t indices, bool indices_int32, uintptr_t data, int64_t n, uintptr_t row_scale, uintptr_t cur,
         bool normalize, bool propagate_normalized, double alpha, uintptr_t accum, const std::string& isa,
         bool accum_init) {
        const Isa i = isa_from_name(isa);
        py::gil_scoped_release release;
        graph::propagate_random_isa(i, make_random_spec(seed, threshold, value, d), ptr<const float>(init_scale),
                                    make_csr(indptr, indices, indices_int32, data, n, n), ptr<const float>(row_scale),
                                    ptr<float>(cur), normalize, propagate_normalized, static_cast<float>(alpha),
                                    ptr<float>(accum), accum_init);
      },
      py::arg("seed"), py::arg("threshold"), py::arg("value"), py::arg("d"), py::arg("init_scale"), py::arg("indptr"),
      py::arg("indices"), py::arg("indices_int32"), py::arg("data"), py::arg("n"), py::arg("row_scale"),
      py::arg("cur"), py::arg("normalize"), py::arg("propagate_normalized"), py::arg("alpha"), py::arg("accum"),
      py::arg("isa") = "", py::arg("accum_init") = false,
      "graph_propagate with prev = diag(init_scale) R never stored (the first FastRP step); same bits as "
      "graph_random_rows + graph_propagate for finite weights / init_scale.");
  m.def(
      "graph_propagate_block",
      [](uintptr_t indptr, uintptr_t indices, bool indices_int32, uintptr_t data, int64_t rows, int64_t cols,
         uintptr_t row_scale, uintptr_t prev, int64_t d, uintptr_t acc_in, uintptr_t out, bool finish, bool normalize,
         bool propagate_normalized, double alpha, uintptr_t accum, bool accum_init, const std::string& isa,
         uintptr_t row_ids, int64_t out_rows) {
        const Isa i = isa_from_name(isa);
        graph::Csr a = make_csr(indptr, indices, indices_int32, data, rows, cols);
        a.row_ids = ptr<const int64_t>(row_ids);
        py::gil_scoped_release release;
        graph::propagate_block_isa(i, a, row_ids ? out_rows : rows, ptr<const float>(row_scale),
                                   ptr<const float>(prev), d, ptr<const float>(acc_in), ptr<float>(out), finish,
                                   normalize, propagate_normalized, static_cast<float>(alpha), ptr<float>(accum),
                                   accum_init);
      },
      py::arg("indptr"), py::arg("indices"), py::arg("indices_int32"), py::arg("data"), py::arg("rows"),
      py::arg("cols"), py::arg("row_scale"), py::arg("prev"), py::arg("d"), py::arg("acc_in"), py::arg("out"),
      py::arg("finish"), py::arg("normalize"), py::arg("propagate_normalized"), py::arg("alpha"), py::arg("accum"),
      py::arg("accum_init") = false, py::arg("isa") = "", py::arg("row_ids") = 0, py::arg("out_rows") = 0,
      "One column block of a row block's propagate step (graph.h propagate_block): out = acc_in (0 when null) + "
      "A[i, j] @ prev in propagate's order; finish: then the row scale and the epilogue. row_ids (int64 [rows], "
      "0 = none): the block's rows are rows row_ids[k] of the out_rows-row buffers.");
  m.def(
      "graph_random_table_offsets",
      [](uint64_t seed, uint64_t threshold, double value, int64_t d, int64_t row0, int64_t n, uintptr_t offsets,
         const std::string& isa) {
        const Isa i = isa_from_name(isa);
        py::gil_scoped_release release;
        graph::random_table_offsets_isa(i, make_random_spec(seed, threshold, value, d), row0, n,
                                        ptr<int64_t>(offsets));
      },
      py::arg("seed"), py::arg("threshold"), py::arg("value"), py::arg("d"), py::arg("row0"), py::arg("n"),
      py::arg("offsets"), py::arg("isa") = "", "offsets [n + 1] of the sparse lists of R rows [row0, row0 + n).");
  m.def(
      "graph_random_table_lists",
      [](uint64_t seed, uint64_t threshold, double value, int64_t d, int64_t row0, int64_t n, uintptr_t offsets,
         uintptr_t lists, int64_t num_lists, const std::string& isa) {
        const Isa i = isa_from_name(isa);
        py::gil_scoped_release release;
        graph::random_table_lists_isa(i, make_random_spec(seed, threshold, value, d), row0, n,
                                      ptr<const int64_t>(offsets), ptr<int32_t>(lists), num_lists);
      },
      py::arg("seed"), py::arg("threshold"), py::arg("value"), py::arg("d"), py::arg("row0"), py::arg("n"),
      py::arg("offsets"), py::arg("lists"), py::arg("num_lists"), py::arg("isa") = "",
      "The sparse lists (int32 (column << 1) | negative) of R rows [row0, row0 + n), offsets checked.");
  m.def(
      "graph_propagate_random_block",
      [](uint64_t seed, uint64_t threshold, double value, int64_t d, uintptr_t init_scale, uintptr_t offsets,
         uintptr_t lists, int64_t num_lists, uintptr_t indptr, uintptr_t indices, bool indices_int32, uintptr_t data,
         int64_t rows, int64_t cols, uintptr_t row_scale, uintptr_t acc_in, uintptr_t out, bool finish,
         bool normalize, bool propagate_normalized, double alpha, uintptr_t accum, bool accum_init,
         const std::string& isa, uintptr_t row_ids, int64_t out_rows) {
        const Isa i = isa_from_name(isa);
        graph::Csr a = make_csr(indptr, indices, indices_int32, data, rows, cols);
        a.row_ids = ptr<const int64_t>(row_ids);
        py::gil_scoped_release release;
        graph::propagate_random_block_isa(i, make_random_spec(seed, threshold, value, d), ptr<const float>(init_scale),
                                          ptr<const int64_t>(offsets), ptr<const int32_t>(lists), num_lists, a,
                                          row_ids ? out_rows : rows, ptr<const float>(row_scale),
                                          ptr<const float>(acc_in), ptr<float>(out),
                                          finish, normalize, propagate_normalized, static_cast<float>(alpha),
                                          ptr<float>(accum), accum_init);
      },
      py::arg("seed"), py::arg("threshold"), py::arg("value"), py::arg("d"), py::arg("init_scale"),
      py::arg("offsets"), py::arg("lists"), py::arg("num_lists"), py::arg("indptr"), py::arg("indices"),
      py::arg("indices_int32"), py::arg("data"), py::arg("rows"), py::arg("cols"), py::arg("row_scale"),
      py::arg("acc_in"), py::arg("out"), py::arg("finish"), py::arg("normalize"), py::arg("propagate_normalized"),
      py::arg("alpha"), py::arg("accum"), py::arg("accum_init") = false, py::arg("isa") = "", py::arg("row_ids") = 0,
      py::arg("out_rows") = 0,
      "graph_propagate_block with prev = diag(init_scale) R[row0_j ..] given as its table (graph_random_table_*).");
  m.def(
      "graph_accumulate",
      [](uintptr_t x, int64_t rows, int64_t d, bool normalize, double alpha, uintptr_t accum, const std::string& isa) {
        const Isa i = isa_from_name(isa);
        py::gil_scoped_release release;
        graph::accumulate_isa(i, ptr<const float>(x), rows, d, normalize, static_cast<float>(alpha), ptr<float>(accum));
      },
      py::arg("x"), py::arg("rows"), py::arg("d"), py::arg("normalize"), py::arg("alpha"), py::arg("accum"),
      py::arg("isa") = "", "accum += alpha * (normalize ? rowL2(x) : x) (float32).");
  m.def(
      "graph_standardize_columns",
      [](uintptr_t x, int64_t rows, int64_t d, uintptr_t mean, uintptr_t std) {
        py::gil_scoped_release release;
        graph::standardize_columns(ptr<float>(x), rows, d, ptr<double>(mean), ptr<double>(std));
      },
      py::arg("x"), py::arg("rows"), py::arg("d"), py::arg("mean"), py::arg("std"),
      "In place: x = (x - mean) / std per column (population std, 0 -> 1); mean/std [d] float64 outputs.");
  m.def(
      "graph_column_block_sums",
      [](uintptr_t x, int64_t rows, int64_t d, uintptr_t mean, uintptr_t out) {
        py::gil_scoped_release release;
        graph::column_block_sums(ptr<const float>(x), rows, d, ptr<const double>(mean), ptr<double>(out));
      },
      py::arg("x"), py::arg("rows"), py::arg("d"), py::arg("mean"), py::arg("out"),
      "out [ceil(rows / 4096), d] float64: per 4096-row block, the column sums of x (mean 0) or of (x - mean)^2, "
      "from 0 in row order (standardize_columns' per-block sums).");
  m.def(
      "graph_standardize_apply",
      [](uintptr_t x, int64_t rows, int64_t d, uintptr_t mean, uintptr_t std, uintptr_t out) {
        py::gil_scoped_release release;
        graph::standardize_apply(ptr<const float>(x), rows, d, ptr<const double>(mean), ptr<const double>(std),
                                 ptr<float>(out));
      },
      py::arg("x"), py::arg("rows"), py::arg("d"), py::arg("mean"), py::arg("std"), py::arg("out"),
      "out = float((x - mean) / (std > 0 ? std : 1)) per column (standardize_columns' last pass; x may be out).");
  m.def(
      "graph_advise_huge_pages", [](uintptr_t data, int64_t bytes) {
        if (bytes > 0) advise_huge_pages(ptr<void>(data), static_cast<size_t>(bytes));
      },
      py::arg("data"), py::arg("bytes"),
      "Advice only: back a fresh (not yet written) buffer with transparent huge pages (fewer TLB misses on gathers).");
  m.def(
      "graph_norm_fixed_order",
      [](uintptr_t u, int64_t d) { return graph::norm_fixed_order(ptr<const float>(u), d); }, py::arg("u"),
      py::arg("d"), "The fixed-order (16-lane) L2 norm of one float32 row.");
  m.def(
      "graph_rcm_order",
      [](uintptr_t indptr, uintptr_t indices, bool indices_int32, int64_t n, uintptr_t order) {
        py::gil_scoped_release release;
        graph::rcm_order(make_csr(indptr, indices, indices_int32, 0, n, n), ptr<int64_t>(order));
      },
      py::arg("indptr"), py::arg("indices"), py::arg("indices_int32"), py::arg("n"), py::arg("order"),
      "order [n] int64: reverse Cuthill-McKee order of a square CSR, breadth first over the stored edges.");
  m.def(
      "graph_permute_csr",
      [](uintptr_t indptr, uintptr_t indices, bool indices_int32, uintptr_t data, int64_t n, uintptr_t order,
         uintptr_t inverse, uintptr_t indptr_out, uintptr_t indices_out, bool out_int32, uintptr_t data_out) {
        py::gil_scoped_release release;
        graph::permute_csr(make_csr(indptr, indices, indices_int32, data, n, n), ptr<const int64_t>(order),
                           ptr<const int64_t>(inverse), ptr<int64_t>(indptr_out), ptr<void>(indices_out), out_int32,
                           ptr<float>(data_out));
      },
      py::arg("indptr"), py::arg("indices"), py::arg("indices_int32"), py::arg("data"), py::arg("n"), py::arg("order"),
      py::arg("inverse"), py::arg("indptr_out"), py::arg("indices_out"), py::arg("out_int32"), py::arg("data_out"),
      "The CSR with node order[c] renamed c (rows in stored order, column ids through inverse).");
  m.def(
      "graph_gather_rows",
      [](uintptr_t src, int64_t src_rows, int64_t d, uintptr_t idx, int64_t rows, uintptr_t dst) {
        py::gil_scoped_release release;
        graph::gather_rows(ptr<const float>(src), src_rows, d, ptr<const int64_t>(idx), rows, ptr<float>(dst));
      },
      py::arg("src"), py::arg("src_rows"), py::arg("d"), py::arg("idx"), py::arg("rows"), py::arg("dst"),
      "dst[i, :] = src[idx[i], :] (float32 rows of d).");
}

}  // namespace fastemb::bindings
