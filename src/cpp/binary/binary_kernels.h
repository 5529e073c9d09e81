// Binary-code kernels (Hamming / SDC scores, fused top-k), written once and compiled once per ISA:
// binary_<isa>.cpp defines FASTEMB_ISA_NS and includes this file with that ISA's flags. Everything
// here lives in that namespace or has internal linkage, and no std:: template is instantiated (see
// centroid_kernels.h: the linker could otherwise hand one ISA's code to another's caller).
//
// Scheme: a block of queries is loaded once into 64-bit words (padding bits masked). The corpus
// range is then walked in tiles of kTile docs; each tile is transposed into a word-major buffer
// tile[word * kTile + doc] (masked too), so one broadcast query word meets kTile docs per vector
// op, and every query of the block is scored against the tile while it sits in L1 (the corpus
// streams once per query block). Scoring:
//   hamming, or sdc with bits = 1: XOR-popcount over all words (S = dim - 2 H for sdc);
//   sdc with bits > 1: the spec's AND-popcount form
//     S = 4 sum_{i,k} 2^(2u-i-k) popcnt(Pq_i & Pd_k) - 2 L (sumC_q + sumC_d) + dim L^2,
//   with sumC computed while loading (query block once, doc tile once per query block).
// All integer math is exact (int64 accumulators, int32 results bounded by the dispatcher).
#ifndef FASTEMB_ISA_NS
#error "define FASTEMB_ISA_NS before including binary_kernels.h"
#endif

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "binary/binary.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "binary_kernels.h assumes a little-endian target (word masks)"
#endif

