// Validation, work splitting and run-time ISA dispatch for the graph kernels, and the two ISA-free
// functions (standardize_columns, norm_fixed_order).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/memory.h"
#include "common/thread_pool.h"
#include "graph/graph.h"
#include "graph/graph_validate.h"
#include "graph/graph_math.h"

namespace fastemb::graph {

#define FASTEMB_DECLARE_ISA(ns)                                                                                   \
  namespace ns {                                                                                                  \
  void random_rows(const RandomSpec& r, int64_t row0, int64_t rows, const float* row_scale, float* out);          \
  void project_dense(const RandomSpec& r, const float* x, int64_t rows, int64_t n_in, float* out);                \
  void project_csr(const RandomSpec& r, const Csr& x, const int64_t* table_offsets, const int32_t* table,         \
                   float* out);                                                                                   \
  void build_table(const RandomSpec& r, int64_t n, int64_t* offsets, int32_t** lists_out, void* (*alloc)(size_t)); \
  void table_counts(const RandomSpec& r, int64_t row0, int64_t n, int64_t* offsets);                             \
  int64_t table_fill(const RandomSpec& r, int64_t row0, int64_t n, const int64_t* offsets, int32_t* lists,        \
                     bool verify);                                                                                 \
  void propagate(const Csr& a, const float* row_scale, const float* prev, int64_t d, const float* acc_in,         \
                 float* cur, bool finish, bool normalize, bool propagate_normalized, float alpha, float* accum,    \
                 bool accum_init, const int64_t* task_rows, int64_t num_tasks, int64_t band_rows);                 \
  void accumulate(const float* x, int64_t rows, int64_t d, bool normalize, float alpha, float* accum);            \
  void propagate_random(const Csr& a, const int64_t* offsets, const int32_t* lists, const float* pv,              \
                        const float* row_scale, int64_t d, const float* acc_in, float* cur, bool finish,          \
                        bool normalize, bool propagate_normalized, float alpha, float* accum, bool accum_init,    \
                        const int64_t* task_rows, int64_t num_tasks);                                              \
  }
FASTEMB_DECLARE_ISA(serial)
#if defined(FASTEMB_X86)
FASTEMB_DECLARE_ISA(avx2)
FASTEMB_DECLARE_ISA(avx512)
#endif
#if defined(FASTEMB_ARM64)
FASTEMB_DECLARE_ISA(neon)
#endif
#undef FASTEMB_DECLARE_ISA

namespace {

struct Kernels {
  decltype(&serial::random_rows) random_rows;
  decltype(&serial::project_dense) project_dense;
  decltype(&serial::project_csr) project_csr;
  decltype(&serial::build_table) build_table;
  decltype(&serial::propagate) propagate;
  decltype(&serial::accumulate) accumulate;
  decltype(&serial::propagate_random) propagate_random;
  decltype(&serial::table_counts) table_counts;
  decltype(&serial::table_fill) table_fill;
};

Kernels kernels_for(Isa isa) {
  if (!isa_supported(isa)) throw std::invalid_argument(std::string("isa '") + isa_name(isa) + "' is not supported by this CPU");
  switch (isa) {
#if defined(FASTEMB_X86)
    case Isa::avx512:
      return {avx512::random_rows, avx512::project_dense, avx512::project_csr, avx512::build_table, avx512::propagate,
              avx512::accumulate, avx512::propagate_random, avx512::table_counts, avx512::table_fill};
    case Isa::avx2:
      return {avx2::random_rows, avx2::project_dense, avx2::project_csr, avx2::build_table, avx2::propagate,
              avx2::accumulate, avx2::propagate_random, avx2::table_counts, avx2::table_fill};
#endif
#if defined(FASTEMB_ARM64)
    case Isa::dotprod:  // no dotprod variant: the shared float kernels gain nothing from sdot
    case Isa::neon:
      return {neon::random_rows, neon::project_dense, neon::project_csr, neon::build_table, neon::propagate,
              neon::accumulate, neon::propagate_random, neon::table_counts, neon::table_fill};
#endif
    default:
      return {serial::random_rows, serial::project_dense, serial::project_csr, serial::build_table, serial::propagate,
              serial::accumulate, serial::propagate_random, serial::table_counts, serial::table_fill};
  }
}

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

template <class I>
void check_indices(const I* idx, int64_t nnz, int64_t cols, const char* name) {
  // Parallel check in blocks; the first bad position (lowest block) is reported.
  const int64_t block = int64_t(1) << 16;
  const int64_t nb = (nnz + block - 1) / block;
  std::vector<int64_t> bad(static_cast<size_t>(nb), -1);
  parallel_for(nb, [&](int64_t b) {
    const int64_t e1 = std::min(nnz, (b + 1) * block);
    bool ok = true;
    for (int64_t e = b * block; e < e1; ++e) ok &= (static_cast<int64_t>(idx[e]) >= 0) & (static_cast<int64_t>(idx[e]) < cols);
    if (ok) return;
    for (int64_t e = b * block; e < e1; ++e)
      if (static_cast<int64_t>(idx[e]) < 0 || static_cast<int64_t>(idx[e]) >= cols) {
        bad[static_cast<size_t>(b)] = e;
        return;
      }
  });
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t e = bad[static_cast<size_t>(b)];
    if (e >= 0)
      fail(std::string(name) + ": index " + std::to_string(static_cast<int64_t>(idx[e])) + " at position " +
           std::to_string(e) + " is out of range [0, " + std::to_string(cols) + ")");
  }
}

// Checks indptr (indptr[0] == 0, nondecreasing) and the indices; returns nnz.
int64_t check_csr(const Csr& a, const char* indptr_name, const char* indices_name) {
  if (a.rows < 0) fail(std::string(indptr_name) + ": negative number of rows " + std::to_string(a.rows));
  if (a.cols < 0) fail(std::string(indices_name) + ": negative number of columns " + std::to_string(a.cols));
  check_ptr(a.indptr, true, indptr_name);
  if (a.indptr[0] != 0) fail(std::string(indptr_name) + ": must start at 0, got " + std::to_string(a.indptr[0]));
  for (int64_t i = 0; i < a.rows; ++i)
    if (a.indptr[i + 1] < a.indptr[i])
      fail(std::string(indptr_name) + ": must be nondecreasing (indptr[" + std::to_string(i + 1) + "] = " +
           std::to_string(a.indptr[i + 1]) + " < indptr[" + std::to_string(i) + "] = " + std::to_string(a.indptr[i]) + ")");
  const int64_t nnz = a.indptr[a.rows];
  if (nnz > 0) check_ptr(a.indices, true, indices_name);
  if (a.indices_int32) {
    check_indices(static_cast<const int32_t*>(a.indices), nnz, a.cols, indices_name);
  } else {
    check_indices(static_cast<const int64_t*>(a.indices), nnz, a.cols, indices_name);
  }
  return nnz;
}

// Row ranges of about equal cost (edges + 1 per row): task t covers rows [rows[t], rows[t + 1]).
std::vector<int64_t> balanced_tasks(const int64_t* indptr, int64_t n, int64_t d) {
  const int threads = get_num_threads();
  const int64_t total = indptr[n] + n;
  // Enough tasks for dynamic balancing, each still large (>= ~16k edge-rows of work at d = 128).
  const int64_t min_cost = std::max<int64_t>(256, (int64_t(1) << 21) / std::max<int64_t>(d, 1));
  int64_t tasks = threads > 1 ? int64_t(threads) * 32 : 1;
  tasks = std::max<int64_t>(1, std::min<int64_t>(tasks, total / min_cost));
  std::vector<int64_t> rows;
  rows.push_back(0);
  for (int64_t t = 1; t < tasks; ++t) {
    const int64_t target = total / tasks * t + (total % tasks) * t / tasks;
    // first i with indptr[i] + i >= target
    int64_t lo = rows.back(), hi = n;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (indptr[mid] + mid >= target) hi = mid; else lo = mid + 1;
    }
    if (lo > rows.back() && lo < n) rows.push_back(lo);
  }
  rows.push_back(n);
  return rows;
}

