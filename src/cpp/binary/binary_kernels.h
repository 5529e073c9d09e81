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
// The avx2 variant's top-k uses table kernels of its own instead (byte-major tiles, per-query
// nibble tables, 3-query groups: see "AVX2 group top-k" below); the avx512 one, query-group tile
// kernels with vpopcntq (tile_scores_group; sdc with bits 2-3: the fused form of
// tile_scores_sdc_group, B + B(B-1)/2 popcounts per plane word instead of B^2), and the table
// kernels for sdc with bits = 4 (chosen per bit count by measurement).
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
#if defined(FASTEMB_ARM_SIMD)  // ARM64 neon / dotprod variants (CMakeLists.txt)
#include <arm_neon.h>
#endif

#include "binary/binary.h"
#include "binary/binary_math.h"

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
  if (g.tail_bytes == 8)
    std::memcpy(&v, plane + 8 * w, 8);  // a fixed size is one load (a variable one calls memcpy)
  else
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

#if defined(FASTEMB_ARM_SIMD)
// ---- ARM64 NEON pop_tile: vcntq_u8 byte counts of (q OP tile), a tile word (16 docs) in 8
// q-registers of 2 docs each; byte counts (<= 8 per word) summed over up to 31 words, then widened
// per doc (64-bit lane): dotprod: udot with ones (4 bytes -> u32) + vpadalq_u32; neon: vpaddlq
// u8 -> u16 -> u32 + vpadalq_u32. Exact integers, the same as the serial loop.
template <bool kXor>
inline void pop_tile_neon(const uint64_t* __restrict q, const uint64_t* __restrict tile, int64_t nw, int64_t* out) {
  static_assert(T == 16, "the NEON path holds a tile word in eight registers");
  uint64x2_t acc[8];
  for (int v = 0; v < 8; ++v) acc[v] = vdupq_n_u64(0);
  for (int64_t w0 = 0; w0 < nw; w0 += 31) {
    const int64_t w1 = min_i64(nw, w0 + 31);
    uint8x16_t bytes[8];
    for (int v = 0; v < 8; ++v) bytes[v] = vdupq_n_u8(0);
    for (int64_t w = w0; w < w1; ++w) {
      const uint64x2_t qv = vdupq_n_u64(q[w]);
      for (int v = 0; v < 8; ++v) {
        const uint64x2_t x = vld1q_u64(tile + w * T + 2 * v);
        const uint64x2_t y = kXor ? veorq_u64(qv, x) : vandq_u64(qv, x);
        bytes[v] = vaddq_u8(bytes[v], vcntq_u8(vreinterpretq_u8_u64(y)));
      }
    }
    for (int v = 0; v < 8; ++v) {
#if defined(__ARM_FEATURE_DOTPROD)
      acc[v] = vpadalq_u32(acc[v], vdotq_u32(vdupq_n_u32(0), bytes[v], vdupq_n_u8(1)));
#else
      acc[v] = vpadalq_u32(acc[v], vpaddlq_u16(vpaddlq_u8(bytes[v])));
#endif
    }
  }
  for (int v = 0; v < 8; ++v) vst1q_s64(out + 2 * v, vreinterpretq_s64_u64(acc[v]));
}
#endif

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
#elif defined(FASTEMB_ARM_SIMD)
  pop_tile_neon<kXor>(q, tile, nw, out);
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
  // Through memory on purpose: read from registers by the epilogue, the accumulators made GCC 12 copy
  // all 16 of them (vmovdqa64) in every iteration of the loop above (one thread, 256 q x 200k docs:
  // 256 bits 21.7 -> 21.1 ms, 1024 bits 60 -> 59 ms with the fixed-size load_word memcpy).
  alignas(64) int64_t sums[kQueryGroup][2][8];
