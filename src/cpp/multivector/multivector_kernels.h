// The multi-vector kernels, written once and compiled per ISA: multivector_<isa>.cpp defines
// FASTEMB_ISA_NS and includes this file with that ISA's compiler flags. Everything here lives in that
// namespace or has internal linkage; no std:: template is instantiated.
//
// A small vector type V of W float lanes (AVX-512: 16, AVX2: 8, otherwise a plain 4-float array whose
// fma is the libm fmaf, a fused multiply-add on every target) carries both kernels:
//
//   MaxSim:  a register-blocked GEMM. A panel of P = QV * W query tokens is packed k-major (one
//            vector load per dimension) and NR document tokens are broadcast from their rows; the
//            QV x NR accumulators are fma chains over the dimensions in increasing order, so every
//            ISA computes each dot product with the same roundings. The epilogue folds the tile into
//            the running max of each query lane (maxps) and never stores the dot products; a set's
//            max is written when its last tile is done, and the score sums the query tokens' maxima
//            in row order.
//   MUVERA:  per token set: the SimHash projections are the same GEMM shape (tokens broadcast,
//            hyperplanes in vector lanes, +-1 entries so each fma is an exact +-x_j step), reduced to
//            sign bits in the epilogue; bucket ids, a stable counting sort of the tokens per
//            repetition, bucket sums in row order in register-resident column chunks, then the
//            count sketch / average / final sketch in scalar loops.
#ifndef FASTEMB_ISA_NS
#error "define FASTEMB_ISA_NS before including multivector_kernels.h"
#endif

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "common/thread_pool.h"
#include "multivector/multivector.h"
#include "multivector/multivector_internal.h"
#include "multivector/multivector_math.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