// ---- column bands (graph.h "Column bands") ------------------------------------------------------------

// Bytes of prev per band: a quarter of the 32 MB L3 of the EPYC VM the choice was measured on (2 threads
// share it; the streams of indices and partial sums pass through it too). 20M random-edge gathers at
// d = 128 took 0.068 s from a 1 MB prev, 0.076 s from 8 MB, 0.28 s from 32 MB and 0.70 s from 512 MB.
constexpr int64_t kBandBytes = int64_t(8) << 20;

// The band width (rows of prev) for one step over a [rows, cols] with nnz edges, 0 = one pass (no bands).
// FASTEMB_GRAPH_BAND_ROWS overrides the choice: 0 = never, k > 0 = bands of k rows whenever cols > k
// (tests force small bands with it). Automatic: bands pay when the gathers they turn into cache hits
// outweigh the partial sums they add: each (row, band) pair with an edge costs a read and a write of the
// row's partial sum (2 * 4d bytes, streamed), each edge saves a random 4d-byte gather from DRAM. Measured
// on the 2-core EPYC VM (BENCHMARKS.md): at d = 128 a prev of 64 MB in 8 MB bands with 25 edges per pair
// gained ~1.3x, 128 MB with 6 edges per pair nothing, the 1M-node / 20M-edge Chung-Lu graph (61 bands,
// 1.5 edges per pair) lost 2-8x. So: prev at least 8 bands, and at least kEdgesPerPair edges per pair,
// counting min(degree, bands) pairs per row (at least the expected count for uniformly spread columns).
constexpr int64_t kEdgesPerPair = 16;