#pragma GCC unroll 8
  for (int r = 0; r < kQueryGroup; ++r) {
    _mm512_store_si512(sums[r][0], acc[r][0]);
    _mm512_store_si512(sums[r][1], acc[r][1]);
  }
  const uint32_t valid = cnt >= T ? 0xFFFFu : ((1u << cnt) - 1u);
  const bool sdc = g.mode == Mode::sdc;
  const __m512i base = _mm512_set1_epi64(g.dim * g.L * g.L);  // L = 1 for kPlanes = 1 with bits = 1
  for (int r = 0; r < kQueryGroup; ++r) {
    __m512i s0 = _mm512_load_si512(sums[r][0]), s1 = _mm512_load_si512(sums[r][1]);
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

// ---- Multi-bit sdc (bits = B > 1) at close to 1-bit cost: B + B(B-1)/2 popcounts per plane word
// instead of B^2, accumulated per weight in registers and combined once per row.
//
// The XOR form needs wx = sum_{i,k} 2^(2u-i-k) popcnt(Pq_i ^ Pd_k): B^2 popcounts. Each cross pair
// (i < k) appears twice with the same weight, and per bit, with X = q_k ^ d_k (a diagonal term),
// z = q_i ^ q_k (query only) and e = d_i ^ d_k (doc only):
//   (q_i ^ d_k) + (q_k ^ d_i) = (z ^ X) + (e ^ X) = 2 T(z, e, X) - z + e,
//   T(z, e, X) = 1 for (z, e, X) in {001, 100, 101, 110}    (vpternlogq immediate 0x72; T(0,0,0) = 0).
// So one ternlog + one popcount replace two xor + popcount, and
//   wx = sum_i 2^(2u-2i) pc(X_ii) + sum_{i<k} 2^(2u-i-k+1) pc(T_ik) + E_d - Z_q,
//   E_d = sum_{i<k} 2^(2u-i-k) pc(e_ik) (per doc, once per tile), Z_q the same of z_ik (per query).
// Padding bits are 0 in every plane, so X, z, e and T are 0 there and add nothing. All exact.
// (No boolean decomposition does better at B = 2: an exhaustive search finds no exact form with
// two popcounts per dimension, whatever row terms are added.)
// Weights: per distinct exponent one accumulator per (query, doc vector); queries are scored in
// sub-groups of kSdcSub<B> to keep the accumulators in the 32 zmm registers.
// (GCC 12 warns falsely about the undefined source operand inside _mm512_slli_epi64.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <int B>
constexpr int sdc_pairs() { return B * (B - 1) / 2; }
constexpr int sdc_diag_exp(int B, int i) { return 2 * (B - 1) - 2 * i; }
constexpr int sdc_cross_exp(int B, int i, int k) { return 2 * (B - 1) - i - k + 1; }
constexpr bool sdc_exp_used(int B, int e) {
  for (int i = 0; i < B; ++i) {
    if (sdc_diag_exp(B, i) == e) return true;
    for (int k = i + 1; k < B; ++k)
      if (sdc_cross_exp(B, i, k) == e) return true;
  }
  return false;
}
// Queries per sub-group. One thread, 128 queries x 50k docs, ns per pair, sub-groups of (B=2, B=3, B=4):
// (2, 1, 1) 1.95 / 2.10 / 3.30; (4, 2, 1) 1.88 / 2.07 / 3.31; (4, 2, 2) 1.90 / 2.12 / -.
template <int B>
constexpr int kSdcSub = B == 2 ? 4 : 2;

// Query side of the fused form: z planes qz[(r * P + p) * words + w] and Z_q, for rows [0, n) of qw.
inline void sdc_query_side(const Geo& g, const uint64_t* qw, int64_t n, uint64_t* qz, int64_t* zq) {
  const int B = g.bits, P = B * (B - 1) / 2;
  for (int64_t r = 0; r < n; ++r) {
    int64_t z = 0;
    int p = 0;
    for (int i = 0; i < B; ++i)
      for (int k = i + 1; k < B; ++k, ++p) {
        int64_t pc = 0;
        for (int64_t w = 0; w < g.words; ++w) {
          const uint64_t v = qw[r * g.row_words + i * g.words + w] ^ qw[r * g.row_words + k * g.words + w];
          qz[(r * P + p) * g.words + w] = v;
          pc += popcount64(v);
        }
        z += pc << (2 * (B - 1) - i - k);
      }
    zq[r] = z;
  }
}

// Doc side: e planes et[(p * words + w) * T + j] of a loaded tile and E_d (ed[T]).
inline void sdc_tile_side(const Geo& g, const uint64_t* tile, uint64_t* et, int64_t* ed) {
  const int B = g.bits;
  for (int64_t j = 0; j < T; ++j) ed[j] = 0;
  int p = 0;
  for (int i = 0; i < B; ++i)
    for (int k = i + 1; k < B; ++k, ++p) {
      const int sh = 2 * (B - 1) - i - k;
      for (int64_t w = 0; w < g.words; ++w) {
        const uint64_t* a = tile + (i * g.words + w) * T;
        const uint64_t* b = tile + (k * g.words + w) * T;
        uint64_t* o = et + (p * g.words + w) * T;
        for (int64_t j = 0; j < T; ++j) {
          o[j] = a[j] ^ b[j];
          ed[j] += int64_t(popcount64(o[j])) << sh;
        }
      }
    }
}

// wx of QS queries (rows of qw / qz) against the tile, without E_d - Z_q: out[r][v], docs 8 v ..
template <int B, int QS>
__attribute__((always_inline)) inline void sdc_sub(const uint64_t* qw, int64_t nw, const uint64_t* qz,
                                                   const uint64_t* __restrict tile, const uint64_t* __restrict et,
                                                   int64_t pw, __m512i (*out)[2]) {
  constexpr int P = sdc_pairs<B>();
  constexpr int NE = 2 * (B - 1) + 2;
  __m512i acc[QS][2][NE];
#pragma GCC unroll 4
  for (int r = 0; r < QS; ++r)
#pragma GCC unroll 8
    for (int e = 0; e < NE; ++e) acc[r][0][e] = acc[r][1][e] = _mm512_setzero_si512();
  for (int64_t w = 0; w < pw; ++w) {
#pragma GCC unroll 4
    for (int r = 0; r < QS; ++r) {
      __m512i X[B][2];
#pragma GCC unroll 4
      for (int i = 0; i < B; ++i) {
        const __m512i qv = _mm512_set1_epi64(static_cast<long long>(qw[r * nw + i * pw + w]));
#pragma GCC unroll 2
        for (int v = 0; v < 2; ++v) {
          X[i][v] = _mm512_xor_si512(qv, _mm512_load_si512(tile + (i * pw + w) * T + 8 * v));
          const int e = sdc_diag_exp(B, i);
          acc[r][v][e] = _mm512_add_epi64(acc[r][v][e], _mm512_popcnt_epi64(X[i][v]));
        }
      }
      int p = 0;
#pragma GCC unroll 4
      for (int i = 0; i < B; ++i)
#pragma GCC unroll 4
        for (int k = i + 1; k < B; ++k, ++p) {
          const __m512i zv = _mm512_set1_epi64(static_cast<long long>(qz[(r * P + p) * pw + w]));
#pragma GCC unroll 2
          for (int v = 0; v < 2; ++v) {
            const __m512i ev = _mm512_load_si512(et + (p * pw + w) * T + 8 * v);
            const __m512i t = _mm512_ternarylogic_epi64(zv, ev, X[k][v], 0x72);
            const int e = sdc_cross_exp(B, i, k);
            acc[r][v][e] = _mm512_add_epi64(acc[r][v][e], _mm512_popcnt_epi64(t));
          }
        }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < QS; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < 2; ++v) {
      __m512i s = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int e = 0; e < NE; ++e)
        if (sdc_exp_used(B, e))
          s = _mm512_add_epi64(s, e ? _mm512_slli_epi64(acc[r][v][e], static_cast<unsigned>(e)) : acc[r][v][e]);
      out[r][v] = s;
    }
}

// Scores s0 (docs 0-7) / s1 (docs 8-15) of one query: *mask = docs (of `valid`) above thr, and the
// scores stored to sc[16] when there is any.
__attribute__((always_inline)) inline void emit_group_row(__m512i s0, __m512i s1, int64_t thr, uint32_t valid,
                                                          int64_t* sc, uint32_t* mask) {
  const __m512i t = _mm512_set1_epi64(thr);
  const uint32_t m =
      (uint32_t(_mm512_cmpgt_epi64_mask(s0, t)) | (uint32_t(_mm512_cmpgt_epi64_mask(s1, t)) << 8)) & valid;
  *mask = m;
  if (m) {
    _mm512_storeu_si512(sc, s0);
    _mm512_storeu_si512(sc + 8, s1);
  }
}

// The group kernel's contract (tile_scores_group: 8 queries, thresholds, masks, sc) for sdc with
// bits = B > 1 in the fused form. qz / zq: sdc_query_side of the group's rows; et / ed: sdc_tile_side.
template <int B>
__attribute__((noinline)) void tile_scores_sdc_group(const Geo& g, const uint64_t* qw, const uint64_t* qz,
                                                     const int64_t* zq, const uint64_t* tile, const uint64_t* et,
                                                     const int64_t* ed, int64_t cnt, const int64_t* thr, int64_t* sc,
                                                     uint32_t* mask) {
  constexpr int QS = kSdcSub<B>;
  static_assert(kQueryGroup % QS == 0, "sub-groups split the query group");
  constexpr int P = sdc_pairs<B>();
  const int64_t pw = g.words;
  const uint32_t valid = cnt >= T ? 0xFFFFu : ((1u << cnt) - 1u);
  const __m512i top = _mm512_set1_epi64(g.dim * g.L * g.L);
  const __m512i ed0 = _mm512_loadu_si512(ed), ed1 = _mm512_loadu_si512(ed + 8);
  for (int r0 = 0; r0 < kQueryGroup; r0 += QS) {
    __m512i wx[QS][2];
    sdc_sub<B, QS>(qw + r0 * g.row_words, g.row_words, qz + r0 * P * pw, tile, et, pw, wx);
#pragma GCC unroll 4
    for (int rr = 0; rr < QS; ++rr) {
      const int r = r0 + rr;
      const __m512i zv = _mm512_set1_epi64(zq[r]);
      // S = dim L^2 - 2 (wx + E_d - Z_q)
      const __m512i w0 = _mm512_sub_epi64(_mm512_add_epi64(wx[rr][0], ed0), zv);
      const __m512i w1 = _mm512_sub_epi64(_mm512_add_epi64(wx[rr][1], ed1), zv);
      emit_group_row(_mm512_sub_epi64(top, _mm512_add_epi64(w0, w0)), _mm512_sub_epi64(top, _mm512_add_epi64(w1, w1)),
                     thr[r], valid, sc + r * T, mask + r);
    }
  }
}

inline void tile_scores_sdc_dispatch(const Geo& g, const uint64_t* qw, const uint64_t* qz, const int64_t* zq,
                                     const uint64_t* tile, const uint64_t* et, const int64_t* ed, int64_t cnt,
                                     const int64_t* thr, int64_t* sc, uint32_t* mask) {
  switch (g.bits) {
    case 2: return tile_scores_sdc_group<2>(g, qw, qz, zq, tile, et, ed, cnt, thr, sc, mask);
    case 3: return tile_scores_sdc_group<3>(g, qw, qz, zq, tile, et, ed, cnt, thr, sc, mask);
    default: return tile_scores_sdc_group<4>(g, qw, qz, zq, tile, et, ed, cnt, thr, sc, mask);
  }
}
#pragma GCC diagnostic pop
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

// Few queries: each doc row is scored where it lies, in the XOR form (binary_math.h): Hamming and
// sdc with bits = 1 compare each plane with itself; sdc with bits > 1 takes the weighted sum over
// plane pairs. Transposing rows into a tile costs more than the scoring when it serves one or two
// queries (1 query x 1M x 1024-bit codes: 9.8 -> 4.8 ms; sdc bits = 2 on 512 dims ~32 -> 5.8 ms,
// one thread). Same integers as tile_scores.
constexpr int64_t kDirectMaxQueries = 2;

#if !defined(__AVX2__)
// popcnt(q ^ d) over one plane: q = the query plane's words (padding cleared), plane = the doc's.
inline int64_t plane_xor_popcount(const Geo& g, const uint64_t* __restrict q, const uint8_t* __restrict plane) {
  // Words read as whole 8-byte loads: all of them when the last word has no padding bits.
  const int64_t full = (g.tail_bytes == 8 && g.last_mask == ~0ull) ? g.words : g.words - 1;
  int64_t h = 0;
  for (int64_t w = 0; w < full; ++w) {
    uint64_t v;
    std::memcpy(&v, plane + 8 * w, 8);
    h += popcount64(q[w] ^ v);
  }
  if (full < g.words) h += popcount64(q[g.words - 1] ^ load_word(g, plane, g.words - 1));  // padding masked
  return h;
}

inline int64_t xor_score_direct(const Geo& g, const uint64_t* __restrict qw, const uint8_t* __restrict row) {
  if (!g.and_form) {  // Hamming (each plane against itself) or sdc with bits = 1
    int64_t h = 0;
    for (int b = 0; b < g.bits; ++b) h += plane_xor_popcount(g, qw + b * g.words, row + b * g.nbytes);
    return g.mode == Mode::sdc ? g.dim - 2 * h : h;
  }
  int64_t wx = 0;  // the doc's planes are read bits times each, from L1 after the first
  for (int i = 0; i < g.bits; ++i)
    for (int k = 0; k < g.bits; ++k)
      wx += plane_xor_popcount(g, qw + i * g.words, row + k * g.nbytes) << pair_shift(g.bits, i, k);
  return sdc_from_xor(g.dim, g.bits, wx);
}
#else  // avx2 and avx512
// GCC 12 warns falsely about undefined source operands inside the AVX-512 shift / extract intrinsics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// On x86 in vectors: every plane is read as kDirectChunk-byte chunks (whole loads, ANDed with the
// chunk's valid-bit mask: zero past nbytes, padding bits cleared); the query's chunks are masked
// once. Pair popcounts go into one accumulator per weight 2^s (s = 2u - i - k), shifted once per
// row, and one horizontal sum per row. (A word loop per plane pair does not vectorize planes shorter
// than a vector, and its per-pair horizontal sums made even the 1-bit scan compute-bound: 1 query x
// 1M x 1024 bits, AVX2 with scalar popcnt 4.7 ms, where the read floor is 3.4 ms.)
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
constexpr int64_t kDirectChunk = 64;
#else
constexpr int64_t kDirectChunk = 32;
#endif

struct DirectCodes {
  int64_t nbytes, nch, read;  // chunks per plane; bytes a row's loads span ((bits-1) nbytes + nch chunks)
  Buf<uint8_t> q, m;          // q: [queries][bits][nch][chunk] masked query planes; m: [nch][chunk] masks
  DirectCodes(const Geo& g, const uint8_t* qrows, int64_t q0, int64_t q1)
      : nbytes(g.nbytes), nch((g.nbytes + kDirectChunk - 1) / kDirectChunk),
        read((g.bits - 1) * g.nbytes + nch * kDirectChunk), q((q1 - q0) * g.bits * nch * kDirectChunk),
        m(nch * kDirectChunk) {
    const unsigned last = (0xFFu << (8 - (g.dim - 8 * (g.nbytes - 1)))) & 0xFFu;
    for (int64_t b = 0; b < nch * kDirectChunk; ++b)
      m.p[b] = b < g.nbytes - 1 ? 0xFF : b == g.nbytes - 1 ? static_cast<uint8_t>(last) : 0;
    const int64_t R = g.bits * g.nbytes, plane_bytes = nch * kDirectChunk;
    for (int64_t i = q0; i < q1; ++i)
      for (int pl = 0; pl < g.bits; ++pl) {
        uint8_t* o = q.p + ((i - q0) * g.bits + pl) * plane_bytes;
        const uint8_t* src = qrows + i * R + pl * g.nbytes;
        for (int64_t b = 0; b < plane_bytes; ++b) o[b] = b < g.nbytes ? static_cast<uint8_t>(src[b] & m.p[b]) : 0;
      }
  }
};

// The XOR sum of one doc row (its loads may read up to `read` bytes from `row`) against query qi:
// kPairs, all B x B plane pairs weighted by 2^(2u-i-k) (sdc, bits = B > 1); otherwise each of the B
// planes against itself, weight 1 (Hamming with B planes, or sdc with bits = 1).
template <int B, bool kPairs>
inline int64_t direct_row(const DirectCodes& ds, int64_t qi, const uint8_t* __restrict row) {
  constexpr int S = kPairs ? 2 * B - 1 : 1;  // accumulators: weights 2^0 .. 2^(2u), or one
  const uint8_t* qb = ds.q.p + qi * B * ds.nch * kDirectChunk;
  auto slot = [](int i, int k) { return kPairs ? 2 * (B - 1) - i - k : 0; };
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
  __m512i acc[S];
#pragma GCC unroll 8
  for (int s = 0; s < S; ++s) acc[s] = _mm512_setzero_si512();
  for (int64_t c = 0; c < ds.nch; ++c) {
    const __m512i mk = _mm512_load_si512(ds.m.p + c * kDirectChunk);
#pragma GCC unroll 4
    for (int k = 0; k < B; ++k) {
      const __m512i d = _mm512_loadu_si512(row + k * ds.nbytes + c * kDirectChunk);
#pragma GCC unroll 4
      for (int i = kPairs ? 0 : k; i < (kPairs ? B : k + 1); ++i) {
        const __m512i qv = _mm512_load_si512(qb + (i * ds.nch + c) * kDirectChunk);
        const __m512i x = _mm512_ternarylogic_epi64(qv, d, mk, 0x28);  // (q ^ d) & mask
        acc[slot(i, k)] = _mm512_add_epi64(acc[slot(i, k)], _mm512_popcnt_epi64(x));
      }
    }
  }
  __m512i t = acc[0];
#pragma GCC unroll 8
  for (int s = 1; s < S; ++s) t = _mm512_add_epi64(t, _mm512_slli_epi64(acc[s], s));
  const __m256i h4 = _mm256_add_epi64(_mm512_castsi512_si256(t), _mm512_extracti64x4_epi64(t, 1));
#else
  // Nibble-LUT popcounts; a chunk's byte counts (<= B * 8 per weight) go to 64-bit sums (vpsadbw).
  // (Deferring the vpsadbw over several chunks made the 1-bit scan slower: 6.4 -> 8.2 ms, 1 thread.)
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                       2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
  __m256i acc[S];
#pragma GCC unroll 8
  for (int s = 0; s < S; ++s) acc[s] = zero;
  for (int64_t c = 0; c < ds.nch; ++c) {
    const __m256i mk = _mm256_load_si256(reinterpret_cast<const __m256i*>(ds.m.p + c * kDirectChunk));
    __m256i bytes[S];
#pragma GCC unroll 8
    for (int s = 0; s < S; ++s) bytes[s] = zero;
#pragma GCC unroll 4
    for (int k = 0; k < B; ++k) {
      const __m256i d = _mm256_and_si256(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k * ds.nbytes + c * kDirectChunk)), mk);
#pragma GCC unroll 4
      for (int i = kPairs ? 0 : k; i < (kPairs ? B : k + 1); ++i) {
        const __m256i x = _mm256_xor_si256(
            _mm256_load_si256(reinterpret_cast<const __m256i*>(qb + (i * ds.nch + c) * kDirectChunk)), d);
        const __m256i cnt = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, low)),
                                            _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), low)));
        bytes[slot(i, k)] = _mm256_add_epi8(bytes[slot(i, k)], cnt);
      }
    }