// GCC 12 reports the _mm512_undefined_*() pass-through operands inside its own intrinsics (unpack,
// shuffle, max) as uninitialized; the values are never read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastemb::multivector::FASTEMB_ISA_NS {
namespace {

template <class T>
struct Scratch {
  T* p;
  explicit Scratch(int64_t n) {
    size_t bytes = sizeof(T) * static_cast<size_t>(n > 0 ? n : 1);
    bytes = (bytes + 63) / 64 * 64;
    p = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (!p) throw std::bad_alloc();
  }
  ~Scratch() { std::free(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// ---- the vector type ----------------------------------------------------------------------------
#if defined(__AVX512F__)
constexpr int W = 16;
struct V {
  __m512 v;
};
inline V vzero() { return {_mm512_setzero_ps()}; }
inline V vset1(float a) { return {_mm512_set1_ps(a)}; }
inline V vload(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void vstore(float* p, V a) { _mm512_storeu_ps(p, a.v); }
inline V vfma(V a, V b, V c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline V vmax(V a, V b) { return {_mm512_max_ps(a.v, b.v)}; }
inline V vadd(V a, V b) { return {_mm512_add_ps(a.v, b.v)}; }
inline uint32_t vpos_mask(V a) { return _mm512_cmp_ps_mask(a.v, _mm512_setzero_ps(), _CMP_GT_OQ); }
constexpr int kQV = 2, kNR = 12;  // MaxSim tile: 32 query lanes x 12 document tokens
constexpr int kHV = 4, kMT = 6;   // SimHash tile: 64 hyperplanes x 6 tokens
#elif defined(__AVX2__)
constexpr int W = 8;
struct V {
  __m256 v;
};
inline V vzero() { return {_mm256_setzero_ps()}; }
inline V vset1(float a) { return {_mm256_set1_ps(a)}; }
inline V vload(const float* p) { return {_mm256_loadu_ps(p)}; }
inline void vstore(float* p, V a) { _mm256_storeu_ps(p, a.v); }
inline V vfma(V a, V b, V c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline V vmax(V a, V b) { return {_mm256_max_ps(a.v, b.v)}; }
inline V vadd(V a, V b) { return {_mm256_add_ps(a.v, b.v)}; }
inline uint32_t vpos_mask(V a) {
  return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(a.v, _mm256_setzero_ps(), _CMP_GT_OQ)));
}
constexpr int kQV = 2, kNR = 6;  // 16 query lanes x 6 document tokens (12 accumulators of 16 ymm)
constexpr int kHV = 2, kMT = 6;  // 16 hyperplanes x 6 tokens
#else
constexpr int W = 4;
struct V {
  float f[4];
};
inline V vzero() { return {{0.f, 0.f, 0.f, 0.f}}; }
inline V vset1(float a) { return {{a, a, a, a}}; }
inline V vload(const float* p) { return {{p[0], p[1], p[2], p[3]}}; }
inline void vstore(float* p, V a) {
  for (int l = 0; l < 4; ++l) p[l] = a.f[l];
}
inline V vfma(V a, V b, V c) {
  V r;
  for (int l = 0; l < 4; ++l) r.f[l] = __builtin_fmaf(a.f[l], b.f[l], c.f[l]);
  return r;
}
inline V vmax(V a, V b) {
  V r;
  for (int l = 0; l < 4; ++l) r.f[l] = max_rn(a.f[l], b.f[l]);
  return r;
}
inline V vadd(V a, V b) {
  V r;
  for (int l = 0; l < 4; ++l) r.f[l] = add_rn(a.f[l], b.f[l]);
  return r;
}
inline uint32_t vpos_mask(V a) {
  uint32_t m = 0;
  for (int l = 0; l < 4; ++l) m |= (a.f[l] > 0.f ? 1u : 0u) << l;
  return m;
}
constexpr int kQV = 2, kNR = 4;
constexpr int kHV = 4, kMT = 4;
#endif
constexpr int kP = kQV * W;   // query lanes of a MaxSim panel
constexpr int kHW = kHV * W;  // hyperplanes of a SimHash panel

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Any NaN or inf among n floats.
inline bool any_nonfinite(const float* __restrict p, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  __mmask16 bad = 0;
  for (; i + 16 <= n; i += 16) bad |= _mm512_fpclass_ps_mask(_mm512_loadu_ps(p + i), 0x99);  // NaN, +-inf
  if (bad) return true;
#elif defined(__AVX2__)
  __m256 bad = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(p + i);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(v, v), _mm256_setzero_ps(), _CMP_UNORD_Q));  // inf - inf, NaN
  }
  if (_mm256_movemask_ps(bad)) return true;
#endif
  uint32_t tail = 0;
  for (; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, p + i, 4);
    tail |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return tail != 0;
}

[[noreturn]] void throw_nonfinite(const char* name, int64_t row) {
  throw std::invalid_argument(std::string(name) + ": token row " + std::to_string(row) +
                              " holds NaN or inf (tokens must be finite)");
}

// Rows [r0, r1) of x are contiguous: one pass over them, the row located only on failure.
inline void check_rows_finite(const char* name, const float* x, int64_t dim, int64_t r0, int64_t r1) {
  if (!any_nonfinite(x + r0 * dim, (r1 - r0) * dim)) return;
  for (int64_t r = r0; r < r1; ++r)
    if (any_nonfinite(x + r * dim, dim)) throw_nonfinite(name, r);
}

// =====================================================================================================
// MaxSim
// =====================================================================================================

// m[v] = max(m[v], <query lane, d row r>) for the NR document rows starting at d (row stride dim).
// qp: the packed panel [dim][kP].
template <int NR>
inline void maxsim_tile(const float* __restrict qp, const float* __restrict d, int64_t dim, V* __restrict m) {
  V acc[kQV][NR];
  for (int v = 0; v < kQV; ++v)
    for (int r = 0; r < NR; ++r) acc[v][r] = vzero();
  for (int64_t k = 0; k < dim; ++k) {
    V q[kQV];
    for (int v = 0; v < kQV; ++v) q[v] = vload(qp + k * kP + v * W);
    for (int r = 0; r < NR; ++r) {
      const V b = vset1(d[r * dim + k]);
      for (int v = 0; v < kQV; ++v) acc[v][r] = vfma(q[v], b, acc[v][r]);
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int v = 0; v < kQV; ++v) m[v] = vmax(m[v], acc[v][r]);
}

template <int NR>
inline void maxsim_tail(int rem, const float* qp, const float* d, int64_t dim, V* m) {
  if constexpr (NR > 0) {
    if (rem == NR) return maxsim_tile<NR>(qp, d, dim, m);
    maxsim_tail<NR - 1>(rem, qp, d, dim, m);
  }
}

// Running max over the rows [r0, r1) of d for one packed query panel; out[kP] gets the maxima
// (-inf for an empty set).
inline void maxsim_set(const float* qp, const float* dx, int64_t dim, int64_t r0, int64_t r1, float* out) {
  V m[kQV];
  for (int v = 0; v < kQV; ++v) m[v] = vset1(-__builtin_inff());
  int64_t r = r0;
  for (; r + kNR <= r1; r += kNR) maxsim_tile<kNR>(qp, dx + r * dim, dim, m);
  if (r < r1) maxsim_tail<kNR - 1>(static_cast<int>(r1 - r), qp, dx + r * dim, dim, m);
  for (int v = 0; v < kQV; ++v) vstore(out + v * W, m[v]);
}

// Packs query tokens rows[0..count) (count <= kP) into a panel [dim][kP] (missing lanes 0).
inline void pack_panel(const float* qx, int64_t dim, const int64_t* rows, int64_t count, float* __restrict qp) {
  for (int64_t k = 0; k < dim; ++k)
    for (int l = 0; l < kP; ++l) qp[k * kP + l] = l < count ? qx[rows[l] * dim + k] : 0.f;
}

// Blocks: query sets [qs0, qs1) with their tokens packed in panels starting at panel0; document sets
// [ds0, ds1). maxima [ds1 - ds0][panels * kP].
struct MaxsimPlan {
  const TokenSets* q;
  const TokenSets* d;
  const int64_t* qblocks;  // [nqb + 1] query set boundaries
  const int64_t* qpanel0;  // [nqb + 1] first panel of each block
  const int64_t* dchunks;  // [ndc + 1] document set boundaries
  int64_t nqb = 0, ndc = 0;
  const float* packed = nullptr;  // [total panels][dim][kP]
};

int64_t set_len(const TokenSets& t, int64_t s) { return t.end[s] - t.begin[s]; }

// Packs the query sets of block b (their tokens in set order, then row order) and checks they are finite.
void pack_query_block(const TokenSets& q, int64_t qs0, int64_t qs1, float* panels) {
  int64_t rows[kP];
  int64_t count = 0;
  float* out = panels;
  for (int64_t s = qs0; s < qs1; ++s) {
    check_rows_finite("q", q.x, q.dim, q.begin[s], q.end[s]);
    for (int64_t r = q.begin[s]; r < q.end[s]; ++r) {
      rows[count++] = r;
      if (count == kP) {
        pack_panel(q.x, q.dim, rows, count, out);
        out += q.dim * kP;
        count = 0;
      }
    }
  }
  if (count > 0) pack_panel(q.x, q.dim, rows, count, out);
}

// maxima[(ds - ds0) * lanes + i] for the block's query tokens i and the chunk's document sets.
void block_maxima(const MaxsimPlan& pl, int64_t qb, int64_t dc, float* maxima, int64_t lanes) {
  const TokenSets& d = *pl.d;
  const int64_t dim = d.dim;
  const int64_t ds0 = pl.dchunks[dc], ds1 = pl.dchunks[dc + 1];
  const int64_t p0 = pl.qpanel0[qb], p1 = pl.qpanel0[qb + 1];
  for (int64_t p = p0; p < p1; ++p) {
    const float* qp = pl.packed + p * dim * kP;
    for (int64_t ds = ds0; ds < ds1; ++ds)
      maxsim_set(qp, d.x, dim, d.begin[ds], d.end[ds], maxima + (ds - ds0) * lanes + (p - p0) * kP);
  }
}

// score(qs, ds) from the maxima: the query set's tokens in row order, from 0.0f; 0 for empty sets.
inline float set_score(const float* maxima_ds, int64_t t0, int64_t t1, bool doc_empty) {
  float s = 0.f;
  if (doc_empty) return s;
  for (int64_t t = t0; t < t1; ++t) s = add_rn(s, maxima_ds[t]);
  return s;
}

void check_chunk_finite(const TokenSets& d, int64_t ds0, int64_t ds1) {
  for (int64_t ds = ds0; ds < ds1; ++ds) check_rows_finite("d", d.x, d.dim, d.begin[ds], d.end[ds]);
}

// ---- top-k heaps: root = the worst kept entry ---------------------------------------------------------
inline bool better(float sa, int64_t ia, float sb, int64_t ib) { return sa > sb || (sa == sb && ia < ib); }

struct Heap {
  float* s;
  int64_t* id;
  int64_t size;
  int64_t k;
  void push(float score, int64_t i) {
    if (size < k) {
      int64_t c = size++;
      while (c > 0) {  // sift up: parent worse than the new entry stays above? root = worst
        const int64_t p = (c - 1) / 2;
        if (!better(s[p], id[p], score, i)) break;  // parent is worse or equal: stop
        s[c] = s[p];
        id[c] = id[p];
        c = p;
      }
      s[c] = score;
      id[c] = i;
      return;
    }
    if (!better(score, i, s[0], id[0])) return;
    int64_t c = 0;  // sift down from the root
    for (;;) {
      const int64_t l = 2 * c + 1, r = l + 1;
      if (l >= size) break;
      int64_t w = l;  // the worse child
      if (r < size && better(s[l], id[l], s[r], id[r])) w = r;
      if (!better(score, i, s[w], id[w])) break;
      s[c] = s[w];
      id[c] = id[w];
      c = w;
    }
    s[c] = score;
    id[c] = i;
  }
};

// The query sets of every block, packed once per call ([panels][dim][kP]; every block starts a panel).
struct PackedQueries {
  Scratch<int64_t> panel0;  // [nqb + 1] first panel of each block (declared first: it sizes packed)
  Scratch<float> packed;

  static int64_t count_panels(const TokenSets& q, const BlockPlan& bp, int64_t* panel0) {
    panel0[0] = 0;
    for (int64_t b = 0; b < bp.nqb; ++b) {
      int64_t tokens = 0;
      for (int64_t s = bp.qblocks[b]; s < bp.qblocks[b + 1]; ++s) tokens += set_len(q, s);
      panel0[b + 1] = panel0[b] + (tokens + kP - 1) / kP;
    }
    return panel0[bp.nqb];
  }
  PackedQueries(const TokenSets& q, const BlockPlan& bp)
      : panel0(bp.nqb + 1), packed(count_panels(q, bp, panel0.p) * q.dim * kP) {
    auto pack = [&](int64_t b) {
      pack_query_block(q, bp.qblocks[b], bp.qblocks[b + 1], packed.p + panel0.p[b] * q.dim * kP);
    };
    parallel_for_each(bp.nqb, pack);
  }
  int64_t lanes(int64_t qb) const { return (panel0.p[qb + 1] - panel0.p[qb]) * kP; }
  MaxsimPlan plan(const TokenSets& q, const TokenSets& d, const BlockPlan& bp) const {
    return MaxsimPlan{&q, &d, bp.qblocks, panel0.p, bp.dchunks, bp.nqb, bp.ndc, packed.p};
  }
};

// emit(query set, document set, score) for every query set of block qb and document set in [ds0, ds1), from
// the block's token maxima (block_maxima).
template <class Emit>
void block_scores(const TokenSets& q, const TokenSets& d, const BlockPlan& bp, int64_t qb, int64_t ds0, int64_t ds1,
                  const float* maxima, int64_t lanes, Emit&& emit) {
  int64_t t0 = 0;
  for (int64_t qs = bp.qblocks[qb]; qs < bp.qblocks[qb + 1]; ++qs) {
    const int64_t t1 = t0 + set_len(q, qs);
    for (int64_t ds = ds0; ds < ds1; ++ds)
      emit(qs, ds, set_score(maxima + (ds - ds0) * lanes, t0, t1, set_len(d, ds) == 0));
    t0 = t1;
  }
}

}  // namespace

void maxsim(const TokenSets& q, const TokenSets& d, const BlockPlan& bp, float* out) {
  const PackedQueries pq(q, bp);
  const MaxsimPlan pl = pq.plan(q, d, bp);
  auto task = [&](int64_t t) {
    const int64_t qb = t % bp.nqb, dc = t / bp.nqb;
    const int64_t ds0 = bp.dchunks[dc], ds1 = bp.dchunks[dc + 1];
    if (qb == 0) check_chunk_finite(d, ds0, ds1);
    const int64_t lanes = pq.lanes(qb);
    Scratch<float> maxima((ds1 - ds0) * lanes);
    block_maxima(pl, qb, dc, maxima.p, lanes);
    block_scores(q, d, bp, qb, ds0, ds1, maxima.p, lanes,
                 [&](int64_t qs, int64_t ds, float score) { out[qs * d.n + ds] = score; });
  };
  parallel_for_each(bp.nqb * bp.ndc, task);
}

void maxsim_topk(const TokenSets& q, const TokenSets& d, const BlockPlan& bp, int64_t stripes, int64_t k,
                 float* cand_s, int64_t* cand_id) {
  const PackedQueries pq(q, bp);
  const MaxsimPlan pl = pq.plan(q, d, bp);
  // Task (query block, stripe): the stripe's document chunks in order, one heap per query set, written
  // to cand[stripe][qs][k] (unsorted; size padded with -inf / -1).
  auto task = [&](int64_t t) {
    const int64_t qb = t % bp.nqb, st = t / bp.nqb;
    const int64_t c0 = bp.ndc * st / stripes, c1 = bp.ndc * (st + 1) / stripes;
    const int64_t qs0 = bp.qblocks[qb], qs1 = bp.qblocks[qb + 1];
    const int64_t lanes = pq.lanes(qb);
    int64_t max_sets = 0;
    for (int64_t c = c0; c < c1; ++c) max_sets = max_sets > bp.dchunks[c + 1] - bp.dchunks[c] ? max_sets : bp.dchunks[c + 1] - bp.dchunks[c];
    Scratch<float> maxima(max_sets * lanes);
    const int64_t nqs = qs1 - qs0;
    Scratch<Heap> heaps(nqs);
    for (int64_t i = 0; i < nqs; ++i)
      heaps.p[i] = Heap{cand_s + (st * q.n + qs0 + i) * k, cand_id + (st * q.n + qs0 + i) * k, 0, k};
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t ds0 = bp.dchunks[c], ds1 = bp.dchunks[c + 1];
      if (qb == 0) check_chunk_finite(d, ds0, ds1);
      block_maxima(pl, qb, c, maxima.p, lanes);
      block_scores(q, d, bp, qb, ds0, ds1, maxima.p, lanes,
                   [&](int64_t qs, int64_t ds, float score) { heaps.p[qs - qs0].push(score, ds); });
    }
    for (int64_t i = 0; i < nqs; ++i)
      for (int64_t j = heaps.p[i].size; j < k; ++j) {
        heaps.p[i].s[j] = -__builtin_inff();
        heaps.p[i].id[j] = -1;
      }
  };
  parallel_for_each(bp.nqb * stripes, task);
}

// =====================================================================================================
// MUVERA FDE
// =====================================================================================================
namespace {

// bits of tokens [MT rows from x0] against one hyperplane panel gp [dim][kHW] (NV of its kHV vectors
// used): bit (h0 + v * W + lane) of row t's words.
template <int MT, int NV>
void simhash_tile(const float* __restrict gp, const float* __restrict x0, int64_t dim, uint64_t* __restrict bits,
                  int64_t words, int64_t h0) {
  V acc[MT][NV];
  for (int t = 0; t < MT; ++t)
    for (int v = 0; v < NV; ++v) acc[t][v] = vzero();
  for (int64_t k = 0; k < dim; ++k) {
    V g[NV];
    for (int v = 0; v < NV; ++v) g[v] = vload(gp + k * kHW + v * W);
    for (int t = 0; t < MT; ++t) {
      const V xb = vset1(x0[t * dim + k]);
      for (int v = 0; v < NV; ++v) acc[t][v] = vfma(xb, g[v], acc[t][v]);
    }
  }
  for (int t = 0; t < MT; ++t)
    for (int v = 0; v < NV; ++v) {
      const int64_t h = h0 + v * W;
      bits[t * words + (h >> 6)] |= static_cast<uint64_t>(vpos_mask(acc[t][v])) << (h & 63);
    }
}

using SimhashTileFn = void (*)(const float*, const float*, int64_t, uint64_t*, int64_t, int64_t);

template <int MT>
SimhashTileFn pick_nv(int nv) {
  static_assert(kHV <= 4, "kHV");
  switch (nv) {
    case 1: return simhash_tile<MT, 1>;
    case 2: return simhash_tile<MT, (kHV >= 2 ? 2 : 1)>;
    case 3: return simhash_tile<MT, (kHV >= 3 ? 3 : 1)>;
    default: return simhash_tile<MT, kHV>;
  }
}

template <int MT>
SimhashTileFn pick_tile(int mt, int nv) {
  if constexpr (MT > 1) {
    if (mt < MT) return pick_tile<MT - 1>(mt, nv);
  }
  return pick_nv<MT>(nv);
}

// Bucket id of each token for each repetition: ids[r * n + t].
void bucket_ids(const FdeSpec& s, const float* gp, int64_t hyperplanes, const float* x, int64_t dim, int64_t n,
                uint64_t* bits, int64_t words, uint32_t* ids) {
  const int64_t R = s.repetitions;
  if (s.k_sim == 0) {
    for (int64_t i = 0; i < R * n; ++i) ids[i] = 0;
    return;
  }
  for (int64_t i = 0; i < n * words; ++i) bits[i] = 0;
  const int64_t panels = (hyperplanes + kHW - 1) / kHW;
  for (int64_t t = 0; t < n; t += kMT) {
    const int mt = static_cast<int>(min64(kMT, n - t));
    for (int64_t p = 0; p < panels; ++p) {
      const int nv = static_cast<int>((min64(kHW, hyperplanes - p * kHW) + W - 1) / W);
      pick_tile<kMT>(mt, nv)(gp + p * dim * kHW, x + t * dim, dim, bits + t * words, words, p * kHW);
    }
  }
  const int k = s.k_sim;
  const uint64_t mask = (uint64_t(1) << k) - 1;
  for (int64_t t = 0; t < n; ++t) {
    const uint64_t* b = bits + t * words;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t pos = r * k, w = pos >> 6, sh = pos & 63;
      uint64_t v = b[w] >> sh;
      if (sh + k > 64) v |= b[w + 1] << (64 - sh);
      ids[r * n + t] = static_cast<uint32_t>(v & mask);
    }
  }
}

// row[0..dim) = sum of rows members[0..c) of x (row order, from 0.0f).
void sum_rows(const float* x, int64_t dim, const int32_t* members, int64_t c, float* __restrict row) {
  constexpr int kChunk = 8;  // vectors per register-resident column chunk
  int64_t j = 0;
  for (; j + kChunk * W <= dim; j += kChunk * W) {
    V acc[kChunk];
    for (int u = 0; u < kChunk; ++u) acc[u] = vzero();
    for (int64_t m = 0; m < c; ++m) {
      const float* xr = x + static_cast<int64_t>(members[m]) * dim + j;
      for (int u = 0; u < kChunk; ++u) acc[u] = vadd(acc[u], vload(xr + u * W));
    }
    for (int u = 0; u < kChunk; ++u) vstore(row + j + u * W, acc[u]);
  }
  for (; j + W <= dim; j += W) {
    V acc = vzero();
    for (int64_t m = 0; m < c; ++m) acc = vadd(acc, vload(x + static_cast<int64_t>(members[m]) * dim + j));
    vstore(row + j, acc);
  }
  for (; j < dim; ++j) {
    float acc = 0.f;
    for (int64_t m = 0; m < c; ++m) acc = add_rn(acc, x[static_cast<int64_t>(members[m]) * dim + j]);
    row[j] = acc;
  }
}

// dst[c * ds + r] = src[r * ss + c] for r, c < W.
inline void transpose_block(const float* __restrict src, int64_t ss, float* __restrict dst, int64_t ds) {
#if defined(__AVX512F__)
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ss);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4i + m], 128-bit lane k: column 4k + m of rows 4i .. 4i + 3.
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 v0 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x44), v1 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xEE);
    const __m512 w0 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x44), w1 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xEE);
    _mm512_storeu_ps(dst + m * ds, _mm512_shuffle_f32x4(v0, w0, 0x88));
    _mm512_storeu_ps(dst + (4 + m) * ds, _mm512_shuffle_f32x4(v0, w0, 0xDD));
    _mm512_storeu_ps(dst + (8 + m) * ds, _mm512_shuffle_f32x4(v1, w1, 0x88));
    _mm512_storeu_ps(dst + (12 + m) * ds, _mm512_shuffle_f32x4(v1, w1, 0xDD));
  }