int64_t band_rows_for(const Csr& a, int64_t d, int64_t nnz) {
  if (const char* env = std::getenv("FASTEMB_GRAPH_BAND_ROWS")) {
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (end == env || *end != '\0' || v < 0)
      fail(std::string("FASTEMB_GRAPH_BAND_ROWS: expected an integer >= 0, got '") + env + "'");
    return v < a.cols ? static_cast<int64_t>(v) : 0;
  }
  const int64_t row_bytes = d * 4;
  const int64_t band_rows = std::max<int64_t>(1, kBandBytes / row_bytes);
  if (a.cols * row_bytes < 8 * kBandBytes || nnz < kEdgesPerPair * a.rows) return 0;
  const int64_t bands = (a.cols + band_rows - 1) / band_rows;
  int64_t pairs = 0;
  for (int64_t i = 0; i < a.rows; ++i) pairs += std::min(a.indptr[i + 1] - a.indptr[i], bands);
  return pairs <= nnz / kEdgesPerPair ? band_rows : 0;
}

}  // namespace

// ---- random rows ------------------------------------------------------------------------------------

void random_rows_isa(Isa isa, const RandomSpec& r, int64_t row0, int64_t rows, const float* row_scale, float* out) {
  check_spec(r);
  check_rows(rows, "rows");
  if (row0 < 0) fail("row0 must be >= 0, got " + std::to_string(row0));
  check_ptr(out, rows > 0, "out");
  const Kernels k = kernels_for(isa);
  if (rows == 0) return;
  advise_huge_pages(out, static_cast<size_t>(rows) * static_cast<size_t>(r.d) * 4);
  k.random_rows(r, row0, rows, row_scale, out);
}

void random_rows(const RandomSpec& r, int64_t row0, int64_t rows, const float* row_scale, float* out) {
  random_rows_isa(active_isa(), r, row0, rows, row_scale, out);
}

// ---- projection -------------------------------------------------------------------------------------

void project_dense_isa(Isa isa, const RandomSpec& r, const float* x, int64_t rows, int64_t n_in, float* out) {
  check_spec(r);
  check_rows(rows, "rows");
  check_rows(n_in, "n_in");
  check_ptr(x, rows > 0 && n_in > 0, "x");
  check_ptr(out, rows > 0, "out");
  if (overlaps(x, rows * n_in * 4, out, rows * r.d * 4)) fail("out: must not overlap x");
  const Kernels k = kernels_for(isa);
  if (rows == 0) return;
  k.project_dense(r, x, rows, n_in, out);
}

void project_dense(const RandomSpec& r, const float* x, int64_t rows, int64_t n_in, float* out) {
  project_dense_isa(active_isa(), r, x, rows, n_in, out);
}

void project_csr_isa(Isa isa, const RandomSpec& r, const Csr& x, float* out) {
  check_spec(r);
  const int64_t nnz = check_csr(x, "indptr", "indices");
  check_ptr(out, x.rows > 0, "out");
  const Kernels k = kernels_for(isa);
  if (x.rows == 0) return;
  // The whole of R as sparse lists when it is small and reused (more nonzeros than R rows), else
  // each nonzero's R row is generated on the fly.
  const double expected = static_cast<double>(x.cols) * static_cast<double>(r.d) *
                          (static_cast<double>(r.threshold) / 9007199254740992.0);
  const bool table = nnz >= x.cols / 2 && expected * 4.0 + static_cast<double>(x.cols) * 8.0 <= 512.0 * (1 << 20);
  if (!table) {
    k.project_csr(r, x, nullptr, nullptr, out);
    return;
  }
  std::vector<int64_t> offsets(static_cast<size_t>(x.cols) + 1);
  int32_t* lists = nullptr;
  try {
    k.build_table(r, x.cols, offsets.data(), &lists, &std::malloc);
    k.project_csr(r, x, offsets.data(), lists, out);
  } catch (...) {
    std::free(lists);
    throw;
  }
  std::free(lists);
}

void project_csr(const RandomSpec& r, const Csr& x, float* out) { project_csr_isa(active_isa(), r, x, out); }

// ---- propagate --------------------------------------------------------------------------------------

