// The graph kernels, written once and compiled per ISA: graph_<isa>.cpp defines FASTEMB_ISA_NS and
// includes this file with that ISA's compiler flags (no -ffp-contract: every float op is rounded on
// its own, so every ISA gives the serial variant's bits). Everything here lives in that namespace or
// has internal linkage; no std:: template is instantiated.
//
//   random rows:   SplitMix64 per entry; the loops over 64-bit lanes are written so that the
//                  compiler vectorizes them (AVX-512DQ vpmullq; AVX2 emulates the 64-bit multiply).
//   projection:    R rows as compact sparse lists ((column << 1) | negative, int32), generated once
//                  per R-row block and applied to every X row; dense X walks c in increasing order
//                  (R blocks in c order), CSR X walks its nonzeros in stored order.
//   propagate:     CSR SpMM, one row at a time, columns in register-resident chunks (AVX-512: up to
//                  16 zmm, AVX2: up to 8 ymm, serial: a 64-float array); for each column the sum runs
//                  over the row's edges in stored order. The next rows of prev are prefetched a few
//                  edges ahead (across row boundaries). Epilogue on the row (in L1): scale, the
//                  16-lane norm (AVX-512: one register, AVX2: two, serial: an array), normalize,
//                  accumulate.
#ifndef FASTEMB_ISA_NS
#error "define FASTEMB_ISA_NS before including graph_kernels.h"
#endif

#include <cstdint>
#include <cstdlib>
#include <new>