#pragma GCC unroll 8
    for (int s = 0; s < S; ++s) acc[s] = _mm256_add_epi64(acc[s], _mm256_sad_epu8(bytes[s], zero));
  }
  __m256i h4 = acc[0];
#pragma GCC unroll 8
  for (int s = 1; s < S; ++s) h4 = _mm256_add_epi64(h4, _mm256_slli_epi64(acc[s], s));
#endif
  const __m128i h2 = _mm_add_epi64(_mm256_castsi256_si128(h4), _mm256_extracti128_si256(h4, 1));
  return _mm_cvtsi128_si64(_mm_add_epi64(h2, _mm_unpackhi_epi64(h2, h2)));
}
#pragma GCC diagnostic pop
#endif

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

// Offers score v of doc `id_` to a heap of n (<= k) entries: pushed while not full, else it replaces
// the worst entry when strictly better (docs arrive in increasing id, so ties keep the lower). (The
// older loops keep this inline in their own text: routed through here, the 1-bit top-k ran 3-6%
// slower at -O3, a code-generation effect.)
inline void heap_offer(int32_t* hs, int64_t* hi, int64_t& n, int64_t k, int32_t v, int64_t id_) {
  if (n < k) {
    heap_push(hs, hi, n, v, id_);
    ++n;
  } else if (v > hs[0]) {
    heap_replace_top(hs, hi, n, v, id_);
  }
}