void propagate_isa(Isa isa, const Csr& a, const float* row_scale, const float* prev, int64_t d, float* cur,
                   bool normalize, bool propagate_normalized, float alpha, float* accum, bool accum_init) {
  if (d < 1) fail("d must be >= 1, got " + std::to_string(d));
  check_step_buffers(a, d, prev, true, cur, accum);
  check_csr(a, "indptr", "indices");
  const int64_t n = a.rows, bytes = n * d * 4;
  const Kernels k = kernels_for(isa);
  if (n == 0) return;
  // Fresh (untouched) outputs get transparent huge pages: the gathers of the next step then miss
  // the TLB far less (a 4 KB page per gathered row otherwise).
  advise_huge_pages(cur, static_cast<size_t>(bytes));
  if (accum) advise_huge_pages(accum, static_cast<size_t>(bytes));
  const std::vector<int64_t> tasks = balanced_tasks(a.indptr, n, d);
  k.propagate(a, row_scale, prev, d, nullptr, cur, true, normalize, propagate_normalized, alpha, accum, accum_init,
              tasks.data(), static_cast<int64_t>(tasks.size()) - 1, band_rows_for(a, d, a.indptr[n]));
}

void propagate(const Csr& a, const float* row_scale, const float* prev, int64_t d, float* cur, bool normalize,
               bool propagate_normalized, float alpha, float* accum, bool accum_init) {
  propagate_isa(active_isa(), a, row_scale, prev, d, cur, normalize, propagate_normalized, alpha, accum, accum_init);
}

void propagate_random_isa(Isa isa, const RandomSpec& r, const float* init_scale, const Csr& a, const float* row_scale,
                          float* cur, bool normalize, bool propagate_normalized, float alpha, float* accum,
                          bool accum_init) {
  check_spec(r);
  check_step_buffers(a, r.d, nullptr, false, cur, accum);
  check_csr(a, "indptr", "indices");
  const int64_t n = a.rows, d = r.d, bytes = n * d * 4;
  const Kernels k = kernels_for(isa);
  if (n == 0) return;
  advise_huge_pages(cur, static_cast<size_t>(bytes));
  if (accum) advise_huge_pages(accum, static_cast<size_t>(bytes));
  std::vector<float> pv(static_cast<size_t>(n));
  for (int64_t c = 0; c < n; ++c) pv[static_cast<size_t>(c)] = init_scale ? r.value * init_scale[c] : r.value;
  std::vector<int64_t> offsets(static_cast<size_t>(n) + 1);
  int32_t* lists = nullptr;
  try {
    k.build_table(r, n, offsets.data(), &lists, &std::malloc);
    const std::vector<int64_t> tasks = balanced_tasks(a.indptr, n, d);
    k.propagate_random(a, offsets.data(), lists, pv.data(), row_scale, d, nullptr, cur, true, normalize,
                       propagate_normalized, alpha, accum, accum_init, tasks.data(),
                       static_cast<int64_t>(tasks.size()) - 1);
  } catch (...) {
    std::free(lists);
    throw;
  }
  std::free(lists);
}

void propagate_random(const RandomSpec& r, const float* init_scale, const Csr& a, const float* row_scale, float* cur,
                      bool normalize, bool propagate_normalized, float alpha, float* accum, bool accum_init) {
  propagate_random_isa(active_isa(), r, init_scale, a, row_scale, cur, normalize, propagate_normalized, alpha, accum,
                       accum_init);
}

// ---- row blocks of a row-partitioned graph (fastemb.dask) ------------------------------------------