#include "common/thread_pool.h"
#include "graph/graph.h"
#include "graph/graph_math.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace fastemb::graph::FASTEMB_ISA_NS {
namespace {

struct Buffer {
  void* p;
  explicit Buffer(size_t bytes) : p(std::malloc(bytes > 0 ? bytes : 1)) {
    if (!p) throw std::bad_alloc();
  }
  ~Buffer() { std::free(p); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

constexpr int64_t kBitsBlock = 64;  // entries whose random bits are computed in one vector loop

// u[k] = bits of entries c0 + k, k < n (n <= kBitsBlock). A plain loop the compiler vectorizes.
inline void entry_bits_block(uint64_t key, uint64_t c0, int64_t n, uint64_t* __restrict u) {
  for (int64_t k = 0; k < n; ++k) u[k] = entry_bits(key, c0 + static_cast<uint64_t>(k));
}

// ---- random rows ----------------------------------------------------------------------------------

inline void random_row(const RandomSpec& r, uint64_t key, uint64_t row, float scale, bool scaled, float* __restrict out) {
  const int64_t d = r.d;
  uint64_t u[kBitsBlock];
  const float pos = r.value, neg = -r.value;
  for (int64_t j0 = 0; j0 < d; j0 += kBitsBlock) {
    const int64_t n = d - j0 < kBitsBlock ? d - j0 : kBitsBlock;
    entry_bits_block(key, row * static_cast<uint64_t>(d) + static_cast<uint64_t>(j0), n, u);
    float* o = out + j0;
    if (scaled) {
      for (int64_t k = 0; k < n; ++k) {
        const float v = (u[k] >> 11) < r.threshold ? (((u[k] >> 10) & 1u) ? neg : pos) : 0.f;
        o[k] = v * scale;
      }
    } else {
      for (int64_t k = 0; k < n; ++k) o[k] = (u[k] >> 11) < r.threshold ? (((u[k] >> 10) & 1u) ? neg : pos) : 0.f;
    }
  }
}

// Number of nonzeros in a block of entry bits (a loop the compiler vectorizes).
inline int64_t block_hits(const uint64_t* __restrict u, int64_t n, uint64_t threshold) {
  int64_t hits = 0;
  for (int64_t k = 0; k < n; ++k) hits += (u[k] >> 11) < threshold ? 1 : 0;
  return hits;
}

// Nonzeros of R row `row` as (column << 1) | negative, in increasing column; returns their count
// (out null: only counts). The compaction loop (a serial chain on count) runs only for the blocks
// with a nonzero: at s = sqrt(N) most blocks have none.
inline int64_t sparse_row(const RandomSpec& r, uint64_t key, uint64_t row, int32_t* __restrict out) {
  const int64_t d = r.d;
  uint64_t u[kBitsBlock];
  int64_t count = 0;
  for (int64_t j0 = 0; j0 < d; j0 += kBitsBlock) {
    const int64_t n = d - j0 < kBitsBlock ? d - j0 : kBitsBlock;
    entry_bits_block(key, row * static_cast<uint64_t>(d) + static_cast<uint64_t>(j0), n, u);
    const int64_t hits = block_hits(u, n, r.threshold);
    if (!out) count += hits;
    if (!out || hits == 0) continue;
    for (int64_t k = 0; k < n; ++k) {
      out[count] = static_cast<int32_t>(((j0 + k) << 1) | static_cast<int64_t>((u[k] >> 10) & 1u));
      count += (u[k] >> 11) < r.threshold ? 1 : 0;
    }
  }
  return count;
}

// acc[j] +-= x for the nonzeros of one R row.
inline void apply_sparse_row(const int32_t* __restrict list, int64_t count, float x, float* __restrict acc) {
  for (int64_t k = 0; k < count; ++k) {
    const int32_t e = list[k];
    const int32_t j = e >> 1;
    acc[j] = (e & 1) ? acc[j] - x : acc[j] + x;
  }
}

inline void scale_row(float* __restrict row, int64_t d, float value) {
  for (int64_t j = 0; j < d; ++j) row[j] = row[j] * value;
}

// ---- propagate: the SpMM row chunk ------------------------------------------------------------------

// Rows of prev are asked for this many edges ahead (8 lines each at d = 128), into L2 (prefetcht2).
// Measured on the 2-core EPYC VM (standalone gather loop, 1M x 128 prev, 20M power-law edges,
// variants alternated in one process): T0 or NTA prefetches are no faster than none, T1/T2 are
// ~1.6x faster, distances 12..48 are alike.
constexpr int64_t kPrefetchEdges = 16;

#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kMaxVec = 16;  // 256 floats per chunk
#elif defined(__AVX2__)
constexpr int kLanes = 8;
constexpr int kMaxVec = 8;  // 64 floats per chunk
#else
constexpr int kLanes = 4;
constexpr int kMaxVec = 16;  // 64 floats per chunk
#endif

// Prefetch (into L2) the lines of the NV vectors at p, and the line of their last byte when p is
// not 64-byte aligned (then the span covers one line more).
// always_inline: GCC 12 finds a helper whose only effect is a prefetch "pure" and may delete its
// calls (measured: a helper that also read the index array lost every prefetch).
template <int NV>
__attribute__((always_inline)) inline void prefetch_vectors(const float* p) {
  constexpr int64_t bytes = int64_t(NV) * kLanes * 4;
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off, 0, 1);
  if ((reinterpret_cast<uintptr_t>(c) & 63) != 0) __builtin_prefetch(c + bytes - 1, 0, 1);
}

// The prefetch of spmm_chunk below AVX-512 (whose chunk covers d <= 256 in one pass): a row wider
// than one chunk is summed in several passes over its edges (AVX2: 64 floats, two passes at
// d = 128). The first pass (j0 = 0) fetches the whole row of prev for the edge kPrefetchEdges ahead
// and the later passes fetch nothing: their lines are in L2 by then. (Each pass prefetching its own
// chunk left every later pass's first edges unfetched: AVX2, FastRP 1M nodes / 20M nnz, d = 128,
// one process alternating: 1.40-1.47 -> 1.29-1.36 s.)
template <int NV>
__attribute__((always_inline)) inline void prefetch_row_ahead(const float* row, int64_t d, bool whole) {
  if (!whole) return prefetch_vectors<NV>(row);
  const char* c = reinterpret_cast<const char*>(row);
  for (int64_t off = 0; off < d * 4; off += 64) __builtin_prefetch(c + off, 0, 1);
  if ((reinterpret_cast<uintptr_t>(c) & 63) != 0) __builtin_prefetch(c + d * 4 - 1, 0, 1);
}

template <class I>
struct Edges {
  const I* idx;
  const float* w;      // or null
  int64_t e_prefetch;  // prefetch limit (end of the task's edges)
};

#if defined(__AVX512F__)
template <int NV, bool kWeighted, class I>
inline void spmm_chunk(const Edges<I>& E, int64_t e0, int64_t e1, const float* __restrict prev, int64_t d, int64_t j0,
                       int64_t width, const float* init, float scale, float* out) {
  // The weight test is a template parameter and the loop body has no other branch, so that the
  // accumulators stay in registers (with a branch on E.w inside the loop GCC kept them in a stack
  // array: 8 zmm stores per edge filled the store queue and halved the gathers in flight).
  __m512 acc[NV];
  const int64_t tail = width - int64_t(NV - 1) * 16;  // 1..16 floats in the last vector
  const __mmask16 last = static_cast<__mmask16>((tail >= 16) ? 0xFFFF : ((1u << tail) - 1u));
  if (init) {  // continue a partial sum (propagate_block); init may be out itself
#pragma GCC unroll 16
    for (int v = 0; v < NV - 1; ++v) acc[v] = _mm512_loadu_ps(init + 16 * v);
    acc[NV - 1] = _mm512_maskz_loadu_ps(last, init + 16 * (NV - 1));
  } else {
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] = _mm512_setzero_ps();
  }
  const I* __restrict idx = E.idx;
  const float* __restrict wts = E.w;
  const int64_t e_pf = E.e_prefetch - kPrefetchEdges;
  for (int64_t e = e0; e < e1; ++e) {
    if (e < e_pf) prefetch_vectors<NV>(prev + static_cast<int64_t>(idx[e + kPrefetchEdges]) * d + j0);
    const float* p = prev + static_cast<int64_t>(idx[e]) * d + j0;
    if constexpr (kWeighted) {
      const __m512 w = _mm512_set1_ps(wts[e]);
#pragma GCC unroll 16
      for (int v = 0; v < NV - 1; ++v) acc[v] = _mm512_add_ps(acc[v], _mm512_mul_ps(w, _mm512_loadu_ps(p + 16 * v)));
      acc[NV - 1] = _mm512_add_ps(acc[NV - 1], _mm512_mul_ps(w, _mm512_maskz_loadu_ps(last, p + 16 * (NV - 1))));
    } else {
#pragma GCC unroll 16
      for (int v = 0; v < NV - 1; ++v) acc[v] = _mm512_add_ps(acc[v], _mm512_loadu_ps(p + 16 * v));
      acc[NV - 1] = _mm512_add_ps(acc[NV - 1], _mm512_maskz_loadu_ps(last, p + 16 * (NV - 1)));
    }
  }
  const __m512 s = _mm512_set1_ps(scale);
#pragma GCC unroll 16
  for (int v = 0; v < NV - 1; ++v) _mm512_storeu_ps(out + 16 * v, _mm512_mul_ps(acc[v], s));
  _mm512_mask_storeu_ps(out + 16 * (NV - 1), last, _mm512_mul_ps(acc[NV - 1], s));
}
#elif defined(__AVX2__)
inline __m256i tail_mask8(int64_t n) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), iota);
}
template <int NV, bool kWeighted, class I>
inline void spmm_chunk(const Edges<I>& E, int64_t e0, int64_t e1, const float* __restrict prev, int64_t d, int64_t j0,
                       int64_t width, const float* init, float scale, float* out) {
  __m256 acc[NV];
  const int64_t tail = width - int64_t(NV - 1) * 8;  // 1..8
  const __m256i last = tail_mask8(tail);
  if (init) {  // continue a partial sum (propagate_block); init may be out itself
#pragma GCC unroll 16
    for (int v = 0; v < NV - 1; ++v) acc[v] = _mm256_loadu_ps(init + 8 * v);
    acc[NV - 1] = _mm256_maskload_ps(init + 8 * (NV - 1), last);
  } else {
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] = _mm256_setzero_ps();
  }
  const I* __restrict idx = E.idx;
  const float* __restrict wts = E.w;
  const bool whole = d > width;  // several chunk passes per row: see prefetch_row_ahead
  const int64_t e_pf = j0 > 0 ? e0 : E.e_prefetch - kPrefetchEdges;
  for (int64_t e = e0; e < e1; ++e) {
    if (e < e_pf) prefetch_row_ahead<NV>(prev + static_cast<int64_t>(idx[e + kPrefetchEdges]) * d, d, whole);
    const float* p = prev + static_cast<int64_t>(idx[e]) * d + j0;
    const __m256 lv = _mm256_maskload_ps(p + 8 * (NV - 1), last);
    if constexpr (kWeighted) {
      const __m256 w = _mm256_set1_ps(wts[e]);
#pragma GCC unroll 16
      for (int v = 0; v < NV - 1; ++v) acc[v] = _mm256_add_ps(acc[v], _mm256_mul_ps(w, _mm256_loadu_ps(p + 8 * v)));
      acc[NV - 1] = _mm256_add_ps(acc[NV - 1], _mm256_mul_ps(w, lv));
    } else {
#pragma GCC unroll 16
      for (int v = 0; v < NV - 1; ++v) acc[v] = _mm256_add_ps(acc[v], _mm256_loadu_ps(p + 8 * v));
      acc[NV - 1] = _mm256_add_ps(acc[NV - 1], lv);
    }
  }
  const __m256 s = _mm256_set1_ps(scale);