#if defined(__AVX2__)  // avx2 and avx512
// ---- AVX2 group top-k for the XOR form with a single weight (Hamming, or sdc with bits = 1).
//
// Designed for AVX2, not the AVX-512 kernel narrowed: AVX2 has no vector popcount, and a nibble-LUT
// popcount of (q XOR d) costs 8 ops per 32 bytes. Here the XOR is folded into per-query tables
// (the fast-scan idea of the spec's option (c)): for code byte b of query q,
//   tab_lo[x] = popcnt((x ^ (q_b & 15)) & valid_lo),  tab_hi[x] = popcnt((x ^ (q_b >> 4)) & valid_hi),
// and the corpus tile is stored byte-major as nibble planes, lo[b][doc] = d_b & 15, hi[b][doc] = d_b >> 4,
// so one code byte of 32 docs costs two vpshufb + two vpaddb per query: H = sum_b tab_lo[lo] + tab_hi[hi].
// (Padding bits are masked inside the tables, so tile bytes need no masking.) A tile of 64 docs
// (two vectors per byte) is loaded once for a group of 3 queries; byte sums (<= 8 per code byte)
// are widened to 16 bits every 31 bytes, so a row of up to 8191 bytes sums exactly in 16 bits.
// The scores are compared with each query's heap threshold in registers (one vpminuw/vpcmpeqw per
// 16 docs), so a tile that improves no heap costs no scalar work.
//
// Chosen by measurement (single core of this Zen 4 at -mavx2, 64-bit words or bytes in L1/L2, ns per
// query-doc pair at 256 / 1024 bits): these tables 0.39 / 1.7-1.8; vpshufb popcount of a
// broadcast-XOR word-major tile with precomputed nibbles, byte sums + vpsadbw 0.60 / 2.0-2.6; the
// same without precomputed nibbles (the old per-query kernel's inner loop) 0.66 / 2.4-3.1;
// Harley-Seal CSA over the 16 words of a 1024-bit pair -- / 2.7; scalar popcnt on 64-bit words,
// 8 queries per doc row 1.27-1.32 / 4.1-4.4. Harley-Seal needs >= 16 words per pair to fill its
// tree and, on Zen (two vpshufb pipes), saves no ops over the byte sums. A whole topk_block (64
// queries, k = 10, one thread) then takes 0.53 / 1.92 ns per pair against 1.26 / 3.28 on the
// per-query path it replaces; sdc bits = 2 (512 dims) 2.3 against 7.6, bits = 4 (256 dims) 3.0
// against 16. (-mavx2 code on an AVX-512 core, which runs it somewhat differently from an
// AVX2-only core.)
#define FASTEMB_BINARY_AVX2_LUT 1
// The avx512 variant compiles these kernels too and takes them for sdc with bits >= 4, by measurement
// (one thread, 128 queries x 50k docs, ns per pair, fused vpopcntq form / these tables): bits = 2 on
// 512 dims 1.88-1.96 / 2.50, bits = 3 on 256 dims 2.07-2.14 / 2.15-2.16, bits = 4 on 256 dims
// 3.43-3.80 / 3.17-3.18.
constexpr int kLutMinBitsAvx512 = 4;
constexpr int64_t kLutTile = 64;            // docs per tile
constexpr int kLutGroup = 3;                // queries per group
constexpr int64_t kLutMaxRowBytes = 8191;   // H <= 8 * row bytes must fit 16 bits
constexpr int64_t kLutPrefetch = 2;          // tiles ahead whose rows are prefetched (of 1, 2, 4, 8)

template <int G>
struct GroupSize {  // (a tag of our own: no std:: template here, see the top of the file)
  static constexpr int value = G;
};

inline int bitrev4(int i) { return ((i & 1) << 3) | ((i & 2) << 1) | ((i & 4) >> 1) | ((i & 8) >> 3); }