namespace fastemb::binary::FASTEMB_ISA_NS {
namespace {

constexpr int64_t T = kTile;

template <class A>
struct Buf {
  A* p;
  explicit Buf(int64_t n) {
    const size_t bytes = (sizeof(A) * static_cast<size_t>(n > 0 ? n : 1) + 63) / 64 * 64;
    p = static_cast<A*>(std::aligned_alloc(64, bytes));
    if (!p) throw std::bad_alloc();
  }
  ~Buf() { std::free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

inline int popcount64(uint64_t v) { return __builtin_popcountll(v); }

// Geometry of one code row, shared by every load.
struct Geo {
  int bits;
  int64_t nbytes, words;  // words = ceil(nbytes / 8) per plane
  int64_t row_words;      // bits * words
  int64_t tail_bytes;     // bytes in the last word of a plane (1..8)
  uint64_t last_mask;     // valid bits of that last word (little-endian load)
  int64_t dim;
  Mode mode;
  bool and_form;          // sdc with bits > 1
  int64_t L;
};

Geo make_geo(const Problem& p) {
  Geo g;
  g.bits = p.bits;
  g.nbytes = p.nbytes;
  g.words = (p.nbytes + 7) / 8;
  g.row_words = g.words * p.bits;
  g.tail_bytes = p.nbytes - 8 * (g.words - 1);
  const int64_t valid_last_byte = p.dim - 8 * (p.nbytes - 1);  // 1..8 bits, the most significant ones
  const uint64_t last_byte = (0xFFull << (8 - valid_last_byte)) & 0xFFull;
  const int64_t shift = 8 * (g.tail_bytes - 1);
  g.last_mask = (shift > 0 ? (1ull << shift) - 1 : 0ull) | (last_byte << shift);
  g.dim = p.dim;
  g.mode = p.mode;
  g.and_form = p.mode == Mode::sdc && p.bits > 1;
  g.L = (int64_t(1) << p.bits) - 1;
  return g;
}

// Word w of a plane row (never reads past the row; padding bits cleared).
inline uint64_t load_word(const Geo& g, const uint8_t* plane, int64_t w) {
  uint64_t v = 0;
  if (w + 1 < g.words) {
    std::memcpy(&v, plane + 8 * w, 8);
    return v;
  }
  std::memcpy(&v, plane + 8 * w, static_cast<size_t>(g.tail_bytes));
  return v & g.last_mask;
}

// Loads one code row into row_words words; returns sumC = sum_i 2^(u-i) popcnt(P_i).
inline int64_t load_row(const Geo& g, const uint8_t* row, uint64_t* out, int64_t stride) {
  int64_t sumc = 0;
  for (int b = 0; b < g.bits; ++b) {
    const uint8_t* plane = row + b * g.nbytes;
    int64_t pc = 0;
    for (int64_t w = 0; w < g.words; ++w) {
      const uint64_t v = load_word(g, plane, w);
      out[(b * g.words + w) * stride] = v;
      pc += popcount64(v);
    }
    sumc += pc << (g.bits - 1 - b);
  }
  return sumc;
}

// out[j] = sum_{w < nw} popcnt(q[w] OP tile[w * T + j]) for j < T; OP = XOR or AND.
template <bool kXor>
inline void pop_tile(const uint64_t* __restrict q, const uint64_t* __restrict tile, int64_t nw, int64_t* out) {
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
  static_assert(T == 16, "the AVX-512 path holds a tile in two registers");
  __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
  for (int64_t w = 0; w < nw; ++w) {
    const __m512i qv = _mm512_set1_epi64(static_cast<long long>(q[w]));
    __m512i x0 = _mm512_load_si512(tile + w * T), x1 = _mm512_load_si512(tile + w * T + 8);
    if (kXor) {
      x0 = _mm512_xor_si512(qv, x0);
      x1 = _mm512_xor_si512(qv, x1);
    } else {
      x0 = _mm512_and_si512(qv, x0);
      x1 = _mm512_and_si512(qv, x1);
    }
    a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(x0));
    a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(x1));
  }
  _mm512_storeu_si512(out, a0);
  _mm512_storeu_si512(out + 8, a1);
#elif defined(__AVX2__)
  // Nibble popcount with pshufb; byte counts (<= 8 per word) are summed over up to 31 words
  // before vpsadbw widens them, so a byte never overflows.
  static_assert(T == 16, "the AVX2 path holds a tile in four registers");
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                       2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i acc[4] = {zero, zero, zero, zero};
  for (int64_t w0 = 0; w0 < nw; w0 += 31) {
    const int64_t w1 = min_i64(nw, w0 + 31);
    __m256i bytes[4] = {zero, zero, zero, zero};
    for (int64_t w = w0; w < w1; ++w) {
      const __m256i qv = _mm256_set1_epi64x(static_cast<long long>(q[w]));
      for (int v = 0; v < 4; ++v) {
        __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(tile + w * T + 4 * v));
        x = kXor ? _mm256_xor_si256(qv, x) : _mm256_and_si256(qv, x);
        const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(x, low));
        const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), low));
        bytes[v] = _mm256_add_epi8(bytes[v], _mm256_add_epi8(lo, hi));
      }
    }
    for (int v = 0; v < 4; ++v) acc[v] = _mm256_add_epi64(acc[v], _mm256_sad_epu8(bytes[v], zero));
  }
  for (int v = 0; v < 4; ++v) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 4 * v), acc[v]);
#else
  for (int64_t j = 0; j < T; ++j) out[j] = 0;
  for (int64_t w = 0; w < nw; ++w) {
    const uint64_t qw = q[w];
    const uint64_t* t = tile + w * T;
    for (int64_t j = 0; j < T; ++j) out[j] += popcount64(kXor ? (qw ^ t[j]) : (qw & t[j]));
  }
#endif
}