#pragma GCC unroll 16
  for (int v = 0; v < NV - 1; ++v) _mm256_storeu_ps(out + 8 * v, _mm256_mul_ps(acc[v], s));
  _mm256_maskstore_ps(out + 8 * (NV - 1), last, _mm256_mul_ps(acc[NV - 1], s));
}
#else
template <int NV, bool kWeighted, class I>
inline void spmm_chunk(const Edges<I>& E, int64_t e0, int64_t e1, const float* __restrict prev, int64_t d, int64_t j0,
                       int64_t width, const float* init, float scale, float* out) {
  float acc[NV * 4];
  for (int k = 0; k < NV * 4; ++k) acc[k] = 0.f;
  if (init)  // continue a partial sum (propagate_block); init may be out itself
    for (int64_t k = 0; k < width; ++k) acc[k] = init[k];
  const bool whole = d > width;  // several chunk passes per row: see prefetch_row_ahead
  const int64_t e_pf = j0 > 0 ? e0 : E.e_prefetch - kPrefetchEdges;
  for (int64_t e = e0; e < e1; ++e) {
    if (e < e_pf) prefetch_row_ahead<NV>(prev + static_cast<int64_t>(E.idx[e + kPrefetchEdges]) * d, d, whole);
    const float* p = prev + static_cast<int64_t>(E.idx[e]) * d + j0;
    if constexpr (kWeighted) {
      const float w = E.w[e];
      for (int64_t k = 0; k < width; ++k) acc[k] = acc[k] + w * p[k];
    } else {
      for (int64_t k = 0; k < width; ++k) acc[k] = acc[k] + p[k];
    }
  }
  for (int64_t k = 0; k < width; ++k) out[k] = acc[k] * scale;
}
#endif

constexpr int64_t kChunk = int64_t(kMaxVec) * kLanes;

template <class I>
inline void spmm_chunk_any(const Edges<I>& E, int64_t e0, int64_t e1, const float* prev, int64_t d, int64_t j0,
                           int64_t width, const float* init, float scale, float* out) {
  const int nv = static_cast<int>((width + kLanes - 1) / kLanes);
  switch (nv) {
#define FASTEMB_CASE(n) \
  case n:                                                                                    \
    return E.w ? spmm_chunk<n, true, I>(E, e0, e1, prev, d, j0, width, init, scale, out)     \
               : spmm_chunk<n, false, I>(E, e0, e1, prev, d, j0, width, init, scale, out);
    FASTEMB_CASE(1) FASTEMB_CASE(2) FASTEMB_CASE(3) FASTEMB_CASE(4) FASTEMB_CASE(5) FASTEMB_CASE(6)
    FASTEMB_CASE(7) FASTEMB_CASE(8)
#if !defined(__AVX2__) || defined(__AVX512F__)
    FASTEMB_CASE(9) FASTEMB_CASE(10) FASTEMB_CASE(11) FASTEMB_CASE(12) FASTEMB_CASE(13) FASTEMB_CASE(14)
    FASTEMB_CASE(15) FASTEMB_CASE(16)
#endif
#undef FASTEMB_CASE
    default: return;
  }
}