// tab[(i - q0) * R + b][32] for the query rows [q0, q1) (R = row bytes, every plane's last byte masked).
inline void lut_tables(const Geo& g, const uint8_t* q, int64_t q0, int64_t q1, uint8_t* tab) {
  const int64_t R = g.bits * g.nbytes;
  const unsigned last = (0xFFu << (8 - (g.dim - 8 * (g.nbytes - 1)))) & 0xFFu;
  for (int64_t i = q0; i < q1; ++i) {
    const uint8_t* row = q + i * R;
    for (int64_t b = 0; b < R; ++b) {
      const unsigned m = (b % g.nbytes == g.nbytes - 1) ? last : 0xFFu;
      const unsigned v = row[b];
      uint8_t* t = tab + ((i - q0) * R + b) * 32;
      for (unsigned x = 0; x < 16; ++x) {
        t[x] = static_cast<uint8_t>(__builtin_popcount((x ^ (v & 15u)) & (m & 15u)));
        t[16 + x] = static_cast<uint8_t>(__builtin_popcount((x ^ (v >> 4)) & (m >> 4)));
      }
    }
  }
}

// Docs [t0, t0 + cnt) -> lo/hi[b * 64 + j] for b < Rp (R rounded up to 16); docs j >= cnt are zero.
// Rows are read 16 bytes at a time (bytes past a row's end land in b >= R, never used); a row too
// close to the end of the corpus for that is copied to `bounce` first.
inline void lut_load_tile(const Geo& g, const uint8_t* d, int64_t nd, int64_t t0, int64_t cnt, int64_t Rp,
                          const uint8_t* zero_row, uint8_t* bounce, uint8_t* lo, uint8_t* hi) {
  const int64_t R = g.bits * g.nbytes;
  const uint8_t* rows[kLutTile];
  for (int64_t j = 0; j < kLutTile; ++j) {
    if (j >= cnt) {
      rows[j] = zero_row;
      continue;
    }
    const int64_t id = t0 + j;
    if ((nd - id) * R >= Rp) {
      rows[j] = d + id * R;
    } else {
      uint8_t* b = bounce + j * Rp;
      std::memcpy(b, d + id * R, static_cast<size_t>(R));
      std::memset(b + R, 0, static_cast<size_t>(Rp - R));
      rows[j] = b;
    }
  }
  const __m256i low = _mm256_set1_epi8(0x0f);
  for (int v = 0; v < 2; ++v) {
    const uint8_t* const* r = rows + 32 * v;
    for (int64_t c = 0; c < Rp; c += 16) {
      // 16x16 byte transpose in each 128-bit lane (lane 0: docs 0..15, lane 1: docs 16..31); the
      // unpack network leaves doc bitrev4(e) at byte e, so rows go in bit-reversed.
      __m256i x[16], y[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        const int e = bitrev4(i);
        x[i] = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r[e] + c))),
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(r[16 + e] + c)), 1);
      }
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        y[2 * i] = _mm256_unpacklo_epi8(x[i], x[i + 8]);
        y[2 * i + 1] = _mm256_unpackhi_epi8(x[i], x[i + 8]);
      }
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        x[2 * i] = _mm256_unpacklo_epi16(y[i], y[i + 8]);
        x[2 * i + 1] = _mm256_unpackhi_epi16(y[i], y[i + 8]);
      }
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        y[2 * i] = _mm256_unpacklo_epi32(x[i], x[i + 8]);
        y[2 * i + 1] = _mm256_unpackhi_epi32(x[i], x[i + 8]);
      }
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        x[2 * i] = _mm256_unpacklo_epi64(y[i], y[i + 8]);
        x[2 * i + 1] = _mm256_unpackhi_epi64(y[i], y[i + 8]);
      }
#pragma GCC unroll 16
      for (int k = 0; k < 16; ++k) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(lo + (c + k) * kLutTile + 32 * v), _mm256_and_si256(x[k], low));
        _mm256_store_si256(reinterpret_cast<__m256i*>(hi + (c + k) * kLutTile + 32 * v),
                           _mm256_and_si256(_mm256_srli_epi16(x[k], 4), low));
      }
    }
  }
}

// Code bytes [b0, b1) of a tile (nibble planes lo / hi, 64 docs per byte) against G queries'
// tables (tab + (r * R + b) * 32: 16 low-nibble then 16 high-nibble popcounts): byte sums, then
// widened into the 16-bit sums s[(r * 2 + v) * 2 + half]. b1 - b0 byte steps must fit a byte sum.
// Always inlined into the noinline kernels below (their accumulators stay in registers).
template <int G>
__attribute__((always_inline)) inline void lut_bytes(const uint8_t* tab, int64_t R, const uint8_t* lo,
                                                     const uint8_t* hi, int64_t b0, int64_t b1, __m256i* s) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i by[G][2];
#pragma GCC unroll 4
  for (int r = 0; r < G; ++r) by[r][0] = by[r][1] = zero;
  for (int64_t b = b0; b < b1; ++b) {
    const __m256i l0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo + b * kLutTile));
    const __m256i l1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo + b * kLutTile + 32));
    const __m256i h0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi + b * kLutTile));
    const __m256i h1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi + b * kLutTile + 32));
#pragma GCC unroll 4
    for (int r = 0; r < G; ++r) {
      const uint8_t* t = tab + (r * R + b) * 32;
      const __m256i tl = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
      const __m256i th = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(t + 16)));
      by[r][0] = _mm256_add_epi8(by[r][0], _mm256_shuffle_epi8(tl, l0));
      by[r][1] = _mm256_add_epi8(by[r][1], _mm256_shuffle_epi8(tl, l1));
      by[r][0] = _mm256_add_epi8(by[r][0], _mm256_shuffle_epi8(th, h0));
      by[r][1] = _mm256_add_epi8(by[r][1], _mm256_shuffle_epi8(th, h1));
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < G; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < 2; ++v) {
      __m256i* o = s + (r * 2 + v) * 2;
      _mm256_store_si256(o, _mm256_add_epi16(_mm256_load_si256(o), _mm256_unpacklo_epi8(by[r][v], zero)));
      _mm256_store_si256(o + 1, _mm256_add_epi16(_mm256_load_si256(o + 1), _mm256_unpackhi_epi8(by[r][v], zero)));
    }
}