namespace {

// The buffers of one block step: a [rows, cols] (with row_ids: rows of a row block of out_rows rows),
// prev [cols, d] (when needs_prev), acc_in [out_rows, d] or null (may be out itself, nothing else may
// overlap; with row_ids null or out), out [out_rows, d], accum [out_rows, d] or null.
void check_block_buffers(const Csr& a, int64_t out_rows, int64_t d, const float* prev, bool needs_prev,
                         const float* acc_in, const float* out, const float* accum) {
  if (d < 1) fail("d must be >= 1, got " + std::to_string(d));
  if (a.row_ids) {
    if (out_rows < 0) fail("out_rows must be >= 0, got " + std::to_string(out_rows));
    if (acc_in && acc_in != out) fail("acc_in: with row_ids it must be null or out itself");
    for (int64_t k = 0; k < a.rows; ++k) {
      const int64_t r = a.row_ids[k];
      if (r < 0 || r >= out_rows || (k > 0 && r <= a.row_ids[k - 1]))
        fail("row_ids: must be strictly increasing in [0, " + std::to_string(out_rows) + "), got " +
             std::to_string(r) + " at " + std::to_string(k));
    }
  } else if (out_rows != a.rows) {
    fail("out_rows (" + std::to_string(out_rows) + ") must equal the block's rows (" + std::to_string(a.rows) +
         ") without row_ids");
  }
  const int64_t rows_bytes = out_rows * d * 4, prev_bytes = a.cols * d * 4;
  if (needs_prev) check_ptr(prev, a.rows > 0 && a.cols > 0, "prev");
  check_ptr(out, out_rows > 0, "out");
  if (overlaps(prev, prev_bytes, out, rows_bytes)) fail("out: must not overlap prev");
  if (acc_in != out && overlaps(acc_in, rows_bytes, out, rows_bytes))
    fail("acc_in: must be out itself or not overlap it");
  if (overlaps(prev, prev_bytes, acc_in, rows_bytes)) fail("acc_in: must not overlap prev");
  if (overlaps(accum, rows_bytes, out, rows_bytes)) fail("accum: must not overlap out");
  if (overlaps(accum, rows_bytes, prev, prev_bytes)) fail("accum: must not overlap prev");
  if (overlaps(accum, rows_bytes, acc_in, rows_bytes)) fail("accum: must not overlap acc_in");
}

}  // namespace

void propagate_block_isa(Isa isa, const Csr& a, int64_t out_rows, const float* row_scale, const float* prev,
                         int64_t d, const float* acc_in, float* out, bool finish, bool normalize,
                         bool propagate_normalized, float alpha, float* accum, bool accum_init) {
  check_block_buffers(a, out_rows, d, prev, true, acc_in, out, accum);
  check_csr(a, "indptr", "indices");
  const int64_t n = a.rows, bytes = out_rows * d * 4;
  const Kernels k = kernels_for(isa);
  if (n == 0) return;
  // As propagate: fresh outputs get transparent huge pages (a page fault per 2 MB instead of per 4 KB).
  if (!acc_in) advise_huge_pages(out, static_cast<size_t>(bytes));
  if (finish && accum && accum_init) advise_huge_pages(accum, static_cast<size_t>(bytes));
  const std::vector<int64_t> tasks = balanced_tasks(a.indptr, n, d);
  k.propagate(a, row_scale, prev, d, acc_in, out, finish, normalize, propagate_normalized, alpha,
              finish ? accum : nullptr, accum_init, tasks.data(), static_cast<int64_t>(tasks.size()) - 1,
              band_rows_for(a, d, a.indptr[n]));
}

void propagate_block(const Csr& a, int64_t out_rows, const float* row_scale, const float* prev, int64_t d,
                     const float* acc_in, float* out, bool finish, bool normalize, bool propagate_normalized,
                     float alpha, float* accum, bool accum_init) {
  propagate_block_isa(active_isa(), a, out_rows, row_scale, prev, d, acc_in, out, finish, normalize,
                      propagate_normalized, alpha, accum, accum_init);
}

void random_table_offsets_isa(Isa isa, const RandomSpec& r, int64_t row0, int64_t n, int64_t* offsets) {
  check_spec(r);
  check_rows(n, "n");
  if (row0 < 0) fail("row0 must be >= 0, got " + std::to_string(row0));
  check_ptr(offsets, true, "offsets");
  const Kernels k = kernels_for(isa);
  k.table_counts(r, row0, n, offsets);
}

namespace {

void check_table_offsets(const int64_t* offsets, int64_t n, int64_t num_lists) {
  check_ptr(offsets, true, "offsets");
  if (offsets[0] != 0) fail("offsets: must start at 0, got " + std::to_string(offsets[0]));
  for (int64_t c = 0; c < n; ++c)
    if (offsets[c + 1] < offsets[c]) fail("offsets: must be nondecreasing (at " + std::to_string(c + 1) + ")");
  if (offsets[n] != num_lists)
    fail("offsets: ends at " + std::to_string(offsets[n]) + " but lists has " + std::to_string(num_lists) +
         " entries");
}

}  // namespace

void random_table_lists_isa(Isa isa, const RandomSpec& r, int64_t row0, int64_t n, const int64_t* offsets,
                            int32_t* lists, int64_t num_lists) {
  check_spec(r);
  check_rows(n, "n");
  if (row0 < 0) fail("row0 must be >= 0, got " + std::to_string(row0));
  check_table_offsets(offsets, n, num_lists);
  check_ptr(lists, num_lists > 0, "lists");
  const Kernels k = kernels_for(isa);
  const int64_t bad = k.table_fill(r, row0, n, offsets, lists, true);
  if (bad >= 0)
    fail("offsets: row " + std::to_string(bad) + " of the table does not hold the generator's count (offsets must "
         "come from random_table_offsets with the same spec and row0)");
}