// ---- the 16-lane norm and the epilogue ---------------------------------------------------------------

inline float row_norm(const float* __restrict u, int64_t d) {
  float lanes[16];
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= d; j += 16) {
    const __m512 x = _mm512_loadu_ps(u + j);
    acc = _mm512_add_ps(acc, _mm512_mul_ps(x, x));
  }
  if (j < d) {
    const __mmask16 m = static_cast<__mmask16>((1u << (d - j)) - 1u);
    const __m512 x = _mm512_maskz_loadu_ps(m, u + j);
    acc = _mm512_mask_add_ps(acc, m, acc, _mm512_mul_ps(x, x));
  }
  _mm512_storeu_ps(lanes, acc);
#elif defined(__AVX2__)
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= d; j += 16) {
    const __m256 a = _mm256_loadu_ps(u + j), b = _mm256_loadu_ps(u + j + 8);
    lo = _mm256_add_ps(lo, _mm256_mul_ps(a, a));
    hi = _mm256_add_ps(hi, _mm256_mul_ps(b, b));
  }
  _mm256_storeu_ps(lanes, lo);
  _mm256_storeu_ps(lanes + 8, hi);
  for (int l = 0; j + l < d; ++l) lanes[l] = lanes[l] + u[j + l] * u[j + l];
#else
  for (int l = 0; l < 16; ++l) lanes[l] = 0.f;
  int64_t j = 0;
  for (; j + 16 <= d; j += 16)
    for (int l = 0; l < 16; ++l) lanes[l] = lanes[l] + u[j + l] * u[j + l];
  for (int l = 0; j + l < d; ++l) lanes[l] = lanes[l] + u[j + l] * u[j + l];
#endif
  return norm_lanes_combine(lanes);
}

// accum[j] = (init ? 0.0f : accum[j]) + alpha * v[j]; with init accum is not read (the same bits as
// a zero-filled accum: 0.0f + x is x for every x but -0, which becomes +0 as it does in 0 + x).
inline void accumulate_row(float* __restrict accum, const float* __restrict v, int64_t d, float alpha, bool init) {
  if (init) {
    for (int64_t j = 0; j < d; ++j) accum[j] = 0.f + alpha * v[j];
  } else {
    for (int64_t j = 0; j < d; ++j) accum[j] = accum[j] + alpha * v[j];
  }
}

// Given u (the scaled row, stored in cur): normalize / accumulate / write v back when asked.
inline void epilogue(float* __restrict cur, int64_t d, bool normalize, bool propagate_normalized, float alpha,
                     float* __restrict accum, bool accum_init) {
  if (!normalize) {
    if (accum) accumulate_row(accum, cur, d, alpha, accum_init);
    return;
  }
  const float norm = row_norm(cur, d);
  const bool ok = norm > 0.f;
  if (accum) {
    if (ok && accum_init) {
      for (int64_t j = 0; j < d; ++j) accum[j] = 0.f + alpha * (cur[j] / norm);
    } else if (ok) {
      for (int64_t j = 0; j < d; ++j) accum[j] = accum[j] + alpha * (cur[j] / norm);
    } else {
      const float z = alpha * 0.f;
      for (int64_t j = 0; j < d; ++j) accum[j] = (accum_init ? 0.f : accum[j]) + z;
    }
  }
  if (propagate_normalized) {
    if (ok) {
      for (int64_t j = 0; j < d; ++j) cur[j] = cur[j] / norm;
    } else {
      for (int64_t j = 0; j < d; ++j) cur[j] = 0.f;
    }
  }
}

// Rows [i0, i1): the CSR sums (continuing from acc_in's rows when given), then with `finish` the
// row scale and the epilogue; without it the raw sums are stored (scale 1: x * 1.0f is x exactly).
template <class I>
void propagate_rows(const Csr& a, const float* row_scale, const float* prev, int64_t d, const float* acc_in, float* cur,
                    bool finish, bool normalize, bool propagate_normalized, float alpha, float* accum, bool accum_init,
                    int64_t i0, int64_t i1) {
  const Edges<I> E{static_cast<const I*>(a.indices), a.data, a.indptr[i1]};
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t e0 = a.indptr[i], e1 = a.indptr[i + 1];
    const int64_t r = a.row_ids ? a.row_ids[i] : i;  // the output row (a piece may list only some rows)
    const float scale = (finish && row_scale) ? row_scale[r] : 1.f;
    float* out = cur + r * d;
    const float* init = acc_in ? acc_in + r * d : nullptr;
    for (int64_t j0 = 0; j0 < d; j0 += kChunk) {
      const int64_t width = d - j0 < kChunk ? d - j0 : kChunk;
      spmm_chunk_any<I>(E, e0, e1, prev, d, j0, width, init ? init + j0 : nullptr, scale, out + j0);
    }
    if (finish) epilogue(out, d, normalize, propagate_normalized, alpha, accum ? accum + r * d : nullptr, accum_init);
  }
}