// G queries (tables tab + r * R * 32) against a 64-doc tile. For query r, bit j of mask[r] is set when
// doc j is "in": H_j <= lim[r] (lim < 0: none), inverted when `invert` (Hamming mode ranks by H
// itself); ANDed with `valid`. When mask[r] != 0, h[r * 64 + j] = H_j for every j.
// `acc` is scratch for the 16-bit sums, [G][vector][docs {0-7,16-23} | {8-15,24-31}][16], 32-byte
// aligned. It is kept in memory on purpose: held in registers (GCC -O3 does that with local arrays),
// its 12 vectors push the tile vectors of the hot loop to the stack (0.53 -> 1.0 ns per pair).
// (noinline: inlined into topk_lut at -O3, GCC hoists values of the caller across the hot loop
// and spills its tile vectors.)
template <int G>
__attribute__((noinline)) void lut_group(const uint8_t* tab, int64_t R, const uint8_t* lo, const uint8_t* hi,
                                         const int64_t* lim, bool invert, uint64_t valid, uint64_t* mask, uint16_t* h,
                                         uint16_t* acc) {
  const __m256i zero = _mm256_setzero_si256();
  __m256i* s = reinterpret_cast<__m256i*>(acc);  // s[(r * 2 + v) * 2 + half]
#pragma GCC unroll 16
  for (int e = 0; e < 4 * G; ++e) _mm256_store_si256(s + e, zero);
  for (int64_t b0 = 0; b0 < R; b0 += 31) {
    const int64_t b1 = min_i64(R, b0 + 31);
    lut_bytes<G>(tab, R, lo, hi, b0, b1, s);
  }
#pragma GCC unroll 4
  for (int r = 0; r < G; ++r) {
    uint64_t le = 0;
    if (lim[r] >= 0) {
      const __m256i lv = _mm256_set1_epi16(static_cast<short>(static_cast<uint16_t>(min_i64(lim[r], 65535))));
#pragma GCC unroll 2
      for (int v = 0; v < 2; ++v) {
        const __m256i s0 = _mm256_load_si256(s + (r * 2 + v) * 2), s1 = _mm256_load_si256(s + (r * 2 + v) * 2 + 1);
        const __m256i a = _mm256_cmpeq_epi16(_mm256_min_epu16(s0, lv), s0);
        const __m256i c = _mm256_cmpeq_epi16(_mm256_min_epu16(s1, lv), s1);
        // packs keeps lanes: lane 0 = docs 0-7, 8-15; lane 1 = docs 16-23, 24-31 -> bit j = doc j.
        le |= uint64_t(uint32_t(_mm256_movemask_epi8(_mm256_packs_epi16(a, c)))) << (32 * v);
      }
    }
    const uint64_t m = (invert ? ~le : le) & valid;
    mask[r] = m;
    if (m) {
      for (int v = 0; v < 2; ++v) {
        const __m256i s0 = _mm256_load_si256(s + (r * 2 + v) * 2), s1 = _mm256_load_si256(s + (r * 2 + v) * 2 + 1);
        __m256i* o = reinterpret_cast<__m256i*>(h + r * kLutTile + 32 * v);
        _mm256_storeu_si256(o, _mm256_permute2x128_si256(s0, s1, 0x20));      // docs 0-15
        _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(s0, s1, 0x31));  // docs 16-31
      }
    }
  }
}

// ---- The same scheme for sdc with bits = B > 1, in the XOR form (binary_math.h):
//   wx = sum_{i,k} 2^(2u-i-k) popcnt(Pq_i ^ Pd_k) = sum_k 2^(u-k) sum_b T_b[d_kb],
//   T_b[x] = sum_i 2^(u-i) popcnt((x ^ q_ib) & valid)   (per nibble, <= 4 L),   S = dim L^2 - 2 wx.
// The tables do not depend on the doc plane k, so one table per query and plane byte serves all B doc
// planes. Byte sums (<= 8 L per step) are widened to 16 bits every 255 / (8 L) bytes, those to 32
// bits (shifted by u - k) every 65535 / (8 L) bytes and at the end of each plane.
inline void lut_tables_sdc(const Geo& g, const uint8_t* q, int64_t q0, int64_t q1, uint8_t* tab) {
  const int64_t R = g.bits * g.nbytes;
  const unsigned last = (0xFFu << (8 - (g.dim - 8 * (g.nbytes - 1)))) & 0xFFu;
  for (int64_t i = q0; i < q1; ++i) {
    const uint8_t* row = q + i * R;
    for (int64_t b = 0; b < g.nbytes; ++b) {
      const unsigned m = b == g.nbytes - 1 ? last : 0xFFu;
      uint8_t* t = tab + ((i - q0) * g.nbytes + b) * 32;
      for (unsigned x = 0; x < 16; ++x) {
        unsigned lo = 0, hi = 0;
        for (int pl = 0; pl < g.bits; ++pl) {
          const unsigned v = row[pl * g.nbytes + b];
          lo += static_cast<unsigned>(__builtin_popcount((x ^ (v & 15u)) & (m & 15u))) << (g.bits - 1 - pl);
          hi += static_cast<unsigned>(__builtin_popcount((x ^ (v >> 4)) & (m >> 4))) << (g.bits - 1 - pl);
        }
        t[x] = static_cast<uint8_t>(lo);
        t[16 + x] = static_cast<uint8_t>(hi);
      }
    }
  }
}

// G queries (tables tab + r * nbytes * 32) against a 64-doc tile of B-plane rows. Bit j of mask[r]:
// wx_j <= lim[r] (lim = -1: none), ANDed with `valid`. When mask[r] != 0, w[r * 64 + e] = wx of doc
// j for e = lut_sdc_slot(j). acc16 / acc32: scratch (kept in memory, see lut_group), 32-byte aligned.
inline int lut_sdc_slot(int j) { return (j >> 5) * 32 + ((j & 15) >> 2) * 8 + (j & 3) + ((j & 16) ? 4 : 0); }

template <int G>
__attribute__((noinline)) void lut_group_sdc(const uint8_t* tab, int bits, int64_t nbytes, const uint8_t* lo,
                                             const uint8_t* hi, const int64_t* lim, uint64_t valid, uint64_t* mask,
                                             int32_t* w, uint16_t* acc16, int32_t* acc32) {
  const __m256i zero = _mm256_setzero_si256();
  const int64_t L = (int64_t(1) << bits) - 1;
  const int64_t F = 255 / (8 * L);            // byte steps per widening to 16 bits (2..10)
  const int64_t C = (65535 / (8 * L)) / F * F;  // bytes per widening to 32 bits
  __m256i* s = reinterpret_cast<__m256i*>(acc16);  // s[(r * 2 + v) * 2 + half], 16-bit
  __m256i* a = reinterpret_cast<__m256i*>(acc32);  // a[(r * 2 + v) * 4 + e], 32-bit, docs 4e.. | 16+4e..
#pragma GCC unroll 8
  for (int e = 0; e < 8 * G; ++e) _mm256_store_si256(a + e, zero);
  for (int k = 0; k < bits; ++k) {
    const uint8_t* lk = lo + k * nbytes * kLutTile;
    const uint8_t* hk = hi + k * nbytes * kLutTile;
    const __m128i sh = _mm_cvtsi32_si128(bits - 1 - k);
    for (int64_t c0 = 0; c0 < nbytes; c0 += C) {
      const int64_t c1 = min_i64(nbytes, c0 + C);
#pragma GCC unroll 16
      for (int e = 0; e < 4 * G; ++e) _mm256_store_si256(s + e, zero);
      for (int64_t b0 = c0; b0 < c1; b0 += F) {
        const int64_t b1 = min_i64(c1, b0 + F);
        lut_bytes<G>(tab, nbytes, lk, hk, b0, b1, s);
      }
#pragma GCC unroll 8
      for (int e = 0; e < 2 * G; ++e) {  // (r, v): 16-bit halves -> 32-bit, weighted by 2^(u-k)
        const __m256i h0 = _mm256_load_si256(s + 2 * e), h1 = _mm256_load_si256(s + 2 * e + 1);
        const __m256i x[4] = {_mm256_unpacklo_epi16(h0, zero), _mm256_unpackhi_epi16(h0, zero),
                              _mm256_unpacklo_epi16(h1, zero), _mm256_unpackhi_epi16(h1, zero)};
#pragma GCC unroll 4
        for (int f = 0; f < 4; ++f)
          _mm256_store_si256(a + 4 * e + f,
                             _mm256_add_epi32(_mm256_load_si256(a + 4 * e + f), _mm256_sll_epi32(x[f], sh)));
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < G; ++r) {
    const __m256i lv = _mm256_set1_epi32(static_cast<int>(lim[r] > INT32_MAX ? INT32_MAX : lim[r]));  // lim >= -1
    uint64_t le = 0;
#pragma GCC unroll 8
    for (int e = 0; e < 8; ++e) {  // e = v * 4 + f: docs 32 v + 4 f + (0..3 | 16..19)
      const __m256i gtv = _mm256_cmpgt_epi32(_mm256_load_si256(a + r * 8 + e), lv);
      const unsigned gt = unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(gtv)));
      const uint64_t m8 = ~gt & 0xFFu;
      const int base = (e >> 2) * 32 + (e & 3) * 4;
      le |= ((m8 & 0xFu) << base) | ((m8 >> 4) << (base + 16));
    }
    const uint64_t m = le & valid;
    mask[r] = m;
    if (m)
      for (int e = 0; e < 8; ++e)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + r * kLutTile + 8 * e), _mm256_load_si256(a + r * 8 + e));
  }
}