// Scores of one query (words qw, sumC sumcq) against a tile (sumC per doc sumcd) -> sc[T].
inline void tile_scores(const Geo& g, const uint64_t* qw, int64_t sumcq, const uint64_t* tile, const int64_t* sumcd,
                        int64_t* sc) {
  if (!g.and_form) {
    pop_tile<true>(qw, tile, g.row_words, sc);
    if (g.mode == Mode::sdc)
      for (int64_t j = 0; j < T; ++j) sc[j] = g.dim - 2 * sc[j];
    return;
  }
  int64_t acc[T], part[T];
  for (int64_t j = 0; j < T; ++j) acc[j] = 0;
  const int u = g.bits - 1;
  for (int i = 0; i < g.bits; ++i) {
    for (int k = 0; k < g.bits; ++k) {
      pop_tile<false>(qw + i * g.words, tile + k * g.words * T, g.words, part);
      const int sh = 2 * u - i - k;
      for (int64_t j = 0; j < T; ++j) acc[j] += part[j] << sh;
    }
  }
  const int64_t base = g.dim * g.L * g.L - 2 * g.L * sumcq;
  for (int64_t j = 0; j < T; ++j) sc[j] = 4 * acc[j] - 2 * g.L * sumcd[j] + base;
}

// A group of queries against one tile: each tile vector is loaded once for the whole group (the
// per-query loop is bound by loads and broadcasts, not by the popcounts), and the scores are
// compared with each query's heap threshold in registers, so a tile that improves no heap (nearly
// all of them once the heaps fill) costs no scalar work. For query r, bit j of mask[r] is set when
// doc j (< cnt) scores above thr[r]; its score is then in sc[r * T + j] (exactly tile_scores's
// integer). Rows whose mask is 0 leave sc untouched.
//
// Scores in the XOR form. With sign planes s_i = 2 P_i - 1, a level is (2C - L) = sum_i 2^(u-i) s_i,
// so the SDC score is sum_{i,k} 2^(2u-i-k) (dim - 2 popcnt(Pq_i XOR Pd_k)) = dim L^2 - 2 acc with
// acc = sum_{i,k} popcnt(Pq_i XOR Pd_k) << (2u - i - k) (padding bits are 0 in both: XOR 0).
// kPlanes = 1 covers Hamming (every plane against itself, words = all planes) and bits = 1.
constexpr int64_t kQueryGroup = 8;
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
constexpr bool kHaveGroupKernel = true;
// GCC 12 warns falsely about the undefined source operand inside _mm512_sll_epi64.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <int kPlanes>
inline void tile_scores_group(const Geo& g, const uint64_t* qw, const uint64_t* __restrict tile, int64_t cnt,
                              const int64_t* thr, int64_t* sc, uint32_t* mask) {
  const int64_t nw = g.row_words;                            // words per query / doc row
  const int64_t pw = kPlanes == 1 ? g.row_words : g.words;   // words per plane handled as one
  __m512i acc[kQueryGroup][2];
  for (int r = 0; r < kQueryGroup; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  for (int64_t w = 0; w < pw; ++w) {
    __m512i x[kPlanes][2];
#pragma GCC unroll 4
    for (int k = 0; k < kPlanes; ++k) {
      x[k][0] = _mm512_load_si512(tile + (k * pw + w) * T);
      x[k][1] = _mm512_load_si512(tile + (k * pw + w) * T + 8);
    }
#pragma GCC unroll 8
    for (int r = 0; r < kQueryGroup; ++r) {
#pragma GCC unroll 4
      for (int i = 0; i < kPlanes; ++i) {
        const __m512i qv = _mm512_set1_epi64(static_cast<long long>(qw[r * nw + i * pw + w]));
#pragma GCC unroll 4
        for (int k = 0; k < kPlanes; ++k) {
          const int sh = 2 * (kPlanes - 1) - i - k;
          __m512i p0 = _mm512_popcnt_epi64(_mm512_xor_si512(qv, x[k][0]));
          __m512i p1 = _mm512_popcnt_epi64(_mm512_xor_si512(qv, x[k][1]));
          if (sh) {
            p0 = _mm512_sll_epi64(p0, _mm_cvtsi32_si128(sh));
            p1 = _mm512_sll_epi64(p1, _mm_cvtsi32_si128(sh));
          }
          acc[r][0] = _mm512_add_epi64(acc[r][0], p0);
          acc[r][1] = _mm512_add_epi64(acc[r][1], p1);
        }
      }
    }
  }
  const uint32_t valid = cnt >= T ? 0xFFFFu : ((1u << cnt) - 1u);
  const bool sdc = g.mode == Mode::sdc;
  const __m512i base = _mm512_set1_epi64(g.dim * g.L * g.L);  // L = 1 for kPlanes = 1 with bits = 1
  for (int r = 0; r < kQueryGroup; ++r) {
    __m512i s0 = acc[r][0], s1 = acc[r][1];
    if (sdc) {
      s0 = _mm512_sub_epi64(base, _mm512_add_epi64(s0, s0));
      s1 = _mm512_sub_epi64(base, _mm512_add_epi64(s1, s1));
    }
    const __m512i t = _mm512_set1_epi64(thr[r]);
    const uint32_t m =
        (uint32_t(_mm512_cmpgt_epi64_mask(s0, t)) | (uint32_t(_mm512_cmpgt_epi64_mask(s1, t)) << 8)) & valid;
    mask[r] = m;
    if (m) {
      _mm512_storeu_si512(sc + r * T, s0);
      _mm512_storeu_si512(sc + r * T + 8, s1);
    }
  }
}
#pragma GCC diagnostic pop

inline void tile_scores_xor_group(const Geo& g, const uint64_t* qw, const uint64_t* tile, int64_t cnt,
                                  const int64_t* thr, int64_t* sc, uint32_t* mask) {
  if (g.mode == Mode::hamming || g.bits == 1) return tile_scores_group<1>(g, qw, tile, cnt, thr, sc, mask);
  switch (g.bits) {
    case 2: return tile_scores_group<2>(g, qw, tile, cnt, thr, sc, mask);
    case 3: return tile_scores_group<3>(g, qw, tile, cnt, thr, sc, mask);
    default: return tile_scores_group<4>(g, qw, tile, cnt, thr, sc, mask);
  }
}
#else
constexpr bool kHaveGroupKernel = false;
inline void tile_scores_xor_group(const Geo&, const uint64_t*, const uint64_t*, int64_t, const int64_t*, int64_t*,
                                  uint32_t*) {}
#endif

// Loads docs [t0, t0 + cnt) into the word-major tile (missing docs are zero) and their sumC.
inline void load_tile(const Geo& g, const uint8_t* d, int64_t t0, int64_t cnt, uint64_t* tile, int64_t* sumcd) {
  const int64_t row_bytes = g.bits * g.nbytes;
  for (int64_t j = 0; j < T; ++j) {
    if (j < cnt) {
      sumcd[j] = load_row(g, d + (t0 + j) * row_bytes, tile + j, T);
    } else {
      sumcd[j] = 0;
      for (int64_t w = 0; w < g.row_words; ++w) tile[w * T + j] = 0;
    }
  }
}

// Loads queries [q0, q1): words [nq_blk, row_words], sumC [nq_blk].
inline void load_queries(const Geo& g, const uint8_t* q, int64_t q0, int64_t q1, uint64_t* qw, int64_t* sumcq) {
  const int64_t row_bytes = g.bits * g.nbytes;
  for (int64_t i = q0; i < q1; ++i) sumcq[i - q0] = load_row(g, q + i * row_bytes, qw + (i - q0) * g.row_words, 1);
}

// Few queries, XOR form (Hamming, or sdc with bits = 1): each doc row is scored where it lies.
// Transposing rows into a tile costs more than the scoring when it serves one or two queries
// (1 query x 1M x 1024-bit codes: 9.8 -> 4.8 ms). The AND form (bits > 1) keeps the tile path,
// whose vector popcounts win even for one query. Same integers as tile_scores.
constexpr int64_t kDirectMaxQueries = 2;

inline int64_t xor_score_direct(const Geo& g, const uint64_t* __restrict qw, const uint8_t* __restrict row) {
  // Words read as whole 8-byte loads: all of them when the last word has no padding bits.
  const int64_t full = (g.tail_bytes == 8 && g.last_mask == ~0ull) ? g.words : g.words - 1;
  int64_t h = 0;
  for (int b = 0; b < g.bits; ++b) {
    const uint8_t* plane = row + b * g.nbytes;
    const uint64_t* q = qw + b * g.words;
    int64_t w = 0;
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
    __m512i acc = _mm512_setzero_si512();
    for (; w + 8 <= full; w += 8) {
      const __m512i x = _mm512_xor_si512(_mm512_loadu_si512(q + w), _mm512_loadu_si512(plane + 8 * w));
      acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
    }
    alignas(64) int64_t lanes[8];  // (GCC 12 warns falsely inside _mm512_reduce_add_epi64)
    _mm512_store_si512(lanes, acc);
    for (int l = 0; l < 8; ++l) h += lanes[l];
#endif
    for (; w < full; ++w) {
      uint64_t v;
      std::memcpy(&v, plane + 8 * w, 8);
      h += popcount64(q[w] ^ v);
    }
    if (full < g.words) h += popcount64(q[g.words - 1] ^ load_word(g, plane, g.words - 1));  // padding masked
  }
  return g.mode == Mode::sdc ? g.dim - 2 * h : h;
}

// ---- top-k heaps: the worst kept entry on top (lowest score; among equal scores the highest id).
inline bool worse(int32_t sa, int64_t ia, int32_t sb, int64_t ib) { return sa < sb || (sa == sb && ia > ib); }

inline void heap_push(int32_t* hs, int64_t* hi, int64_t n, int32_t s, int64_t id) {
  int64_t i = n;
  while (i > 0) {
    const int64_t parent = (i - 1) / 2;
    if (!worse(s, id, hs[parent], hi[parent])) break;
    hs[i] = hs[parent];
    hi[i] = hi[parent];
    i = parent;
  }
  hs[i] = s;
  hi[i] = id;
}

inline void heap_replace_top(int32_t* hs, int64_t* hi, int64_t n, int32_t s, int64_t id) {
  int64_t i = 0;
  for (;;) {
    const int64_t l = 2 * i + 1;
    if (l >= n) break;
    int64_t c = l;
    if (l + 1 < n && worse(hs[l + 1], hi[l + 1], hs[l], hi[l])) c = l + 1;
    if (!worse(hs[c], hi[c], s, id)) break;
    hs[i] = hs[c];
    hi[i] = hi[c];
    i = c;
  }
  hs[i] = s;
  hi[i] = id;
}

}  // namespace