#elif defined(__AVX2__)
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ss);
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4h + m], 128-bit lane k: column 4k + m of rows 4h .. 4h + 3.
  for (int h = 0; h < 2; ++h) {
    r[4 * h] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
    r[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
    r[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
    r[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
  }
  for (int m = 0; m < 4; ++m) {
    _mm256_storeu_ps(dst + m * ds, _mm256_permute2f128_ps(r[m], r[4 + m], 0x20));
    _mm256_storeu_ps(dst + (4 + m) * ds, _mm256_permute2f128_ps(r[m], r[4 + m], 0x31));
  }
#else
  for (int r = 0; r < W; ++r)
    for (int c = 0; c < W; ++c) dst[c * ds + r] = src[r * ss + c];
#endif
}

// dst[c * ds + r] = src[r * ss + c] for r < rows, c < cols (full W x W blocks by transpose_block).
inline void transpose(const float* src, int64_t ss, float* dst, int64_t ds, int64_t rows, int64_t cols) {
  int64_t r0 = 0;
  for (; r0 + W <= rows; r0 += W) {
    int64_t c0 = 0;
    for (; c0 + W <= cols; c0 += W) transpose_block(src + r0 * ss + c0, ss, dst + c0 * ds + r0, ds);
    for (int64_t r = r0; r < r0 + W; ++r)
      for (int64_t c = c0; c < cols; ++c) dst[c * ds + r] = src[r * ss + c];
  }
  for (int64_t r = r0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * ds + r] = src[r * ss + c];
}

// v with its sign flipped when negative = 1 (the sign bit XORed: acc + (-v) is acc - v bit for bit).
inline V vsigned(V v, int32_t negative) {
#if defined(__AVX512F__)
  return {_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v.v), _mm512_set1_epi32(negative << 31)))};