// topk_block on the table kernels: lut_group (Hamming, or sdc with bits = 1; rows of at most
// kLutMaxRowBytes bytes) or lut_group_sdc (sdc with bits > 1). Same integers, and the same heap updates
// in the same doc order, as the generic path.
// (Kept out of line in the avx512 variant, where it serves only bits = 4: inlined into topk_block
// there, it slowed the 1-bit kernels by 2-3%.)
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
__attribute__((noinline))
#endif
void topk_lut(const Problem& p, const Geo& g, int64_t q0, int64_t q1, int64_t d0, int64_t d1, int64_t k,
              int32_t* hs, int64_t* hi, int64_t* hn) {
  const bool multi = g.and_form;  // sdc with bits > 1
  const int64_t R = g.bits * g.nbytes, Rp = (R + 15) / 16 * 16, nqb = q1 - q0;
  const int64_t tab_row = (multi ? g.nbytes : R) * 32;  // table bytes per query
  Buf<uint8_t> tab(nqb * tab_row), lo(Rp * kLutTile), hib(Rp * kLutTile), zero(Rp), bounce(kLutTile * Rp);
  std::memset(zero.p, 0, static_cast<size_t>(Rp));
  if (multi)
    lut_tables_sdc(g, p.q, q0, q1, tab.p);
  else
    lut_tables(g, p.q, q0, q1, tab.p);
  const bool sdc = g.mode == Mode::sdc;          // S = dim L^2 - 2 wx (wx = H for bits = 1); Hamming: S = H
  const int64_t top = g.dim * g.L * g.L;         // dim L^2
  alignas(32) uint16_t hv[kLutGroup * kLutTile], acc16[kLutGroup * 64];
  alignas(32) int32_t wv[kLutGroup * kLutTile], acc32[kLutGroup * kLutTile];
  uint64_t mask[kLutGroup];
  int64_t lim[kLutGroup];
  // The largest wx that still beats query i's heap (sdc: top - 2 wx > thr); Hamming: the largest H
  // that does not (H > thr beats it), the kernel inverts. A heap that is not full admits everything.
  auto limit = [&](int64_t i) -> int64_t {
    const bool full = hn[i] >= k;
    const int64_t thr = full ? static_cast<int64_t>(hs[i * k]) : 0;
    if (sdc) {
      if (!full) return INT64_MAX;
      const int64_t x = top - thr;
      return x <= 0 ? -1 : (x - 1) / 2;
    }
    return full ? (thr < 0 ? -1 : thr) : -1;
  };
  for (int64_t t0 = d0; t0 < d1; t0 += kLutTile) {
    const int64_t cnt = min_i64(kLutTile, d1 - t0);
    lut_load_tile(g, p.d, p.nd, t0, cnt, Rp, zero.p, bounce.p, lo.p, hib.p);
    // The rows kLutPrefetch tiles ahead, fetched while this one is scored: the transpose reads 32
    // rows at a stride, which the hardware prefetchers follow poorly (~7% of the time at 256 bits
    // and 64 queries; with one query most of it). (Loading several tiles per pass over the tables,
    // to serve those from L1, gained nothing.)
    const int64_t ahead = t0 + kLutPrefetch * kLutTile;
    for (int64_t off = 0; off < min_i64(kLutTile, d1 - ahead) * R; off += 64)
      _mm_prefetch(reinterpret_cast<const char*>(p.d + ahead * R + off), _MM_HINT_T0);
    const uint64_t valid = cnt >= kLutTile ? ~0ull : ((1ull << cnt) - 1);
    // Offers the docs in `candidates` (bit j = doc t0 + j, increasing) to query i's heap; r is the
    // query's row in the group's outputs.
    auto offer = [&](int64_t i, int r, uint64_t candidates) {
      int32_t* s = hs + i * k;
      int64_t* id = hi + i * k;
      int64_t n = hn[i];
      while (candidates) {
        const int j = __builtin_ctzll(candidates);
        candidates &= candidates - 1;
        const int64_t x = multi ? int64_t(wv[r * kLutTile + lut_sdc_slot(j)]) : int64_t(hv[r * kLutTile + j]);
        const int32_t v = static_cast<int32_t>(sdc ? top - 2 * x : x);
        if (n < k) {
          heap_push(s, id, n, v, t0 + j);
          ++n;
        } else if (v > s[0]) {
          heap_replace_top(s, id, n, v, t0 + j);
        }
      }
      hn[i] = n;
    };
    auto group = [&](auto gsize, int64_t i) {
      constexpr int G = decltype(gsize)::value;
      for (int r = 0; r < G; ++r) lim[r] = limit(i + r);
      if (multi)
        lut_group_sdc<G>(tab.p + i * tab_row, g.bits, g.nbytes, lo.p, hib.p, lim, valid, mask, wv, acc16, acc32);
      else
        lut_group<G>(tab.p + i * tab_row, R, lo.p, hib.p, lim, !sdc, valid, mask, hv, acc16);
      for (int r = 0; r < G; ++r)
        if (mask[r]) offer(i + r, r, mask[r]);
    };
    int64_t i = 0;
    for (; i + kLutGroup <= nqb; i += kLutGroup) group(GroupSize<kLutGroup>(), i);
    if (nqb - i == 2) group(GroupSize<2>(), i);
    if (nqb - i == 1) group(GroupSize<1>(), i);
  }
}
#endif

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

