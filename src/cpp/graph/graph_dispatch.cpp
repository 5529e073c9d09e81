// Validation, work splitting and run-time ISA dispatch for the graph kernels, and the two ISA-free
// functions (standardize_columns, norm_fixed_order).
#include <algorithm>
#include <cmath>
#include <cstdlib>
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
  void propagate(const Csr& a, const float* row_scale, const float* prev, int64_t d, float* cur, bool normalize,   \
                 bool propagate_normalized, float alpha, float* accum, bool accum_init, const int64_t* task_rows,  \
                 int64_t num_tasks);                                                                               \
  void accumulate(const float* x, int64_t rows, int64_t d, bool normalize, float alpha, float* accum);            \
  void propagate_random(const Csr& a, const int64_t* offsets, const int32_t* lists, const float* pv,              \
                        const float* row_scale, int64_t d, float* cur, bool normalize, bool propagate_normalized, \
                        float alpha, float* accum, bool accum_init, const int64_t* task_rows, int64_t num_tasks); \
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
};

Kernels kernels_for(Isa isa) {
  if (!isa_supported(isa)) throw std::invalid_argument(std::string("isa '") + isa_name(isa) + "' is not supported by this CPU");
  switch (isa) {
#if defined(FASTEMB_X86)
    case Isa::avx512:
      return {avx512::random_rows, avx512::project_dense, avx512::project_csr, avx512::build_table, avx512::propagate,
              avx512::accumulate, avx512::propagate_random};
    case Isa::avx2:
      return {avx2::random_rows, avx2::project_dense, avx2::project_csr, avx2::build_table, avx2::propagate,
              avx2::accumulate, avx2::propagate_random};
#endif
#if defined(FASTEMB_ARM64)
    case Isa::dotprod:  // no dotprod variant: the shared float kernels gain nothing from sdot
    case Isa::neon:
      return {neon::random_rows, neon::project_dense, neon::project_csr, neon::build_table, neon::propagate,
              neon::accumulate, neon::propagate_random};
#endif
    default:
      return {serial::random_rows, serial::project_dense, serial::project_csr, serial::build_table, serial::propagate,
              serial::accumulate, serial::propagate_random};
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
  k.propagate(a, row_scale, prev, d, cur, normalize, propagate_normalized, alpha, accum, accum_init, tasks.data(),
              static_cast<int64_t>(tasks.size()) - 1);
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
    k.propagate_random(a, offsets.data(), lists, pv.data(), row_scale, d, cur, normalize, propagate_normalized, alpha,
                       accum, accum_init, tasks.data(), static_cast<int64_t>(tasks.size()) - 1);
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

void standardize_columns(float* x, int64_t rows, int64_t d, double* mean, double* std) {
  check_rows(rows, "rows");
  if (d < 1) fail("d must be >= 1, got " + std::to_string(d));
  check_ptr(x, rows > 0, "x");
  check_ptr(mean, true, "mean");
  check_ptr(std, true, "std");
  if (rows == 0) {
    for (int64_t j = 0; j < d; ++j) mean[j] = 0.0, std[j] = 0.0;
    return;
  }
  constexpr int64_t kBlock = 4096;
  const int64_t nb = (rows + kBlock - 1) / kBlock;
  std::vector<double> part(static_cast<size_t>(nb) * static_cast<size_t>(d));
  // Pass 1: per-block column sums (rows in increasing order), combined in block order.
  parallel_for(nb, [&](int64_t b) {
    double* s = part.data() + b * d;
    for (int64_t j = 0; j < d; ++j) s[j] = 0.0;
    const int64_t i1 = std::min(rows, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < i1; ++i) {
      const float* xi = x + i * d;
      for (int64_t j = 0; j < d; ++j) s[j] += static_cast<double>(xi[j]);
    }
  });
  for (int64_t j = 0; j < d; ++j) mean[j] = 0.0;
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t j = 0; j < d; ++j) mean[j] += part[static_cast<size_t>(b * d + j)];
  for (int64_t j = 0; j < d; ++j) mean[j] /= static_cast<double>(rows);
  // Pass 2: sums of squared deviations, same blocking.
  parallel_for(nb, [&](int64_t b) {
    double* s = part.data() + b * d;
    for (int64_t j = 0; j < d; ++j) s[j] = 0.0;
    const int64_t i1 = std::min(rows, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < i1; ++i) {
      const float* xi = x + i * d;
      for (int64_t j = 0; j < d; ++j) {
        const double t = static_cast<double>(xi[j]) - mean[j];
        s[j] += t * t;
      }
    }
  });
  for (int64_t j = 0; j < d; ++j) std[j] = 0.0;
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t j = 0; j < d; ++j) std[j] += part[static_cast<size_t>(b * d + j)];
  std::vector<double> div(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) {
    std[j] = std::sqrt(std[j] / static_cast<double>(rows));
    div[static_cast<size_t>(j)] = std[j] > 0.0 ? std[j] : 1.0;
  }
  // Pass 3: in place.
  parallel_for(nb, [&](int64_t b) {
    const int64_t i1 = std::min(rows, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < i1; ++i) {
      float* xi = x + i * d;
      for (int64_t j = 0; j < d; ++j)
        xi[j] = static_cast<float>((static_cast<double>(xi[j]) - mean[j]) / div[static_cast<size_t>(j)]);
    }
  });
}

float norm_fixed_order(const float* u, int64_t d) {
  if (d < 0) fail("d must be >= 0, got " + std::to_string(d));
  check_ptr(u, d > 0, "u");
  return norm_fixed_order_row(u, d);
}

}  // namespace fastemb::graph