void propagate_random_block_isa(Isa isa, const RandomSpec& r, const float* init_scale, const int64_t* offsets,
                                const int32_t* lists, int64_t num_lists, const Csr& a, int64_t out_rows,
                                const float* row_scale, const float* acc_in, float* out, bool finish, bool normalize,
                                bool propagate_normalized, float alpha, float* accum, bool accum_init) {
  check_spec(r);
  const int64_t d = r.d;
  check_block_buffers(a, out_rows, d, nullptr, false, acc_in, out, accum);
  check_csr(a, "indptr", "indices");
  check_table_offsets(offsets, a.cols, num_lists);
  check_ptr(lists, num_lists > 0, "lists");
  for (int64_t t = 0; t < num_lists; ++t)
    if (lists[t] < 0 || (lists[t] >> 1) >= d)
      fail("lists: entry " + std::to_string(t) + " names column " + std::to_string(lists[t] >> 1) +
           ", out of range [0, " + std::to_string(d) + ")");
  const int64_t n = a.rows, bytes = out_rows * d * 4;
  const Kernels k = kernels_for(isa);
  if (n == 0) return;
  if (!acc_in) advise_huge_pages(out, static_cast<size_t>(bytes));
  if (finish && accum && accum_init) advise_huge_pages(accum, static_cast<size_t>(bytes));
  std::vector<float> pv(static_cast<size_t>(a.cols > 0 ? a.cols : 1));
  for (int64_t c = 0; c < a.cols; ++c) pv[static_cast<size_t>(c)] = init_scale ? r.value * init_scale[c] : r.value;
  const std::vector<int64_t> tasks = balanced_tasks(a.indptr, n, d);
  k.propagate_random(a, offsets, lists, pv.data(), row_scale, d, acc_in, out, finish, normalize,
                     propagate_normalized, alpha, finish ? accum : nullptr, accum_init, tasks.data(),
                     static_cast<int64_t>(tasks.size()) - 1);
}

void accumulate_isa(Isa isa, const float* x, int64_t rows, int64_t d, bool normalize, float alpha, float* accum) {
  check_rows(rows, "rows");
  if (d < 1) fail("d must be >= 1, got " + std::to_string(d));
  check_ptr(x, rows > 0, "x");
  check_ptr(accum, rows > 0, "accum");
  if (overlaps(x, rows * d * 4, accum, rows * d * 4) && x != accum) fail("accum: must not partially overlap x");
  const Kernels k = kernels_for(isa);
  if (rows == 0) return;
  k.accumulate(x, rows, d, normalize, alpha, accum);
}

void accumulate(const float* x, int64_t rows, int64_t d, bool normalize, float alpha, float* accum) {
  accumulate_isa(active_isa(), x, rows, d, normalize, alpha, accum);
}

// ---- column standardization -------------------------------------------------------------------------

namespace {

constexpr int64_t kStatBlock = 4096;

// out[b, j] = sum over the rows of block b (rows b * 4096 ..) of x_ij (mean null) or of (x_ij - mean_j)^2,
// in double, from 0, rows in increasing order; the blocks in parallel.
void block_sums(const float* x, int64_t rows, int64_t d, const double* mean, double* out) {
  const int64_t nb = (rows + kStatBlock - 1) / kStatBlock;
  parallel_for(nb, [&](int64_t b) {
    double* s = out + b * d;
    for (int64_t j = 0; j < d; ++j) s[j] = 0.0;
    const int64_t i1 = std::min(rows, (b + 1) * kStatBlock);
    for (int64_t i = b * kStatBlock; i < i1; ++i) {
      const float* xi = x + i * d;
      if (mean) {
        for (int64_t j = 0; j < d; ++j) {
          const double t = static_cast<double>(xi[j]) - mean[j];
          s[j] += t * t;
        }
      } else {
        for (int64_t j = 0; j < d; ++j) s[j] += static_cast<double>(xi[j]);
      }
    }
  });
}

// out_ij = float((double(x_ij) - mean_j) / div_j) in 4096-row blocks (in parallel); x may be out.
void apply_standardize(const float* x, int64_t rows, int64_t d, const double* mean, const double* div, float* out) {
  const int64_t nb = (rows + kStatBlock - 1) / kStatBlock;
  parallel_for(nb, [&](int64_t b) {
    const int64_t i1 = std::min(rows, (b + 1) * kStatBlock);
    for (int64_t i = b * kStatBlock; i < i1; ++i) {
      const float* xi = x + i * d;
      float* oi = out + i * d;
      for (int64_t j = 0; j < d; ++j) oi[j] = static_cast<float>((static_cast<double>(xi[j]) - mean[j]) / div[j]);
    }
  });
}

void check_stats_args(const float* x, int64_t rows, int64_t d) {
  check_rows(rows, "rows");
  if (d < 1) fail("d must be >= 1, got " + std::to_string(d));
  check_ptr(x, rows > 0, "x");
}

}  // namespace