// ---- propagate in column bands of prev ----------------------------------------------------------------

constexpr int64_t kBandAhead = 4;          // rows ahead whose partial sums a band pass prefetches
constexpr int64_t kBandPrefetchEdges = 8;  // edges of the next row whose rows of prev it prefetches

// Prefetch (into L1) the lines of the n floats at p (always_inline: see prefetch_vectors).
__attribute__((always_inline)) inline void prefetch_span(const float* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t off = 0; off < n * 4; off += 64) __builtin_prefetch(c + off, 1, 3);
}

// One band pass of the banded step (graph.h "Column bands"): for each row of [i0, i1), the edges from
// cursor[i] on while their column is < hi (every remaining edge when `last`), i.e. a stretch of the
// row's edges in stored order; the sum continues from the row's partial sum in cur (or from acc_in /
// 0 at the row's first stretch) and is stored back unscaled (scale 1: x * 1.0f is x exactly). The
// last pass finishes every row (row scale, epilogue) as propagate_rows does. So each row adds the same
// terms in the same (stored) order as propagate_rows, whatever the index order: an edge of a later band
// only makes the row wait, with the edges after it, for that band's pass (unsorted rows lose the cache
// benefit, never the bits). spmm_chunk's own prefetch (idx[e + 16]) is off: the next edges in CSR order
// mostly belong to other bands; the loop below prefetches the next row's first edges of this band.
template <class I>
void propagate_rows_band(const Csr& a, const float* row_scale, const float* prev, int64_t d, const float* acc_in,
                         float* cur, bool finish, bool normalize, bool propagate_normalized, float alpha,
                         float* accum, bool accum_init, int64_t i0, int64_t i1, int64_t hi, bool first, bool last,
                         int64_t* __restrict cursor) {
  const I* __restrict idx = static_cast<const I*>(a.indices);
  const Edges<I> E{idx, a.data, 0};
  for (int64_t i = i0; i < i1; ++i) {
    if (i + kBandAhead < i1) {
      // The partial sum and the next edges of a row a few rows ahead (the loads of this row's own partial
      // sum wait behind its gathers otherwise: one memory latency per row), and the band's rows of prev
      // that the first edges of the next row gather (from L3).
      const int64_t ia = i + kBandAhead;
      if (!first) {
        prefetch_span(cur + (a.row_ids ? a.row_ids[ia] : ia) * d, d);
        __builtin_prefetch(idx + cursor[ia], 0, 3);
      }
      const int64_t in = i + 1, en = first ? a.indptr[in] : cursor[in], en_end = a.indptr[in + 1];
      for (int64_t e = en; e < en + kBandPrefetchEdges && e < en_end; ++e) {
        const int64_t c = static_cast<int64_t>(idx[e]);
        if (c >= hi) break;
        prefetch_span(prev + c * d, d);
      }
    }
    const int64_t e_row = a.indptr[i], e_end = a.indptr[i + 1];
    const int64_t e0 = first ? e_row : cursor[i];
    int64_t e1 = e0;
    if (last) {
      e1 = e_end;
    } else {
      while (e1 < e_end && static_cast<int64_t>(idx[e1]) < hi) ++e1;
      if (e1 == e0) {
        cursor[i] = e0;
        continue;
      }
    }
    cursor[i] = e1;
    const int64_t r = a.row_ids ? a.row_ids[i] : i;
    float* out = cur + r * d;
    const float* init = e0 > e_row ? out : (acc_in ? acc_in + r * d : nullptr);
    const float scale = (last && finish && row_scale) ? row_scale[r] : 1.f;
    for (int64_t j0 = 0; j0 < d; j0 += kChunk) {
      const int64_t width = d - j0 < kChunk ? d - j0 : kChunk;
      spmm_chunk_any<I>(E, e0, e1, prev, d, j0, width, init ? init + j0 : nullptr, scale, out + j0);
    }
    if (last && finish)
      epilogue(out, d, normalize, propagate_normalized, alpha, accum ? accum + r * d : nullptr, accum_init);
  }
}

}  // namespace

// ---- entry points (called by graph_dispatch.cpp after validation) -----------------------------------

void random_rows(const RandomSpec& r, int64_t row0, int64_t rows, const float* row_scale, float* out) {
  const uint64_t key = mix64(r.seed);
  const int64_t block = 256;
  auto task = [&](int64_t b) {
    const int64_t i1 = (b + 1) * block < rows ? (b + 1) * block : rows;
    for (int64_t i = b * block; i < i1; ++i)
      random_row(r, key, static_cast<uint64_t>(row0 + i), row_scale ? row_scale[i] : 1.f, row_scale != nullptr,
                 out + i * r.d);
  };
  parallel_for_each((rows + block - 1) / block, task);
}

void norm_rows(const float* x, int64_t rows, int64_t d, float* out) {
  for (int64_t i = 0; i < rows; ++i) out[i] = row_norm(x + i * d, d);
}