// out[(i - q0) * ld + (j - d0)] = score(i, j) for queries [q0, q1) and docs [d0, d1).
void score_block(const Problem& p, int64_t q0, int64_t q1, int64_t d0, int64_t d1, int32_t* out, int64_t ld) {
  const Geo g = make_geo(p);
  const int64_t nqb = q1 - q0;
  if (nqb <= 0 || d1 <= d0) return;
  Buf<uint64_t> qw(nqb * g.row_words), tile(g.row_words * T);
  Buf<int64_t> sumcq(nqb);
  int64_t sumcd[T], sc[T];
  load_queries(g, p.q, q0, q1, qw.p, sumcq.p);
  for (int64_t t0 = d0; t0 < d1; t0 += T) {
    const int64_t cnt = min_i64(T, d1 - t0);
    load_tile(g, p.d, t0, cnt, tile.p, sumcd);
    for (int64_t i = 0; i < nqb; ++i) {
      tile_scores(g, qw.p + i * g.row_words, sumcq.p[i], tile.p, sumcd, sc);
      int32_t* o = out + i * ld + (t0 - d0);
      for (int64_t j = 0; j < cnt; ++j) o[j] = static_cast<int32_t>(sc[j]);
    }
  }
}

// Keeps the best k (k >= 1) of docs [d0, d1) for each query of [q0, q1) in heaps: query i owns
// hs/hi[(i - q0) * k, + k) with hn[i - q0] entries (the caller zeroes hn). Docs are visited in
// increasing id, so a doc only enters when its score beats the worst kept one strictly.
void topk_block(const Problem& p, int64_t q0, int64_t q1, int64_t d0, int64_t d1, int64_t k, int32_t* hs, int64_t* hi,
                int64_t* hn) {
  const Geo g = make_geo(p);
  const int64_t nqb = q1 - q0;
  if (nqb <= 0 || d1 <= d0) return;
  Buf<uint64_t> qw(nqb * g.row_words), tile(g.row_words * T);
  Buf<int64_t> sumcq(nqb);
  int64_t sumcd[T], sc[T];
  load_queries(g, p.q, q0, q1, qw.p, sumcq.p);
  if (nqb <= kDirectMaxQueries && !g.and_form) {
    const int64_t row_bytes = g.bits * g.nbytes;
    for (int64_t i = 0; i < nqb; ++i) {
      int32_t* s = hs + i * k;
      int64_t* id = hi + i * k;
      int64_t n = hn[i];
      for (int64_t j = d0; j < d1; ++j) {
        const int32_t v = static_cast<int32_t>(xor_score_direct(g, qw.p + i * g.row_words, p.d + j * row_bytes));
        if (n < k) {
          heap_push(s, id, n, v, j);
          ++n;
        } else if (v > s[0]) {
          heap_replace_top(s, id, n, v, j);
        }
      }
      hn[i] = n;
    }
    return;
  }
  for (int64_t t0 = d0; t0 < d1; t0 += T) {
    const int64_t cnt = min_i64(T, d1 - t0);
    load_tile(g, p.d, t0, cnt, tile.p, sumcd);
    // Threshold of query i: a full heap admits only scores above its worst (equal scores lose:
    // higher id); a heap that is not full admits everything.
    auto threshold = [&](int64_t i) { return hn[i] < k ? INT64_MIN : static_cast<int64_t>(hs[i * k]); };
    // Offers the scores of the docs in `candidates` (bit j = doc t0 + j, increasing) to query i.
    auto offer = [&](int64_t i, const int64_t* scores, uint32_t candidates) {
      int32_t* s = hs + i * k;
      int64_t* id = hi + i * k;
      int64_t n = hn[i];
      while (candidates) {
        const int j = __builtin_ctz(candidates);
        candidates &= candidates - 1;
        const int32_t v = static_cast<int32_t>(scores[j]);
        if (n < k) {
          heap_push(s, id, n, v, t0 + j);
          ++n;
        } else if (v > s[0]) {
          heap_replace_top(s, id, n, v, t0 + j);
        }
      }
      hn[i] = n;
    };
    int64_t i = 0;
    if (kHaveGroupKernel) {
      int64_t scg[kQueryGroup * T], thr[kQueryGroup];
      uint32_t mask[kQueryGroup];
      for (; i + kQueryGroup <= nqb; i += kQueryGroup) {
        for (int r = 0; r < kQueryGroup; ++r) thr[r] = threshold(i + r);
        tile_scores_xor_group(g, qw.p + i * g.row_words, tile.p, cnt, thr, scg, mask);
        for (int r = 0; r < kQueryGroup; ++r)
          if (mask[r]) offer(i + r, scg + r * T, mask[r]);
      }
    }
    for (; i < nqb; ++i) {
      tile_scores(g, qw.p + i * g.row_words, sumcq.p[i], tile.p, sumcd, sc);
      const int64_t thr = threshold(i);
      uint32_t candidates = 0;
      for (int64_t j = 0; j < cnt; ++j) candidates |= uint32_t(sc[j] > thr) << j;
      if (candidates) offer(i, sc, candidates);
    }
  }
}

}  // namespace fastemb::binary::FASTEMB_ISA_NS