#elif defined(__AVX2__)
  return {_mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(v.v), _mm256_set1_epi32(negative << 31)))};
#else
  if (negative)
    for (int l = 0; l < 4; ++l) v.f[l] = -v.f[l];
  return v;
#endif
}

inline V vdiv(V a, V b) {
#if defined(__AVX512F__)
  return {_mm512_div_ps(a.v, b.v)};
#elif defined(__AVX2__)
  return {_mm256_div_ps(a.v, b.v)};
#else
  V r;
  for (int l = 0; l < 4; ++l) r.f[l] = div_rn(a.f[l], b.f[l]);
  return r;
#endif
}

// Per-task scratch for one set of up to n tokens.
struct FdeScratch {
  uint64_t* bits;    // [n * words]
  uint32_t* ids;     // [R * n]
  int32_t* order;    // [n]
  int32_t* start;    // [nb + 1]
  int32_t* filled;   // [nb] the fill token of each empty bucket (-1: none)
  int32_t* nonempty; // [min(n, nb)] non-empty bucket ids, increasing
  float* srows;      // [W * dim] bucket sums of a group of W buckets (inner projection)
  float* st;         // [(dim + 1) * W] their transpose, then a zero row (the sketch lists' padding)
  float* ot;         // [p * W] the projected group, transposed
  float* raw;        // [raw] when final_dim > 0
};