// Dense X: R in blocks of rb rows (c order); for each block the sparse lists are generated in
// parallel, then every X row block applies them (per row, c increasing: the reference order).
void project_dense(const RandomSpec& r, const float* x, int64_t rows, int64_t n_in, float* out) {
  const int64_t d = r.d;
  const uint64_t key = mix64(r.seed);
  if (n_in == 0)
    for (int64_t i = 0; i < rows * d; ++i) out[i] = 0.f;
  int64_t rb = (int64_t(1) << 20) / d;  // R rows per block: about 1M generated entries (4 MB of lists)
  if (rb < 1) rb = 1;
  if (rb > n_in) rb = n_in;
  Buffer lists(static_cast<size_t>(rb > 0 ? rb : 1) * static_cast<size_t>(d) * sizeof(int32_t));
  Buffer counts(static_cast<size_t>(rb > 0 ? rb : 1) * sizeof(int64_t));
  int32_t* L = static_cast<int32_t*>(lists.p);
  int64_t* C = static_cast<int64_t*>(counts.p);
  constexpr int64_t kTB = 16;
  for (int64_t c0 = 0; c0 < n_in; c0 += rb) {
    const int64_t nc = n_in - c0 < rb ? n_in - c0 : rb;
    const int64_t gen_block = 64;
    auto gen = [&](int64_t b) {
      const int64_t k1 = (b + 1) * gen_block < nc ? (b + 1) * gen_block : nc;
      for (int64_t k = b * gen_block; k < k1; ++k) C[k] = sparse_row(r, key, static_cast<uint64_t>(c0 + k), L + k * d);
    };
    parallel_for_each((nc + gen_block - 1) / gen_block, gen);
    const bool first = c0 == 0, last = c0 + nc >= n_in;
    // Per block of kTB X rows: x transposed (xt[k][b]) and the accumulators transposed
    // (acc[j][b]), so that each R nonzero is one contiguous kTB-wide add over the rows (the
    // per-element order stays c increasing; zeros of x are added as +-0: only the sign of a zero
    // result can differ from skipping them).
    auto apply = [&](int64_t b) {
      Buffer xt_buf(static_cast<size_t>(nc) * kTB * sizeof(float));
      Buffer acc_buf(static_cast<size_t>(d) * kTB * sizeof(float));
      float* __restrict xt = static_cast<float*>(xt_buf.p);
      float* __restrict acc = static_cast<float*>(acc_buf.p);
      const int64_t i0 = b * kTB;
      const int64_t nb = rows - i0 < kTB ? rows - i0 : kTB;
      for (int64_t k = 0; k < nc; ++k)
        for (int64_t t = 0; t < kTB; ++t) xt[k * kTB + t] = t < nb ? x[(i0 + t) * n_in + c0 + k] : 0.f;
      for (int64_t j = 0; j < d; ++j)
        for (int64_t t = 0; t < kTB; ++t) acc[j * kTB + t] = (first || t >= nb) ? 0.f : out[(i0 + t) * d + j];
      for (int64_t k = 0; k < nc; ++k) {
        const int32_t* list = L + k * d;
        const float* xv = xt + k * kTB;
        for (int64_t m = 0; m < C[k]; ++m) {
          const int32_t e = list[m];
          float* a = acc + static_cast<int64_t>(e >> 1) * kTB;
          if (e & 1) {
            for (int64_t t = 0; t < kTB; ++t) a[t] = a[t] - xv[t];
          } else {
            for (int64_t t = 0; t < kTB; ++t) a[t] = a[t] + xv[t];
          }
        }
      }
      for (int64_t t = 0; t < nb; ++t) {
        float* o = out + (i0 + t) * d;
        if (last) {
          for (int64_t j = 0; j < d; ++j) o[j] = acc[j * kTB + t] * r.value;
        } else {
          for (int64_t j = 0; j < d; ++j) o[j] = acc[j * kTB + t];
        }
      }
    };
    parallel_for_each((rows + kTB - 1) / kTB, apply);
  }
  if (n_in == 0) {
    // nothing added: out stays 0 * value
    for (int64_t i = 0; i < rows; ++i) scale_row(out + i * d, d, r.value);
  }
}

// CSR X. table: the sparse lists of every R row (offsets [cols + 1] into lists), or null: each
// nonzero's R row is generated on the fly.
void project_csr(const RandomSpec& r, const Csr& x, const int64_t* table_offsets, const int32_t* table, float* out) {
  const int64_t d = r.d;
  const uint64_t key = mix64(r.seed);
  const int64_t row_block = 64;
  auto apply = [&](int64_t b) {
    Buffer scratch(table ? 0 : static_cast<size_t>(d) * sizeof(int32_t));
    int32_t* tmp = static_cast<int32_t*>(scratch.p);
    const int64_t i1 = (b + 1) * row_block < x.rows ? (b + 1) * row_block : x.rows;
    for (int64_t i = b * row_block; i < i1; ++i) {
      float* acc = out + i * d;
      for (int64_t j = 0; j < d; ++j) acc[j] = 0.f;
      for (int64_t e = x.indptr[i]; e < x.indptr[i + 1]; ++e) {
        const int64_t c = x.indices_int32 ? static_cast<int64_t>(static_cast<const int32_t*>(x.indices)[e])
                                          : static_cast<const int64_t*>(x.indices)[e];
        const float xv = x.data ? x.data[e] : 1.f;
        if (table) {
          apply_sparse_row(table + table_offsets[c], table_offsets[c + 1] - table_offsets[c], xv, acc);
        } else {
          const int64_t n = sparse_row(r, key, static_cast<uint64_t>(c), tmp);
          apply_sparse_row(tmp, n, xv, acc);
        }
      }
      scale_row(acc, d, r.value);
    }
  };
  parallel_for_each((x.rows + row_block - 1) / row_block, apply);
}