void standardize_columns(float* x, int64_t rows, int64_t d, double* mean, double* std) {
  check_stats_args(x, rows, d);
  check_ptr(mean, true, "mean");
  check_ptr(std, true, "std");
  if (rows == 0) {
    for (int64_t j = 0; j < d; ++j) mean[j] = 0.0, std[j] = 0.0;
    return;
  }
  const int64_t nb = (rows + kStatBlock - 1) / kStatBlock;
  std::vector<double> part(static_cast<size_t>(nb) * static_cast<size_t>(d));
  // Pass 1: per-block column sums (rows in increasing order), combined in block order.
  block_sums(x, rows, d, nullptr, part.data());
  for (int64_t j = 0; j < d; ++j) mean[j] = 0.0;
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t j = 0; j < d; ++j) mean[j] += part[static_cast<size_t>(b * d + j)];
  for (int64_t j = 0; j < d; ++j) mean[j] /= static_cast<double>(rows);
  // Pass 2: sums of squared deviations, same blocking.
  block_sums(x, rows, d, mean, part.data());
  for (int64_t j = 0; j < d; ++j) std[j] = 0.0;
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t j = 0; j < d; ++j) std[j] += part[static_cast<size_t>(b * d + j)];
  std::vector<double> div(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) {
    std[j] = std::sqrt(std[j] / static_cast<double>(rows));
    div[static_cast<size_t>(j)] = std[j] > 0.0 ? std[j] : 1.0;
  }
  // Pass 3: in place.
  apply_standardize(x, rows, d, mean, div.data(), x);
}

void column_block_sums(const float* x, int64_t rows, int64_t d, const double* mean, double* out) {
  check_stats_args(x, rows, d);
  check_ptr(out, rows > 0, "out");
  if (rows > 0) block_sums(x, rows, d, mean, out);
}

void standardize_apply(const float* x, int64_t rows, int64_t d, const double* mean, const double* std, float* out) {
  check_stats_args(x, rows, d);
  check_ptr(mean, true, "mean");
  check_ptr(std, true, "std");
  check_ptr(out, rows > 0, "out");
  if (x != out && overlaps(x, rows * d * 4, out, rows * d * 4)) fail("out: must be x itself or not overlap it");
  std::vector<double> div(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) div[static_cast<size_t>(j)] = std[j] > 0.0 ? std[j] : 1.0;
  if (rows > 0) apply_standardize(x, rows, d, mean, div.data(), out);
}

float norm_fixed_order(const float* u, int64_t d) {
  if (d < 0) fail("d must be >= 0, got " + std::to_string(d));
  check_ptr(u, d > 0, "u");
  return norm_fixed_order_row(u, d);
}

// ---- node order --------------------------------------------------------------------------------------

namespace {
void check_square(const Csr& a) {
  if (a.rows != a.cols)
    fail("indptr/indices: the adjacency must be square, got " + std::to_string(a.rows) + " x " + std::to_string(a.cols));
}
}  // namespace