struct Simhash {
  const float* gp;       // SimHash panels [panels][dim][kHW]
  int64_t hyperplanes;   // R * k_sim
  int64_t words;         // bit words per token
};

// Members of bucket i (after the counting sort; the fill token for an empty bucket, or none).
inline int64_t bucket_members(const FdeScratch& sc, int64_t i, const int32_t** members) {
  const int64_t c = sc.start[i + 1] - sc.start[i];
  *members = sc.order + sc.start[i];
  if (c == 0 && sc.filled[i] >= 0) {
    *members = sc.filled + i;
    return 1;
  }
  return c;
}

void fde_one(const FdeSpec& s, const Simhash& sh, const FdeTables& tb, const float* x, int64_t dim, int64_t n,
             FdeScratch& sc, float* out) {
  const int64_t R = s.repetitions, nb = int64_t(1) << s.k_sim;
  const int64_t p = s.d_proj > 0 ? s.d_proj : dim;
  const int64_t raw_dim = R * nb * p;
  float* fde = s.final_dim > 0 ? sc.raw : out;
  bucket_ids(s, sh.gp, sh.hyperplanes, x, dim, n, sc.bits, sh.words, sc.ids);
  const bool fill = s.document && s.fill_empty && s.k_sim > 0 && n > 0;
  for (int64_t r = 0; r < R; ++r) {
    const uint32_t* id = sc.ids + r * n;
    // Stable counting sort of the tokens by bucket.
    for (int64_t i = 0; i <= nb; ++i) sc.start[i] = 0;
    for (int64_t t = 0; t < n; ++t) ++sc.start[id[t] + 1];
    for (int64_t i = 0; i < nb; ++i) sc.start[i + 1] += sc.start[i];
    for (int64_t t = 0; t < n; ++t) sc.order[sc.start[id[t]]++] = static_cast<int32_t>(t);
    for (int64_t i = nb; i > 0; --i) sc.start[i] = sc.start[i - 1];
    sc.start[0] = 0;
    // Empty buckets of a document: the token nearest in Hamming distance of the bucket ids (ties: the
    // lowest row), i.e. the first member of the nearest non-empty bucket.
    int64_t n_nonempty = 0;
    for (int64_t i = 0; i < nb; ++i) {
      sc.filled[i] = -1;
      if (sc.start[i + 1] > sc.start[i]) sc.nonempty[n_nonempty++] = static_cast<int32_t>(i);
    }
    if (fill && n_nonempty < nb) {
      for (int64_t i = 0; i < nb; ++i) {
        if (sc.start[i + 1] > sc.start[i]) continue;
        int best_d = 64;
        int32_t best_t = 0;
        for (int64_t m = 0; m < n_nonempty; ++m) {
          const int32_t b = sc.nonempty[m];
          const int dist = popcount32(static_cast<uint32_t>(b ^ i));
          const int32_t t = sc.order[sc.start[b]];
          if (dist < best_d || (dist == best_d && t < best_t)) {
            best_d = dist;
            best_t = t;
          }
        }
        sc.filled[i] = best_t;
      }
    }
    float* block = fde + r * nb * p;
    if (s.d_proj == 0) {
      // The bucket sums (rows in order) are the block; documents divide by the count.
      for (int64_t i = 0; i < nb; ++i) {
        const int32_t* members;
        const int64_t c = bucket_members(sc, i, &members);
        float* o = block + i * p;
        if (c == 0) {
          for (int64_t j = 0; j < p; ++j) o[j] = 0.f;
          continue;
        }
        sum_rows(x, dim, members, c, o);
        if (s.document) {
          const float cf = static_cast<float>(c);
          for (int64_t j = 0; j < p; ++j) o[j] = div_rn(o[j], cf);
        }
      }
      continue;
    }
    // Inner count sketch on groups of W buckets: the sums transposed (coordinates x buckets), each
    // column o the signed sum of its coordinates' rows in increasing j (W buckets per vector; every
    // column's list padded to the same length with the zero row, so the loops have a fixed trip
    // count), the division by the counts, then transposed back into the block.
    const int32_t* entries = tb.inner_entries + r * tb.inner_len * p;
    const int64_t len = tb.inner_len;
    for (int64_t g0 = 0; g0 < nb; g0 += W) {
      const int64_t gn = min64(W, nb - g0);
      alignas(64) float counts[W];
      for (int64_t l = 0; l < W; ++l) {
        float* row = sc.srows + l * dim;
        const int32_t* members;
        const int64_t c = l < gn ? bucket_members(sc, g0 + l, &members) : 0;
        counts[l] = c > 0 ? static_cast<float>(c) : 1.f;
        if (c == 0) {
          for (int64_t j = 0; j < dim; ++j) row[j] = 0.f;
        } else {
          sum_rows(x, dim, members, c, row);
        }
      }
      transpose(sc.srows, dim, sc.st, W, W, dim);
      const V cnt = vload(counts);
      for (int64_t o = 0; o < p; ++o) {
        const int32_t* e = entries + o * len;
        V acc = vzero();
        for (int64_t m = 0; m < len; ++m) acc = vadd(acc, vsigned(vload(sc.st + static_cast<int64_t>(e[m] >> 1) * W), e[m] & 1));
        if (s.document) acc = vdiv(acc, cnt);
        vstore(sc.ot + o * W, acc);
      }
      transpose(sc.ot, W, block + g0 * p, p, p, gn);
    }
  }
  if (s.final_dim > 0) {
    for (int64_t j = 0; j < s.final_dim; ++j) out[j] = 0.f;
    for (int64_t i = 0; i < raw_dim; ++i) {
      const int32_t e = tb.final_tab[i];
      const float v = fde[i];
      out[e >> 1] = add_rn(out[e >> 1], (e & 1) ? -v : v);  // = signed_add, without a branch
    }
  }
}

}  // namespace