// The sparse lists of R rows [row0, row0 + n), in two passes: table_counts writes offsets [n + 1]
// (counts in parallel, no compaction, then the prefix sum), table_fill the lists of the rows with a
// nonzero. With `verify` (offsets from a caller) table_fill regenerates every row and checks its
// count against offsets: returns the first local row whose count differs, or -1 (nothing is written
// past a row's slot); without it (offsets from table_counts) the rows with no nonzero are skipped.
void table_counts(const RandomSpec& r, int64_t row0, int64_t n, int64_t* offsets) {
  const uint64_t key = mix64(r.seed);
  const int64_t block = 256;
  offsets[0] = 0;
  auto count = [&](int64_t b) {
    const int64_t k1 = (b + 1) * block < n ? (b + 1) * block : n;
    for (int64_t k = b * block; k < k1; ++k)
      offsets[k + 1] = sparse_row(r, key, static_cast<uint64_t>(row0 + k), nullptr);
  };
  parallel_for_each((n + block - 1) / block, count);
  for (int64_t k = 0; k < n; ++k) offsets[k + 1] += offsets[k];
}

int64_t table_fill(const RandomSpec& r, int64_t row0, int64_t n, const int64_t* offsets, int32_t* lists, bool verify) {
  const int64_t d = r.d;
  const uint64_t key = mix64(r.seed);
  const int64_t block = 256;
  const int64_t nb = (n + block - 1) / block;
  Buffer bad_buf(static_cast<size_t>(nb > 0 ? nb : 1) * sizeof(int64_t));
  int64_t* bad = static_cast<int64_t*>(bad_buf.p);
  auto fill = [&](int64_t b) {
    bad[b] = -1;
    const int64_t k1 = (b + 1) * block < n ? (b + 1) * block : n;
    Buffer scratch(static_cast<size_t>(d) * sizeof(int32_t));
    int32_t* tmp = static_cast<int32_t*>(scratch.p);
    for (int64_t k = b * block; k < k1; ++k) {
      if (offsets[k + 1] == offsets[k]) {
        if (verify && sparse_row(r, key, static_cast<uint64_t>(row0 + k), nullptr) != 0) {
          bad[b] = k;
          return;
        }
        continue;
      }
      const int64_t m = sparse_row(r, key, static_cast<uint64_t>(row0 + k), tmp);
      if (m != offsets[k + 1] - offsets[k]) {
        bad[b] = k;
        return;
      }
      for (int64_t t = 0; t < m; ++t) lists[offsets[k] + t] = tmp[t];
    }
  };
  parallel_for_each(nb, fill);
  for (int64_t b = 0; b < nb; ++b)
    if (bad[b] >= 0) return bad[b];
  return -1;
}

// The sparse lists of R rows [0, n) (propagate_random's table), lists allocated with alloc.
void build_table(const RandomSpec& r, int64_t n, int64_t* offsets, int32_t** lists_out, void* (*alloc)(size_t)) {
  table_counts(r, 0, n, offsets);
  int32_t* lists = static_cast<int32_t*>(alloc(static_cast<size_t>(offsets[n] > 0 ? offsets[n] : 1) * sizeof(int32_t)));
  if (!lists) throw std::bad_alloc();
  *lists_out = lists;
  table_fill(r, 0, n, offsets, lists, false);
}

// acc_in null / finish true: graph.h propagate; otherwise propagate_block (a row block's partial sums).
// band_rows > 0 (and < a.cols): in column bands of band_rows rows of prev, in increasing order, with a
// cursor per row (8 bytes per row of scratch); the same bits as band_rows = 0.
void propagate(const Csr& a, const float* row_scale, const float* prev, int64_t d, const float* acc_in, float* cur,
               bool finish, bool normalize, bool propagate_normalized, float alpha, float* accum, bool accum_init,
               const int64_t* task_rows, int64_t num_tasks, int64_t band_rows) {
  if (band_rows > 0 && band_rows < a.cols) {
    Buffer cursor_buf(static_cast<size_t>(a.rows) * sizeof(int64_t));
    int64_t* cursor = static_cast<int64_t*>(cursor_buf.p);
    const int64_t bands = (a.cols + band_rows - 1) / band_rows;
    for (int64_t b = 0; b < bands; ++b) {
      const bool first = b == 0, last = b == bands - 1;
      const int64_t hi = (b + 1) * band_rows;
      auto band_task = [&](int64_t t) {
        if (a.indices_int32) {
          propagate_rows_band<int32_t>(a, row_scale, prev, d, acc_in, cur, finish, normalize, propagate_normalized,
                                       alpha, accum, accum_init, task_rows[t], task_rows[t + 1], hi, first, last,
                                       cursor);
        } else {
          propagate_rows_band<int64_t>(a, row_scale, prev, d, acc_in, cur, finish, normalize, propagate_normalized,
                                       alpha, accum, accum_init, task_rows[t], task_rows[t + 1], hi, first, last,
                                       cursor);
        }
      };
      parallel_for_each(num_tasks, band_task);
    }
    return;
  }
  auto task = [&](int64_t t) {
    if (a.indices_int32) {
      propagate_rows<int32_t>(a, row_scale, prev, d, acc_in, cur, finish, normalize, propagate_normalized, alpha,
                              accum, accum_init, task_rows[t], task_rows[t + 1]);
    } else {
      propagate_rows<int64_t>(a, row_scale, prev, d, acc_in, cur, finish, normalize, propagate_normalized, alpha,
                              accum, accum_init, task_rows[t], task_rows[t + 1]);
    }
  };
  parallel_for_each(num_tasks, task);
}

