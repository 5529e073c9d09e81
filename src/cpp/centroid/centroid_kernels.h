// Centroid aggregation kernels, written once and compiled once per ISA: centroid_<isa>.cpp
// defines FASTEMB_ISA_NS and includes this file, with that ISA's compiler flags. Everything here
// lives in that namespace or has internal linkage, and no std:: template is instantiated, so the
// linker can never hand one ISA's code to another's caller.
//
// Determinism: each group is reduced by one task, rows in increasing row order, and every
// reduction over columns (norms, dots) uses a fixed 16-lane order; with -ffp-contract=off the
// result is the same bits for every ISA and every thread count.
#ifndef FASTEMB_ISA_NS
#error "define FASTEMB_ISA_NS before including centroid_kernels.h"
#endif

#include <cstdint>
#include <cstdlib>
#include <new>

#include "centroid/centroid.h"
#include "centroid/centroid_math.h"
#include "common/float16.h"
#include "common/thread_pool.h"

namespace fastemb::centroid::FASTEMB_ISA_NS {
namespace {

template <class A>
struct Scratch {
  A* p;
  explicit Scratch(int64_t n) : p(static_cast<A*>(std::malloc(sizeof(A) * static_cast<size_t>(n > 0 ? n : 1)))) {
    if (!p) throw std::bad_alloc();
  }
  ~Scratch() { std::free(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
inline float sqrt_a(float v) { return __builtin_sqrtf(v); }
inline double sqrt_a(double v) { return __builtin_sqrt(v); }
template <class A>
inline bool is_nan(A v) { return v != v; }

// acc[j] += coef * x[j]
template <class T, class A>
inline void axpy(A* __restrict acc, const T* __restrict x, A coef, int64_t w) {
  for (int64_t j = 0; j < w; ++j) acc[j] += coef * to_acc(x[j], A());
}

// sum_j a[j] * b[j] in a fixed order: 16 lanes, then a pairwise tree (same bits on every ISA).
template <class A, class U, class V>
inline A dot_fixed(const U* __restrict a, const V* __restrict b, int64_t d) {
  A lanes[16];
  for (int l = 0; l < 16; ++l) lanes[l] = A(0);
  int64_t j = 0;
  for (; j + 16 <= d; j += 16)
    for (int l = 0; l < 16; ++l) lanes[l] += to_acc(a[j + l], A()) * to_acc(b[j + l], A());
  for (int l = 0; j + l < d; ++l) lanes[l] += to_acc(a[j + l], A()) * to_acc(b[j + l], A());
  for (int width = 8; width >= 1; width >>= 1)
    for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
}

// Gathered rows (unsorted labels) defeat the hardware prefetcher: ask for rows ahead, about
// kPrefetchBytes ahead (4 to 16 rows). In a standalone gather loop (1M x 128 fp32, K=100k,
// 2 threads, Zen 4, best of 9) 16 rows ahead with prefetcht2 (locality 1) read x in 25 ms, 6 rows
// with prefetchnta 35 ms; inside the full forward the gain was within the shared machine's noise.
constexpr int64_t kPrefetchBytes = 8192;
inline int64_t prefetch_distance(int64_t row_bytes) {
  const int64_t rows = kPrefetchBytes / (row_bytes > 0 ? row_bytes : 1);
  return rows < 4 ? 4 : rows > 16 ? 16 : rows;
}
// always_inline: GCC 12 may treat a helper whose only effect is a prefetch as pure and delete its
// calls.
template <class T>
__attribute__((always_inline)) inline void prefetch_row(const T* row, int64_t w) {
  const char* p = reinterpret_cast<const char*>(row);
  const int64_t bytes = w * static_cast<int64_t>(sizeof(T));
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 1);
}

inline float tiny_a(float) { return __FLT_MIN__; }
inline double tiny_a(double) { return __DBL_MIN__; }
inline float huge_a(float) { return __FLT_MAX__; }
inline double huge_a(double) { return __DBL_MAX__; }

// ||v|| in the fixed order of dot_fixed. When the sum of squares overflows or underflows the
// accumulation type (|v| past ~1.8e19 or below ~1e-19 in float32), it is redone on v / max|v|
// (BLAS nrm2 style), so large or tiny but finite rows still normalize to unit length.
template <class A, class U>
inline A norm_fixed(const U* __restrict v, int64_t d) {
  const A sumsq = dot_fixed<A>(v, v, d);
  if (sumsq >= tiny_a(A()) && sumsq <= huge_a(A())) return sqrt_a(sumsq);
  A peak = A(0);
  for (int64_t j = 0; j < d; ++j) {
    const A a = to_acc(v[j], A());
    const A mag = a < A(0) ? -a : a;
    if (mag > peak) peak = mag;
  }
  if (!(peak > A(0)) || !(peak <= huge_a(A())) || is_nan(sumsq)) return sqrt_a(sumsq);  // 0, inf or nan
  A lanes[16];
  for (int l = 0; l < 16; ++l) lanes[l] = A(0);
  int64_t j = 0;
  for (; j + 16 <= d; j += 16)
    for (int l = 0; l < 16; ++l) {
      const A t = to_acc(v[j + l], A()) / peak;
      lanes[l] += t * t;
    }
  for (int l = 0; j + l < d; ++l) {
    const A t = to_acc(v[j + l], A()) / peak;
    lanes[l] += t * t;
  }
  for (int width = 8; width >= 1; width >>= 1)
    for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return peak * sqrt_a(lanes[0]);
}

template <class A>
struct Ctx {
  const Problem& p;
  const Segments& s;
  const A* weights;    // or null
  const A* row_norms;  // max(||x_i||, eps) when normalize has 'pre', else null
  A eps;
  bool pre, post;
  int64_t row_of(int64_t j) const { return s.perm ? s.perm[j] : j; }
  A weight(int64_t row) const { return weights ? weights[row] : A(1); }
};

// ---- forward ----------------------------------------------------------------------------------

template <class T, class A>
void compute_row_norms(const Problem& p, A* row_norms) {
  const T* x = static_cast<const T*>(p.x);
  const int64_t d = p.d, block = 4096;
  const A eps = static_cast<A>(p.eps);
  auto task = [&](int64_t b) {
    const int64_t r1 = min_i64(p.n, (b + 1) * block);
    for (int64_t r = b * block; r < r1; ++r) {
      const T* row = x + r * d;
      row_norms[r] = clamp_norm(norm_fixed<A>(row, d), eps);
    }
  };
  parallel_for_each((p.n + block - 1) / block, task);
}

// Writes acc (w values) to out, dividing by `div` when div != 1, then 'post' normalization
// (only when w == d: post disables column blocks).
template <class T, class A>
inline void store_row(const Ctx<A>& c, A* acc, int64_t w, T* out, A* out_norm_slot) {
  if (c.post) {
    const A norm = norm_fixed<A>(acc, w);
    *out_norm_slot = norm;
    const A denom = clamp_norm(norm, c.eps);
    for (int64_t j = 0; j < w; ++j) acc[j] = acc[j] / denom;
  }
  for (int64_t j = 0; j < w; ++j) from_acc(acc[j], out + j);
}

template <class T, class A>
void forward_sum_mean(const Ctx<A>& c, const ForwardOutputs& o) {
  const Problem& p = c.p;
  const Segments& s = c.s;
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(o.out);
  A* wsum = static_cast<A*>(o.wsum);
  A* out_norm = static_cast<A*>(o.out_norm);
  const int64_t d = p.d;
  const bool mean = p.reduce == Reduce::mean;
  auto task = [&](int64_t t) {
    const int64_t chunk = t / s.col_blocks, cb = t % s.col_blocks;
    const int64_t c0 = cb * s.col_block_width, c1 = min_i64(d, c0 + s.col_block_width);
    if (c0 >= c1 && d > 0) return;
    const int64_t w = c1 - c0;
    const int64_t ahead = prefetch_distance(w * static_cast<int64_t>(sizeof(T)));
    Scratch<A> acc(w), tmp(w);
    for (int64_t g = s.chunks[chunk]; g < s.chunks[chunk + 1]; ++g) {
      const int64_t r0 = s.offsets[g], r1 = s.offsets[g + 1];
      for (int64_t j = 0; j < w; ++j) acc.p[j] = A(0);
      A total_w = A(0);
      for (int64_t jr = r0; jr < r1; ++jr) {
        const int64_t row = c.row_of(jr);
        if (s.perm && jr + ahead < s.offsets[p.k]) prefetch_row(x + s.perm[jr + ahead] * d + c0, w);
        const A wi = c.weight(row);
        total_w += wi;
        axpy(acc.p, x + row * d + c0, c.pre ? wi / c.row_norms[row] : wi, w);
      }
      if (cb == 0) {
        o.counts[g] = r1 - r0;
        wsum[g] = total_w;
      }
      if (!p.leave_one_out) {
        if (mean) {
          for (int64_t j = 0; j < w; ++j) acc.p[j] = total_w != A(0) ? acc.p[j] / total_w : A(0);
        }
        store_row(c, acc.p, w, out + g * d + c0, out_norm ? out_norm + g : nullptr);
        continue;
      }
      // leave-one-out: row i gets (S - w_i x_i) / (W - w_i) (mean) or S - w_i x_i (sum);
      // singletons (and mean denominators of 0) give 0.
      for (int64_t jr = r0; jr < r1; ++jr) {
        const int64_t row = c.row_of(jr);
        const A wi = c.weight(row);
        const A coef = c.pre ? wi / c.row_norms[row] : wi;
        const T* xr = x + row * d + c0;
        const A denom = total_w - wi;
        if (r1 - r0 == 1 || (mean && denom == A(0))) {
          for (int64_t j = 0; j < w; ++j) tmp.p[j] = A(0);
        } else if (mean) {
          for (int64_t j = 0; j < w; ++j) tmp.p[j] = (acc.p[j] - coef * to_acc(xr[j], A())) / denom;
        } else {
          for (int64_t j = 0; j < w; ++j) tmp.p[j] = acc.p[j] - coef * to_acc(xr[j], A());
        }
        store_row(c, tmp.p, w, out + row * d + c0, out_norm ? out_norm + row : nullptr);
      }
    }
  };
  parallel_for_each(s.num_chunks * s.col_blocks, task);
}

// Unsorted labels, few groups (K x D accumulators fit in L2): stream x once in row order and add
// each row into the partial sums of its row block (a fixed block size, not one per thread, so
// the bits do not depend on the thread count), then merge the blocks' partials in block order.
// Used for sum / mean (leave-one-out included: a second streaming pass writes the rows).
template <class T, class A, class L>
void forward_blocked(const Ctx<A>& c, const ForwardOutputs& o, const L* labels, int64_t block_rows) {
  const Problem& p = c.p;
  const Segments& s = c.s;
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(o.out);
  A* wsum = static_cast<A*>(o.wsum);
  A* out_norm = static_cast<A*>(o.out_norm);
  const int64_t n = p.n, d = p.d, k = p.k;
  const bool mean = p.reduce == Reduce::mean;
  const int64_t num_blocks = (n + block_rows - 1) / block_rows;
  Scratch<A> partial(num_blocks * k * d), partial_w(num_blocks * k);
  auto accumulate = [&](int64_t b) {
    A* sums = partial.p + b * k * d;
    A* wts = partial_w.p + b * k;
    for (int64_t j = 0; j < k * d; ++j) sums[j] = A(0);
    for (int64_t g = 0; g < k; ++g) wts[g] = A(0);
    const int64_t r1 = min_i64(n, (b + 1) * block_rows);
    for (int64_t row = b * block_rows; row < r1; ++row) {
      const int64_t g = static_cast<int64_t>(labels[row]);
      const A wi = c.weight(row);
      wts[g] += wi;
      axpy(sums + g * d, x + row * d, c.pre ? wi / c.row_norms[row] : wi, d);
    }
  };
  parallel_for_each(num_blocks, accumulate);
  // Merge into block 0's partials, in block order, one task per group chunk.
  auto merge = [&](int64_t chunk) {
    Scratch<A> acc(d);
    for (int64_t g = s.chunks[chunk]; g < s.chunks[chunk + 1]; ++g) {
      A* sum0 = partial.p + g * d;
      A total_w = partial_w.p[g];
      for (int64_t b = 1; b < num_blocks; ++b) {
        const A* sb = partial.p + (b * k + g) * d;
        for (int64_t j = 0; j < d; ++j) sum0[j] += sb[j];
        total_w += partial_w.p[b * k + g];
      }
      o.counts[g] = s.offsets[g + 1] - s.offsets[g];
      wsum[g] = total_w;
      partial_w.p[g] = total_w;
      if (p.leave_one_out) continue;
      for (int64_t j = 0; j < d; ++j)
        acc.p[j] = mean ? (total_w != A(0) ? sum0[j] / total_w : A(0)) : sum0[j];
      store_row(c, acc.p, d, out + g * d, out_norm ? out_norm + g : nullptr);
    }
  };
  parallel_for_each(s.num_chunks, merge);
  if (!p.leave_one_out) return;
  auto loo_rows = [&](int64_t b) {
    Scratch<A> tmp(d);
    const int64_t r1 = min_i64(n, (b + 1) * block_rows);
    for (int64_t row = b * block_rows; row < r1; ++row) {
      const int64_t g = static_cast<int64_t>(labels[row]);
      const A* sum = partial.p + g * d;
      const A wi = c.weight(row);
      const A coef = c.pre ? wi / c.row_norms[row] : wi;
      const A denom = partial_w.p[g] - wi;
      const T* xr = x + row * d;
      if (s.offsets[g + 1] - s.offsets[g] == 1 || (mean && denom == A(0))) {
        for (int64_t j = 0; j < d; ++j) tmp.p[j] = A(0);
      } else if (mean) {
        for (int64_t j = 0; j < d; ++j) tmp.p[j] = (sum[j] - coef * to_acc(xr[j], A())) / denom;
      } else {
        for (int64_t j = 0; j < d; ++j) tmp.p[j] = sum[j] - coef * to_acc(xr[j], A());
      }
      store_row(c, tmp.p, d, out + row * d, out_norm ? out_norm + row : nullptr);
    }
  };
  parallel_for_each(num_blocks, loo_rows);
}

template <class T, class A>
void forward_extreme(const Ctx<A>& c, const ForwardOutputs& o) {
  const Problem& p = c.p;
  const Segments& s = c.s;
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(o.out);
  A* wsum = static_cast<A*>(o.wsum);
  A* out_norm = static_cast<A*>(o.out_norm);
  const int64_t d = p.d;
  const bool is_max = p.reduce == Reduce::amax;
  auto task = [&](int64_t t) {
    const int64_t chunk = t / s.col_blocks, cb = t % s.col_blocks;
    const int64_t c0 = cb * s.col_block_width, c1 = min_i64(d, c0 + s.col_block_width);
    if (c0 >= c1 && d > 0) return;
    const int64_t w = c1 - c0;
    const int64_t ahead = prefetch_distance(w * static_cast<int64_t>(sizeof(T)));
    Scratch<A> acc(w);
    for (int64_t g = s.chunks[chunk]; g < s.chunks[chunk + 1]; ++g) {
      const int64_t r0 = s.offsets[g], r1 = s.offsets[g + 1];
      int64_t* arg = o.arg + g * d + c0;
      if (cb == 0) {
        o.counts[g] = r1 - r0;
        wsum[g] = static_cast<A>(r1 - r0);
      }
      if (r0 == r1) {
        for (int64_t j = 0; j < w; ++j) {
          acc.p[j] = A(0);
          arg[j] = -1;
        }
      } else {
        const int64_t first = c.row_of(r0);
        const A inv0 = c.pre ? c.row_norms[first] : A(1);
        for (int64_t j = 0; j < w; ++j) {
          acc.p[j] = to_acc(x[first * d + c0 + j], A()) / inv0;
          arg[j] = first;
        }
        for (int64_t jr = r0 + 1; jr < r1; ++jr) {
          const int64_t row = c.row_of(jr);
          if (s.perm && jr + ahead < s.offsets[p.k]) prefetch_row(x + s.perm[jr + ahead] * d + c0, w);
          const A rn = c.pre ? c.row_norms[row] : A(1);
          const T* xr = x + row * d + c0;
          // Strictly better replaces (ties keep the lowest row); a NaN wins and stays.
          for (int64_t j = 0; j < w; ++j) {
            const A v = to_acc(xr[j], A()) / rn;
            const bool better = is_max ? v > acc.p[j] : v < acc.p[j];
            if (!is_nan(acc.p[j]) && (better || is_nan(v))) {
              acc.p[j] = v;
              arg[j] = row;
            }
          }
        }
      }
      store_row(c, acc.p, w, out + g * d + c0, out_norm ? out_norm + g : nullptr);
    }
  };
  parallel_for_each(s.num_chunks * s.col_blocks, task);
}

// ---- backward ---------------------------------------------------------------------------------

// dst = gradient w.r.t. the centroid before 'post' normalization:
// (g - c_hat (c_hat . g)) / ||c|| when ||c|| > eps, else g / eps; without 'post', dst = g.
template <class T, class A>
inline void unpost_grad(const Ctx<A>& c, A* dst, const T* g, const T* c_hat, const A* out_norm_slot, int64_t d) {
  if (!c.post) {
    for (int64_t j = 0; j < d; ++j) dst[j] = to_acc(g[j], A());
    return;
  }
  const A norm = *out_norm_slot;
  if (norm > c.eps) {
    const A proj = dot_fixed<A>(c_hat, g, d);
    for (int64_t j = 0; j < d; ++j) dst[j] = (to_acc(g[j], A()) - to_acc(c_hat[j], A()) * proj) / norm;
  } else {
    for (int64_t j = 0; j < d; ++j) dst[j] = to_acc(g[j], A()) / c.eps;
  }
}

// The centroid before 'post' normalization, rebuilt from the output: out * max(||c||, eps).
template <class T, class A>
inline void unnormalized(const Ctx<A>& c, A* dst, const T* out_row, const A* out_norm_slot, int64_t d) {
  const A scale = c.post ? clamp_norm(*out_norm_slot, c.eps) : A(1);
  for (int64_t j = 0; j < d; ++j) dst[j] = to_acc(out_row[j], A()) * scale;
}

// Gradient w.r.t. the normalized row x_hat (dxh) -> gradient w.r.t. x, stored to grad_x.
// 'pre': (dxh - x_hat (x_hat . dxh)) / ||x|| when ||x|| > eps, else dxh / eps.
template <class T, class A>
inline void store_grad_row(const Ctx<A>& c, A* dxh, const T* xr, int64_t row, T* grad_row, A* xhat_buf, int64_t d) {
  if (c.pre) {
    const A rn = c.row_norms[row];
    if (rn > c.eps) {
      for (int64_t j = 0; j < d; ++j) xhat_buf[j] = to_acc(xr[j], A()) / rn;
      const A proj = dot_fixed<A>(xhat_buf, dxh, d);
      for (int64_t j = 0; j < d; ++j) dxh[j] = (dxh[j] - xhat_buf[j] * proj) / rn;
    } else {
      for (int64_t j = 0; j < d; ++j) dxh[j] = dxh[j] / c.eps;
    }
  }
  for (int64_t j = 0; j < d; ++j) from_acc(dxh[j], grad_row + j);
}

// x_hat . v for row `row` (x / max(||x||, eps) under 'pre').
template <class T, class A, class V>
inline A xhat_dot(const Ctx<A>& c, const T* xr, int64_t row, const V* v, int64_t d) {
  const A dotv = dot_fixed<A>(xr, v, d);
  return c.pre ? dotv / c.row_norms[row] : dotv;
}

template <class T, class A>
void backward_sum_mean(const Ctx<A>& c, const BackwardInputs& in, const BackwardOutputs& o) {
  const Problem& p = c.p;
  const Segments& s = c.s;
  const T* x = static_cast<const T*>(p.x);
  const T* gout = static_cast<const T*>(in.grad_out);
  const T* out = static_cast<const T*>(in.out);
  const A* wsum = static_cast<const A*>(in.wsum);
  const A* out_norm = static_cast<const A*>(in.out_norm);
  T* grad_x = static_cast<T*>(o.grad_x);
  A* grad_w = static_cast<A*>(o.grad_w);
  const int64_t d = p.d;
  const bool mean = p.reduce == Reduce::mean;
  auto task = [&](int64_t chunk) {
    Scratch<A> gp(d), cen(d), dxh(d), xhat(d), total(d), q(d), oj(d);
    for (int64_t g = s.chunks[chunk]; g < s.chunks[chunk + 1]; ++g) {
      const int64_t r0 = s.offsets[g], r1 = s.offsets[g + 1];
      if (r0 == r1) continue;
      const A total_w = wsum[g];
      if (!p.leave_one_out) {
        unpost_grad(c, gp.p, gout + g * d, out + g * d, out_norm ? out_norm + g : nullptr, d);
        A c_dot_g = A(0);
        if (grad_w && mean) {
          unnormalized(c, cen.p, out + g * d, out_norm ? out_norm + g : nullptr, d);
          c_dot_g = dot_fixed<A>(cen.p, gp.p, d);
        }
        for (int64_t jr = r0; jr < r1; ++jr) {
          const int64_t row = c.row_of(jr);
          const T* xr = x + row * d;
          if (grad_w) {
            const A xg = xhat_dot(c, xr, row, gp.p, d);
            grad_w[row] = mean ? (total_w != A(0) ? (xg - c_dot_g) / total_w : A(0)) : xg;
          }
          if (grad_x) {
            const A wi = c.weight(row);
            const A scale = mean ? (total_w != A(0) ? wi / total_w : A(0)) : wi;
            for (int64_t j = 0; j < d; ++j) dxh.p[j] = scale * gp.p[j];
            store_grad_row(c, dxh.p, xr, row, grad_x + row * d, xhat.p, d);
          }
        }
        continue;
      }
      // leave-one-out: o_i = (S - w_i x_i) / B_i with B_i = W - w_i (mean) or 1 (sum).
      // With Q_i = G_i / B_i, T = sum_i Q_i and U = sum_i o_i . Q_i:
      //   dx_j = w_j (T - Q_j),  dw_j = x_j . (T - Q_j) - U + o_j . Q_j  (the o terms: mean only).
      const bool singleton = r1 - r0 == 1;
      auto load_q = [&](int64_t row, A wi) -> bool {  // false when o_row is the constant 0
        const A denom = mean ? total_w - wi : A(1);
        if (singleton || denom == A(0)) return false;
        unpost_grad(c, q.p, gout + row * d, out + row * d, out_norm ? out_norm + row : nullptr, d);
        if (mean)
          for (int64_t j = 0; j < d; ++j) q.p[j] = q.p[j] / denom;
        return true;
      };
      for (int64_t j = 0; j < d; ++j) total.p[j] = A(0);
      A u = A(0);
      for (int64_t jr = r0; jr < r1; ++jr) {
        const int64_t row = c.row_of(jr);
        if (!load_q(row, c.weight(row))) continue;
        for (int64_t j = 0; j < d; ++j) total.p[j] += q.p[j];
        if (grad_w && mean) {
          unnormalized(c, oj.p, out + row * d, out_norm ? out_norm + row : nullptr, d);
          u += dot_fixed<A>(oj.p, q.p, d);
        }
      }
      for (int64_t jr = r0; jr < r1; ++jr) {
        const int64_t row = c.row_of(jr);
        const A wi = c.weight(row);
        const bool has_q = load_q(row, wi);
        if (!has_q)
          for (int64_t j = 0; j < d; ++j) q.p[j] = A(0);
        for (int64_t j = 0; j < d; ++j) dxh.p[j] = total.p[j] - q.p[j];  // T - Q_j
        const T* xr = x + row * d;
        if (grad_w) {
          A gw = xhat_dot(c, xr, row, dxh.p, d);
          if (mean) {
            A oq = A(0);
            if (has_q) {
              unnormalized(c, oj.p, out + row * d, out_norm ? out_norm + row : nullptr, d);
              oq = dot_fixed<A>(oj.p, q.p, d);
            }
            gw = gw - u + oq;
          }
          grad_w[row] = gw;
        }
        if (grad_x) {
          for (int64_t j = 0; j < d; ++j) dxh.p[j] = wi * dxh.p[j];
          store_grad_row(c, dxh.p, xr, row, grad_x + row * d, xhat.p, d);
        }
      }
    }
  };
  parallel_for_each(s.num_chunks, task);
}

// Unsorted labels, no leave-one-out: rows in row order (sequential writes of grad_x instead of
// writes scattered by group), reading each row's group gradient. Without 'post' that gradient is
// grad_out's row itself (read in place: no K x D copy, which at K = 100k was a fresh 51 MB buffer
// per call); with 'post' the projected gradients are built first. Group gradients are gathered by
// label, so they are prefetched a few rows ahead (K x D is past the L3 at large K).
template <class T, class A, class L>
void backward_sum_mean_rows(const Ctx<A>& c, const BackwardInputs& in, const BackwardOutputs& o, const L* labels,
                            int64_t block_rows) {
  const Problem& p = c.p;
  const Segments& s = c.s;
  const T* x = static_cast<const T*>(p.x);
  const T* gout = static_cast<const T*>(in.grad_out);
  const T* out = static_cast<const T*>(in.out);
  const A* wsum = static_cast<const A*>(in.wsum);
  const A* out_norm = static_cast<const A*>(in.out_norm);
  T* grad_x = static_cast<T*>(o.grad_x);
  A* grad_w = static_cast<A*>(o.grad_w);
  const int64_t n = p.n, d = p.d;
  const bool mean = p.reduce == Reduce::mean;
  const bool direct = !c.post;
  const bool need_c_dot_g = grad_w && mean;
  Scratch<A> group_grad(direct ? 0 : p.k * d), c_dot_g(need_c_dot_g ? p.k : 0);
  auto per_group = [&](int64_t chunk) {
    Scratch<A> cen(d), tmp(d);
    for (int64_t g = s.chunks[chunk]; g < s.chunks[chunk + 1]; ++g) {
      A* gp = direct ? tmp.p : group_grad.p + g * d;
      unpost_grad(c, gp, gout + g * d, out + g * d, out_norm ? out_norm + g : nullptr, d);
      if (need_c_dot_g) {
        unnormalized(c, cen.p, out + g * d, out_norm ? out_norm + g : nullptr, d);
        c_dot_g.p[g] = dot_fixed<A>(cen.p, gp, d);
      }
    }
  };
  if (!direct || need_c_dot_g) parallel_for_each(s.num_chunks, per_group);
  // G: grad_out's type T (direct) or A; to_acc(G, A) is exact, so both give the bits of a copy.
  auto rows = [&](const auto* src) {
    const int64_t ahead = prefetch_distance(d * static_cast<int64_t>(sizeof(*src)));
    auto per_rows = [&](int64_t b) {
      Scratch<A> dxh(d), xhat(d);
      const int64_t r1 = min_i64(n, (b + 1) * block_rows);
      for (int64_t row = b * block_rows; row < r1; ++row) {
        if (row + ahead < r1) prefetch_row(src + static_cast<int64_t>(labels[row + ahead]) * d, d);
        const int64_t g = static_cast<int64_t>(labels[row]);
        const auto* gp = src + g * d;
        const A total_w = wsum[g];
        const T* xr = x + row * d;
        if (grad_w) {
          const A xg = xhat_dot(c, xr, row, gp, d);
          grad_w[row] = mean ? (total_w != A(0) ? (xg - c_dot_g.p[g]) / total_w : A(0)) : xg;
        }
        if (grad_x) {
          const A wi = c.weight(row);
          const A scale = mean ? (total_w != A(0) ? wi / total_w : A(0)) : wi;
          for (int64_t j = 0; j < d; ++j) dxh.p[j] = scale * to_acc(gp[j], A());
          store_grad_row(c, dxh.p, xr, row, grad_x + row * d, xhat.p, d);
        }
      }
    };
    parallel_for_each((n + block_rows - 1) / block_rows, per_rows);
  };
  if (direct)
    rows(gout);
  else
    rows(static_cast<const A*>(group_grad.p));
}

template <class T, class A>
void backward_extreme(const Ctx<A>& c, const BackwardInputs& in, const BackwardOutputs& o) {
  const Problem& p = c.p;
  const Segments& s = c.s;
  const T* x = static_cast<const T*>(p.x);
  const T* gout = static_cast<const T*>(in.grad_out);
  const T* out = static_cast<const T*>(in.out);
  const A* out_norm = static_cast<const A*>(in.out_norm);
  T* grad_x = static_cast<T*>(o.grad_x);
  const int64_t d = p.d;
  if (!grad_x) return;
  auto task = [&](int64_t chunk) {
    Scratch<A> gp(d), dxh(d), xhat(d);
    for (int64_t g = s.chunks[chunk]; g < s.chunks[chunk + 1]; ++g) {
      const int64_t r0 = s.offsets[g], r1 = s.offsets[g + 1];
      if (r0 == r1) continue;
      unpost_grad(c, gp.p, gout + g * d, out + g * d, out_norm ? out_norm + g : nullptr, d);
      const int64_t* arg = in.arg + g * d;
      // Every row of the group is written (rows belong to one group: no races, no zero pass).
      for (int64_t jr = r0; jr < r1; ++jr) {
        const int64_t row = c.row_of(jr);
        for (int64_t j = 0; j < d; ++j) dxh.p[j] = arg[j] == row ? gp.p[j] : A(0);
        store_grad_row(c, dxh.p, x + row * d, row, grad_x + row * d, xhat.p, d);
      }
    }
  };
  parallel_for_each(s.num_chunks, task);
}

template <class T, class A>
void forward_typed(const Problem& p, const ForwardOutputs& o, const Segments& s, const void* row_norms) {
  const Ctx<A> c{p, s, static_cast<const A*>(p.weights), static_cast<const A*>(row_norms), static_cast<A>(p.eps),
                 (p.normalize & kNormalizePre) != 0, (p.normalize & kNormalizePost) != 0};
  if (p.reduce == Reduce::sum || p.reduce == Reduce::mean) {
    if (s.block_rows > 0) {
      if (p.labels_int32)
        forward_blocked<T, A>(c, o, static_cast<const int32_t*>(p.labels), s.block_rows);
      else
        forward_blocked<T, A>(c, o, static_cast<const int64_t*>(p.labels), s.block_rows);
    } else {
      forward_sum_mean<T, A>(c, o);
    }
  } else {
    forward_extreme<T, A>(c, o);
  }
}

template <class T, class A>
void backward_typed(const Problem& p, const BackwardInputs& in, const BackwardOutputs& o, const Segments& s,
                    const void* row_norms) {
  const Ctx<A> c{p, s, static_cast<const A*>(p.weights), static_cast<const A*>(row_norms), static_cast<A>(p.eps),
                 (p.normalize & kNormalizePre) != 0, (p.normalize & kNormalizePost) != 0};
  if ((p.reduce == Reduce::sum || p.reduce == Reduce::mean) && s.block_rows > 0) {
    if (p.labels_int32)
      backward_sum_mean_rows<T, A>(c, in, o, static_cast<const int32_t*>(p.labels), s.block_rows);
    else
      backward_sum_mean_rows<T, A>(c, in, o, static_cast<const int64_t*>(p.labels), s.block_rows);
  } else if (p.reduce == Reduce::sum || p.reduce == Reduce::mean) {
    backward_sum_mean<T, A>(c, in, o);
  } else {
    backward_extreme<T, A>(c, in, o);
  }
}

}  // namespace

void row_norms(const Problem& p, void* out) {
  switch (p.dtype) {
    case DType::f32: return compute_row_norms<float, float>(p, static_cast<float*>(out));
    case DType::f64: return compute_row_norms<double, double>(p, static_cast<double*>(out));
    case DType::f16: return compute_row_norms<half_t, float>(p, static_cast<float*>(out));
    case DType::bf16: return compute_row_norms<bf16_t, float>(p, static_cast<float*>(out));
  }
}

void forward(const Problem& p, const ForwardOutputs& o, const Segments& s, const void* rn) {
  switch (p.dtype) {
    case DType::f32: return forward_typed<float, float>(p, o, s, rn);
    case DType::f64: return forward_typed<double, double>(p, o, s, rn);
    case DType::f16: return forward_typed<half_t, float>(p, o, s, rn);
    case DType::bf16: return forward_typed<bf16_t, float>(p, o, s, rn);
  }
}

void backward(const Problem& p, const BackwardInputs& in, const BackwardOutputs& o, const Segments& s,
              const void* rn) {
  switch (p.dtype) {
    case DType::f32: return backward_typed<float, float>(p, in, o, s, rn);
    case DType::f64: return backward_typed<double, double>(p, in, o, s, rn);
    case DType::f16: return backward_typed<half_t, float>(p, in, o, s, rn);
    case DType::bf16: return backward_typed<bf16_t, float>(p, in, o, s, rn);
  }
}

}  // namespace fastemb::centroid::FASTEMB_ISA_NS