void rcm_order(const Csr& a, int64_t* order) {
  check_square(a);
  check_csr(a, "indptr", "indices");
  const int64_t n = a.rows;
  if (n == 0) return;
  check_ptr(order, true, "order");
  std::vector<int64_t> deg(static_cast<size_t>(n));
  int64_t max_deg = 0;
  for (int64_t i = 0; i < n; ++i) {
    deg[static_cast<size_t>(i)] = a.indptr[i + 1] - a.indptr[i];
    max_deg = std::max(max_deg, deg[static_cast<size_t>(i)]);
  }
  // the start candidates: nodes by increasing degree, ties by id (a counting sort)
  std::vector<int64_t> start(static_cast<size_t>(max_deg) + 2, 0), by_degree(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ++start[static_cast<size_t>(deg[static_cast<size_t>(i)]) + 1];
  for (size_t k = 1; k < start.size(); ++k) start[k] += start[k - 1];
  for (int64_t i = 0; i < n; ++i) by_degree[static_cast<size_t>(start[static_cast<size_t>(deg[static_cast<size_t>(i)])]++)] = i;
  std::vector<uint8_t> seen(static_cast<size_t>(n), 0);
  const auto by_deg_then_id = [&](int64_t u, int64_t v) {
    const int64_t du = deg[static_cast<size_t>(u)], dv = deg[static_cast<size_t>(v)];
    return du < dv || (du == dv && u < v);
  };
  int64_t filled = 0;
  auto visit_neighbours = [&](auto idx, int64_t v) {
    const int64_t first = filled;
    for (int64_t e = a.indptr[v]; e < a.indptr[v + 1]; ++e) {
      const int64_t j = static_cast<int64_t>(idx[e]);
      if (!seen[static_cast<size_t>(j)]) {
        seen[static_cast<size_t>(j)] = 1;
        order[filled++] = j;
      }
    }
    std::sort(order + first, order + filled, by_deg_then_id);
  };
  for (const int64_t s : by_degree) {
    if (seen[static_cast<size_t>(s)]) continue;
    seen[static_cast<size_t>(s)] = 1;
    int64_t head = filled;
    order[filled++] = s;
    while (head < filled) {
      const int64_t v = order[head++];
      if (a.indices_int32)
        visit_neighbours(static_cast<const int32_t*>(a.indices), v);
      else
        visit_neighbours(static_cast<const int64_t*>(a.indices), v);
    }
  }
  std::reverse(order, order + n);
}

void permute_csr(const Csr& a, const int64_t* order, const int64_t* inverse, int64_t* indptr_out, void* indices_out,
                 bool out_int32, float* data_out) {
  check_square(a);
  const int64_t nnz = check_csr(a, "indptr", "indices"), n = a.rows;
  check_ptr(indptr_out, true, "indptr_out");
  if (n > 0) {
    check_ptr(order, true, "order");
    check_ptr(inverse, true, "inverse");
  }
  if (nnz > 0) check_ptr(indices_out, true, "indices_out");
  check_ptr(data_out, a.data != nullptr && nnz > 0, "data_out");
  if (out_int32 && n > (int64_t(1) << 31)) fail("indices_out: int32 cannot hold node ids of " + std::to_string(n) + " nodes");
  for (int64_t c = 0; c < n; ++c) {  // a permutation with its inverse: inverse[order[c]] == c for every c
    const int64_t v = order[c];
    if (v < 0 || v >= n || inverse[v] != c)
      fail("order: not a permutation of range(" + std::to_string(n) + ") with this inverse (position " + std::to_string(c) + ")");
  }
  indptr_out[0] = 0;
  for (int64_t c = 0; c < n; ++c) indptr_out[c + 1] = indptr_out[c] + (a.indptr[order[c] + 1] - a.indptr[order[c]]);
  auto rows = [&](int64_t t) {
    const int64_t c0 = t * 4096, c1 = std::min(n, c0 + 4096);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t e0 = a.indptr[order[c]], cnt = a.indptr[order[c] + 1] - e0, o = indptr_out[c];
      for (int64_t k = 0; k < cnt; ++k) {
        const int64_t j = a.indices_int32 ? static_cast<const int32_t*>(a.indices)[e0 + k]
                                          : static_cast<const int64_t*>(a.indices)[e0 + k];
        if (out_int32)
          static_cast<int32_t*>(indices_out)[o + k] = static_cast<int32_t>(inverse[j]);
        else
          static_cast<int64_t*>(indices_out)[o + k] = inverse[j];
      }
      if (a.data) std::copy(a.data + e0, a.data + e0 + cnt, data_out + o);
    }
  };
  parallel_for_each((n + 4095) / 4096, rows);
}

void gather_rows(const float* src, int64_t src_rows, int64_t d, const int64_t* idx, int64_t rows, float* dst) {
  check_rows(src_rows, "src_rows");
  check_rows(rows, "rows");
  if (d < 1) fail("d must be >= 1, got " + std::to_string(d));
  if (rows == 0) return;
  check_ptr(src, true, "src");
  check_ptr(idx, true, "idx");
  check_ptr(dst, true, "dst");
  if (overlaps(src, src_rows * d * 4, dst, rows * d * 4)) fail("dst: must not overlap src");
  for (int64_t i = 0; i < rows; ++i)
    if (idx[i] < 0 || idx[i] >= src_rows)
      fail("idx: entry " + std::to_string(idx[i]) + " at position " + std::to_string(i) + " is out of range [0, " +
           std::to_string(src_rows) + ")");
  const size_t row_bytes = static_cast<size_t>(d) * 4;
  auto part = [&](int64_t t) {
    const int64_t i0 = t * 2048, i1 = std::min(rows, i0 + 2048);
    for (int64_t i = i0; i < i1; ++i) std::memcpy(dst + i * d, src + idx[i] * d, row_bytes);
  };
  parallel_for_each((rows + 2047) / 2048, part);
}

}  // namespace fastemb::graph