void muvera_fde(const FdeSpec& s, const TokenSets& x, const int64_t* chunks, int64_t nchunks, const FdeTables& tb,
                float* out) {
  const int64_t dim = x.dim, R = s.repetitions, nb = int64_t(1) << s.k_sim;
  const int64_t hyperplanes = R * s.k_sim;
  const int64_t panels = (hyperplanes + kHW - 1) / kHW;
  const int64_t p = s.d_proj > 0 ? s.d_proj : dim;
  // SimHash signs, packed per panel (padding hyperplanes 0).
  Scratch<float> gp(panels * dim * kHW);
  const uint64_t key = stream_key(s.seed, kStreamSimHash);
  for (int64_t pn = 0; pn < panels; ++pn)
    for (int64_t j = 0; j < dim; ++j)
      for (int64_t l = 0; l < kHW; ++l) {
        const int64_t h = pn * kHW + l;
        gp.p[(pn * dim + j) * kHW + l] =
            h < hyperplanes ? simhash_sign(key, static_cast<uint64_t>(h), static_cast<uint64_t>(dim), static_cast<uint64_t>(j)) : 0.f;
      }
  const Simhash sh{gp.p, hyperplanes, panels * kHW / 64 + 1};
  const int64_t out_dim = fde_dim(s, dim), raw_dim = fde_raw_dim(s, dim);
  auto task = [&](int64_t c) {
    const int64_t s0 = chunks[c], s1 = chunks[c + 1];
    int64_t max_n = 0;
    for (int64_t i = s0; i < s1; ++i) max_n = max_n > set_len(x, i) ? max_n : set_len(x, i);
    Scratch<uint64_t> bits(max_n * sh.words);
    Scratch<uint32_t> ids(R * max_n);
    Scratch<int32_t> order(max_n);
    Scratch<int32_t> start(nb + 1);
    Scratch<int32_t> filled(nb);
    Scratch<int32_t> nonempty(min64(max_n, nb));
    const bool inner = s.d_proj > 0;
    Scratch<float> srows(inner ? W * dim : 1), st(inner ? (dim + 1) * W : 1), ot(inner ? p * W : 1);
    if (inner)
      for (int64_t l = 0; l < W; ++l) st.p[dim * W + l] = 0.f;  // the padding row
    Scratch<float> raw(s.final_dim > 0 ? raw_dim : 1);
    FdeScratch sc{bits.p, ids.p, order.p, start.p, filled.p, nonempty.p, srows.p, st.p, ot.p, raw.p};
    for (int64_t i = s0; i < s1; ++i) {
      const int64_t r0 = x.begin[i], n = set_len(x, i);
      check_rows_finite("x", x.x, dim, r0, r0 + n);
      fde_one(s, sh, tb, x.x + r0 * dim, dim, n, sc, out + i * out_dim);
    }
  };
  parallel_for_each(nchunks, task);
}

}  // namespace fastemb::multivector::FASTEMB_ISA_NS

#pragma GCC diagnostic pop