// propagate() with prev = diag(init_scale) R never materialized: R's rows as sparse lists (table),
// pv[c] = value * init_scale[c]. Per row, the edges are walked in stored order and each R nonzero is
// added to its column: for each column the same terms in the same order as the dense propagate. The
// zero terms it skips leave the sums unchanged when the weights are finite (a sum that starts at
// +0.0f is never -0 under round-to-nearest, so adding w * (+-0) changes no bit). `nonempty` is a
// bitmap of the R rows with a nonzero (1/8 of them at d = 128, N = 1M): 128 KB that stays in L2,
// so the edges whose R row is empty cost no random read of offsets.
template <class I>
void propagate_random_rows(const Csr& a, const int64_t* offsets, const int32_t* lists, const uint64_t* nonempty,
                           const float* pv, const float* row_scale, int64_t d, const float* acc_in, float* cur,
                           bool finish, bool normalize, bool propagate_normalized, float alpha, float* accum,
                           bool accum_init, int64_t i0, int64_t i1, float* __restrict acc) {
  const I* idx = static_cast<const I*>(a.indices);
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t r = a.row_ids ? a.row_ids[i] : i;  // the output row
    if (acc_in) {
      for (int64_t j = 0; j < d; ++j) acc[j] = acc_in[r * d + j];
    } else {
      for (int64_t j = 0; j < d; ++j) acc[j] = 0.f;
    }
    const int64_t e1 = a.indptr[i + 1];
    for (int64_t e = a.indptr[i]; e < e1; ++e) {
      const int64_t c = static_cast<int64_t>(idx[e]);
      if (!((nonempty[c >> 6] >> (c & 63)) & 1u)) continue;
      const int64_t k0 = offsets[c], k1 = offsets[c + 1];
      const float p = pv[c];
      if (a.data) {
        const float w = a.data[e];
        for (int64_t k = k0; k < k1; ++k) {
          const int32_t v = lists[k];
          const float x = (v & 1) ? -p : p;
          acc[v >> 1] = acc[v >> 1] + w * x;
        }
      } else {
        for (int64_t k = k0; k < k1; ++k) {
          const int32_t v = lists[k];
          acc[v >> 1] = acc[v >> 1] + ((v & 1) ? -p : p);
        }
      }
    }
    const float scale = (finish && row_scale) ? row_scale[r] : 1.f;
    float* out = cur + r * d;
    for (int64_t j = 0; j < d; ++j) out[j] = acc[j] * scale;
    if (finish) epilogue(out, d, normalize, propagate_normalized, alpha, accum ? accum + r * d : nullptr, accum_init);
  }
}

void propagate_random(const Csr& a, const int64_t* offsets, const int32_t* lists, const float* pv,
                      const float* row_scale, int64_t d, const float* acc_in, float* cur, bool finish, bool normalize,
                      bool propagate_normalized, float alpha, float* accum, bool accum_init, const int64_t* task_rows,
                      int64_t num_tasks) {
  const int64_t words = (a.cols + 63) / 64;
  Buffer bitmap(static_cast<size_t>(words) * sizeof(uint64_t));
  uint64_t* nonempty = static_cast<uint64_t*>(bitmap.p);
  for (int64_t w = 0; w < words; ++w) {
    uint64_t bits = 0;
    for (int64_t c = w * 64; c < a.cols && c < (w + 1) * 64; ++c)
      bits |= uint64_t(offsets[c + 1] > offsets[c]) << (c & 63);
    nonempty[w] = bits;
  }
  auto task = [&](int64_t t) {
    Buffer acc(static_cast<size_t>(d) * sizeof(float));
    float* ap = static_cast<float*>(acc.p);
    if (a.indices_int32) {
      propagate_random_rows<int32_t>(a, offsets, lists, nonempty, pv, row_scale, d, acc_in, cur, finish, normalize,
                                     propagate_normalized, alpha, accum, accum_init, task_rows[t], task_rows[t + 1],
                                     ap);
    } else {
      propagate_random_rows<int64_t>(a, offsets, lists, nonempty, pv, row_scale, d, acc_in, cur, finish, normalize,
                                     propagate_normalized, alpha, accum, accum_init, task_rows[t], task_rows[t + 1],
                                     ap);
    }
  };
  parallel_for_each(num_tasks, task);
}

void accumulate(const float* x, int64_t rows, int64_t d, bool normalize, float alpha, float* accum) {
  const int64_t block = 256;
  auto task = [&](int64_t b) {
    const int64_t i1 = (b + 1) * block < rows ? (b + 1) * block : rows;
    for (int64_t i = b * block; i < i1; ++i) {
      const float* xi = x + i * d;
      float* ai = accum + i * d;
      if (!normalize) {
        for (int64_t j = 0; j < d; ++j) ai[j] = ai[j] + alpha * xi[j];
        continue;
      }
      const float norm = row_norm(xi, d);
      if (norm > 0.f) {
        for (int64_t j = 0; j < d; ++j) ai[j] = ai[j] + alpha * (xi[j] / norm);
      } else {
        const float z = alpha * 0.f;
        for (int64_t j = 0; j < d; ++j) ai[j] = ai[j] + z;
      }
    }
  };
  parallel_for_each((rows + block - 1) / block, task);
}

}  // namespace fastemb::graph::FASTEMB_ISA_NS