#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
namespace {

// topk_block's tile loop for sdc with bits 2-3 in the fused form (AVX-512, full query groups): the
// query z planes and Z_q made once, the tile e planes and E_d per tile (tile_scores_sdc_group); the
// same heap updates in the same doc order as topk_block's loop. Out of line on purpose: folded into
// topk_block (as a template shared with its loop, inlined or not), the 1-bit kernels ran 3-7% slower.
__attribute__((noinline)) void topk_fused(const Problem& p, const Geo& g, int64_t q0, int64_t q1, int64_t d0,
                                          int64_t d1, int64_t k, int32_t* hs, int64_t* hi, int64_t* hn) {
  const int64_t nqb = q1 - q0, npairs = g.bits * (g.bits - 1) / 2;
  Buf<uint64_t> qwb(nqb * g.row_words), tile(g.row_words * T), qz(nqb * npairs * g.words), et(npairs * g.words * T);
  Buf<int64_t> sumcq(nqb), zq(nqb);
  load_queries(g, p.q, q0, q1, qwb.p, sumcq.p);
  const uint64_t* qw = qwb.p;
  alignas(64) int64_t ed[T];
  int64_t sumcd[T], scg[kQueryGroup * T], thr[kQueryGroup];
  uint32_t mask[kQueryGroup];
  sdc_query_side(g, qw, nqb, qz.p, zq.p);
  for (int64_t t0 = d0; t0 < d1; t0 += T) {
    const int64_t cnt = min_i64(T, d1 - t0);
    load_tile(g, p.d, t0, cnt, tile.p, sumcd);
    sdc_tile_side(g, tile.p, et.p, ed);
    for (int64_t i = 0; i < nqb; i += kQueryGroup) {
      // the last group overlaps the previous one when nqb is not a multiple of 8: its shared queries
      // are offered nothing twice (their candidates are masked out below).
      const int64_t i0 = min_i64(i, nqb - kQueryGroup);
      for (int r = 0; r < kQueryGroup; ++r)
        thr[r] = hn[i0 + r] < k ? INT64_MIN : static_cast<int64_t>(hs[(i0 + r) * k]);
      tile_scores_sdc_dispatch(g, qw + i0 * g.row_words, qz.p + i0 * npairs * g.words, zq.p + i0, tile.p, et.p, ed,
                               cnt, thr, scg, mask);
      for (int r = static_cast<int>(i - i0); r < kQueryGroup; ++r)
        for (uint32_t c = mask[r]; c != 0; c &= c - 1) {  // docs in increasing id
          const int j = __builtin_ctz(c);
          const int64_t q = i0 + r;
          heap_offer(hs + q * k, hi + q * k, hn[q], k, static_cast<int32_t>(scg[r * T + j]), t0 + j);
        }
    }
  }
}

}  // namespace
#endif

// The direct path's heap loop: row_of(j) = doc j's row, score(i, row) = query i's score (i 0-based in
// the block, nqb <= kDirectMaxQueries); docs in order, and every query of the block scores a row while
// it is in L1 (one pass over the corpus, not one per query).
template <class RowOf, class Score>
inline void direct_scan(int64_t nqb, int64_t d0, int64_t d1, int64_t k, int32_t* hs, int64_t* hi, int64_t* hn,
                        RowOf row_of, Score score) {
  for (int64_t j = d0; j < d1; ++j) {
    const uint8_t* row = row_of(j);
    for (int64_t i = 0; i < nqb; ++i) {
      const int32_t v = score(i, row);
      int32_t* s = hs + i * k;
      if (hn[i] < k) {
        heap_push(s, hi + i * k, hn[i], v, j);
        ++hn[i];
      } else if (v > s[0]) {
        heap_replace_top(s, hi + i * k, hn[i], v, j);
      }
    }
  }
}

#if defined(__AVX2__)
// topk_block's direct path on x86 (direct_row): one or two queries, every code form.
void topk_direct(const Problem& p, const Geo& g, int64_t q0, int64_t q1, int64_t d0, int64_t d1, int64_t k,
                 int32_t* hs, int64_t* hi, int64_t* hn) {
  const int64_t row_bytes = g.bits * g.nbytes;
  const DirectCodes ds(g, p.q, q0, q1);
  // Rows whose loads would pass the end of the corpus are copied to a zero-padded buffer first.
  const int64_t last_safe = p.nd - (ds.read + row_bytes - 1) / row_bytes;
  Buf<uint8_t> bounce(ds.read);
  auto row_of = [&](int64_t j) -> const uint8_t* {
    if (j <= last_safe) return p.d + j * row_bytes;
    std::memset(bounce.p, 0, static_cast<size_t>(ds.read));
    std::memcpy(bounce.p, p.d + j * row_bytes, static_cast<size_t>(row_bytes));
    return bounce.p;
  };
  const bool sdc = g.mode == Mode::sdc;  // S = dim L^2 - 2 (XOR sum); Hamming: the sum itself
  auto scan = [&](auto row_sum) {
    direct_scan(q1 - q0, d0, d1, k, hs, hi, hn, row_of, [&](int64_t i, const uint8_t* row) {
      const int64_t x = row_sum(ds, i, row);
      return static_cast<int32_t>(sdc ? sdc_from_xor(g.dim, g.bits, x) : x);
    });
  };
  if (g.and_form) {
    switch (g.bits) {
      case 2: return scan(direct_row<2, true>);
      case 3: return scan(direct_row<3, true>);
      default: return scan(direct_row<4, true>);
    }
  }
  switch (g.bits) {
    case 1: return scan(direct_row<1, false>);
    case 2: return scan(direct_row<2, false>);
    case 3: return scan(direct_row<3, false>);
    default: return scan(direct_row<4, false>);
  }
}
#endif

// Keeps the best k (k >= 1) of docs [d0, d1) for each query of [q0, q1) in heaps: query i owns
// hs/hi[(i - q0) * k, + k) with hn[i - q0] entries (the caller zeroes hn). Docs are visited in
// increasing id, so a doc only enters when its score beats the worst kept one strictly.
void topk_block(const Problem& p, int64_t q0, int64_t q1, int64_t d0, int64_t d1, int64_t k, int32_t* hs, int64_t* hi,
                int64_t* hn) {
  const Geo g = make_geo(p);
  const int64_t nqb = q1 - q0;
  if (nqb <= 0 || d1 <= d0) return;
  // One or two queries: the direct row-by-row scan, every code form (transposing rows into tiles costs
  // more than it saves for so few queries). Otherwise, AVX-512: the tables for multi-bit sdc from bits =
  // kLutMinBitsAvx512 on, the fused form (full query groups) below that; AVX2: the table kernels, except
  // 1-bit rows too long for their 16-bit sums.
  const bool direct = nqb <= kDirectMaxQueries;
#if defined(__AVX2__)
  if (direct) return topk_direct(p, g, q0, q1, d0, d1, k, hs, hi, hn);
#endif
#if defined(FASTEMB_BINARY_AVX2_LUT)
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
  if (g.and_form && g.bits >= kLutMinBitsAvx512) return topk_lut(p, g, q0, q1, d0, d1, k, hs, hi, hn);
  if (g.and_form && nqb >= kQueryGroup) return topk_fused(p, g, q0, q1, d0, d1, k, hs, hi, hn);
#else
  if (g.and_form || g.bits * g.nbytes <= kLutMaxRowBytes) return topk_lut(p, g, q0, q1, d0, d1, k, hs, hi, hn);
#endif
#endif
  Buf<uint64_t> qw(nqb * g.row_words), tile(g.row_words * T);
  Buf<int64_t> sumcq(nqb);
  int64_t sumcd[T], sc[T];
  load_queries(g, p.q, q0, q1, qw.p, sumcq.p);
#if !defined(__AVX2__)
  if (direct) {  // serial / NEON: the word loop
    const int64_t row_bytes = g.bits * g.nbytes;
    direct_scan(
        nqb, d0, d1, k, hs, hi, hn, [&](int64_t j) { return p.d + j * row_bytes; },
        [&](int64_t i, const uint8_t* row) {
          return static_cast<int32_t>(xor_score_direct(g, qw.p + i * g.row_words, row));
        });
    return;
  }
#endif
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

// binarize (float rows -> codes), same namespace and ISA flags.
#include "binary/binarize_kernels.h"
