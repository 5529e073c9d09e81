// The ternary kernels, written once and compiled per ISA: ternary_<isa>.cpp defines FASTEMB_ISA_NS
// and includes this file with that ISA's flags. Everything here lives in that namespace with
// internal linkage, and no std:: template is instantiated (the linker could otherwise hand one
// ISA's code to another's caller; see centroid_kernels.h).
//
// Integer path, GEMV form (int8_gemv, every ISA, any m; the dispatcher uses it for small m):
//   a tile of MR activation rows x NR weight rows is walked block by block (256 weights = 64 packed
//   bytes per weight row). One 64-byte load (AVX-512) or two 32-byte loads (AVX2) of a weight row,
//   shifted right by 2s and masked with 3, give the u8 codes of 64 (32) consecutive weights, aligned
//   with the activations b*256 + 64s ...; the products are summed with
//     AVX-512 VNNI: vpdpbusd (u8 codes x s8 activations -> int32 lanes), or
//     AVX2: vpmaddubsw (-> s16 pairs, |pair| <= 2*3*128) summed over one block (8 products per
//           lane, |sum| <= 6144: no saturation), then vpmaddwd with ones -> int32,
//   and acc = sum(c x) - sum(x) (sum_x computed once per activation row by the dispatcher). Each
//   decoded code vector meets MR activation rows, each activation load NR weight rows.
// Integer path, GEMM form (int8_gemm, AVX-512 VNNI; m >= the crossover): a panel of kGemmCols
//   weight rows is decoded once to u8 codes [col][kp]; activations come repacked by the dispatcher
//   as [row group of 16][kp/4][16][4] so that one zmm holds 4 consecutive k of 16 rows. The
//   micro-kernel keeps MV x NJ zmm accumulators (MV groups of 16 rows x NJ weight columns):
//   per 4 k, MV activation loads, NJ code broadcasts (vpbroadcastd), MV*NJ vpdpbusd. K is blocked
//   by 256 (activation tile <= 16 KB in L1) with accumulators parked in a per-task int32 tile.
// Both forms produce the exact int32 sums; the epilogue is ternary_math.h's int8_output.
// Float path (float_rows): each weight row is decoded once to float (-1, 0, 1) in a scratch row,
//   then dotted with every activation row (fixed order: 4 x 16 lane accumulators, then a fixed
//   tree), so results do not depend on the thread count.
#ifndef FASTEMB_ISA_NS
#error "define FASTEMB_ISA_NS before including ternary_kernels.h"
#endif

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "ternary/ternary.h"
#include "ternary/ternary_internal.h"
#include "ternary/ternary_math.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define FASTEMB_TERNARY_VNNI 1
#endif

// GCC 12 reports the _mm*_undefined_*() placeholders inside its own intrinsics (reduce, extract,
// cvtpd) as uninitialized; the values are never read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastemb::ternary::FASTEMB_ISA_NS {
namespace {

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

// Software prefetch distance along a weight row (GEMV form; rows are streamed in memory order).
constexpr int64_t kPrefetchBytes = 512;

inline void store_int8(const Int8Work& a, int64_t i, int64_t j, int32_t v) {
  const int64_t n = a.w.n;
  if (a.acc) a.acc[i * n + j] = v;
  a.out[i * n + j] = int8_output(v, a.w.scale[a.w.per_row ? j : 0], a.x_scale[i], a.bias, j);
}

inline uint32_t load_u32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- quantize_activations -----------------------------------------------------------------------

#if defined(__AVX512F__)
// 16 activations from element i (the first `cnt` of them; the rest read as 0) as float32.
inline __m512 load16(const void* x, int dt, int64_t i, int cnt) {
  const __mmask16 mk = static_cast<__mmask16>(cnt >= 16 ? 0xffffu : ((1u << cnt) - 1u));
  switch (dt) {
    case 1: {
      const double* d = static_cast<const double*>(x) + i;
      const __mmask8 lo = static_cast<__mmask8>(mk & 0xff), hi = static_cast<__mmask8>(mk >> 8);
      const __m256 a = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd(lo, d));
      const __m256 b = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd(hi, d + 8));
      return _mm512_insertf32x8(_mm512_castps256_ps512(a), b, 1);
    }
    case 2: {
      const __m256i h = _mm256_maskz_loadu_epi16(mk, static_cast<const uint16_t*>(x) + i);
      return _mm512_cvtph_ps(h);
    }
    case 3: {
      const __m256i h = _mm256_maskz_loadu_epi16(mk, static_cast<const uint16_t*>(x) + i);
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    default: return _mm512_maskz_loadu_ps(mk, static_cast<const float*>(x) + i);
  }
}
#elif defined(__AVX2__)
inline __m256 load8(const void* x, int dt, int64_t i) {
  switch (dt) {
    case 1: {
      const double* d = static_cast<const double*>(x) + i;
      return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(_mm256_loadu_pd(d))),
                                  _mm256_cvtpd_ps(_mm256_loadu_pd(d + 4)), 1);
    }
    case 2: return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(x) + i)));
    case 3: {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(x) + i));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    default: return _mm256_loadu_ps(static_cast<const float*>(x) + i);
  }
}
#endif

void quantize_row(const void* xrow, int dt, int64_t k, int64_t kp, float eps, int8_t* q, float* s_out) {
  float amax = 0.0f;
  int64_t c = 0;
#if defined(__AVX512F__)
  {
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    __m512 m0 = _mm512_setzero_ps();
    for (; c < k; c += 16) {
      const int cnt = static_cast<int>(min_i64(16, k - c));
      m0 = _mm512_max_ps(m0, _mm512_and_ps(load16(xrow, dt, c, cnt), sign));
    }
    amax = _mm512_reduce_max_ps(m0);
  }
  const float s = activation_scale(amax, eps);
  const __m512 vs = _mm512_set1_ps(s), lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
  for (c = 0; c < k; c += 16) {
    const int cnt = static_cast<int>(min_i64(16, k - c));
    __m512 v = _mm512_mul_ps(load16(xrow, dt, c, cnt), vs);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    const __m128i b = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v));  // MXCSR default: half to even
    _mm_mask_storeu_epi8(q + c, static_cast<__mmask16>(cnt >= 16 ? 0xffffu : ((1u << cnt) - 1u)), b);
  }
#elif defined(__AVX2__)
  {
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m0 = _mm256_setzero_ps();
    for (; c + 8 <= k; c += 8) m0 = _mm256_max_ps(m0, _mm256_and_ps(load8(xrow, dt, c), sign));
    alignas(32) float t[8];
    _mm256_store_ps(t, m0);
    for (int e = 0; e < 8; ++e) amax = t[e] > amax ? t[e] : amax;
    for (; c < k; ++c) {
      const float a = std::fabs(load_activation(xrow, dt, c));
      amax = a > amax ? a : amax;
    }
  }
  const float s = activation_scale(amax, eps);
  const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
  for (c = 0; c + 8 <= k; c += 8) {
    __m256 v = _mm256_mul_ps(load8(xrow, dt, c), vs);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    const __m256i i32 = _mm256_cvtps_epi32(v);
    const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + c), _mm_packs_epi16(i16, i16));
  }
  for (; c < k; ++c) q[c] = quantize_value(load_activation(xrow, dt, c), s);
#else
  for (; c < k; ++c) {
    const float a = std::fabs(load_activation(xrow, dt, c));
    amax = a > amax ? a : amax;
  }
  const float s = activation_scale(amax, eps);
  for (c = 0; c < k; ++c) q[c] = quantize_value(load_activation(xrow, dt, c), s);
#endif
  if (kp > k) std::memset(q + k, 0, static_cast<size_t>(kp - k));
  *s_out = s;
}

// ---- integer GEMV form --------------------------------------------------------------------------

#if defined(FASTEMB_TERNARY_VNNI)
template <int MR, int NR>
inline void gemv_tile(const Int8Work& a, int64_t i0, int64_t j0) {
  // AS independent accumulator sets (s % AS) so that vpdpbusd latency chains stay short when the
  // tile is small (MR * NR < 4).
  constexpr int AS = MR * NR >= 4 ? 1 : (MR * NR >= 2 ? 2 : 4);
  const int64_t kp = a.w.kp, nb = kp / kBlock, rs = kp / 4;
  const __m512i mask = _mm512_set1_epi8(3);
  __m512i acc[MR][NR][AS];
  const uint8_t* wr[NR];
  const int8_t* xr[MR];
  for (int r = 0; r < NR; ++r) wr[r] = a.w.packed + (j0 + r) * rs;
  for (int i = 0; i < MR; ++i) xr[i] = a.xq + (i0 + i) * kp;
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r)
      for (int u = 0; u < AS; ++u) acc[i][r][u] = _mm512_setzero_si512();
  constexpr int64_t pf = kPrefetchBytes;
  for (int64_t b = 0; b < nb; ++b) {
    __m512i wv[NR];
    for (int r = 0; r < NR; ++r) {
      wv[r] = _mm512_loadu_si512(wr[r] + 64 * b);
      _mm_prefetch(reinterpret_cast<const char*>(wr[r] + 64 * b + pf), _MM_HINT_T0);
    }
#define FASTEMB_TERNARY_STEP(S)                                                                    \
  {                                                                                                 \
    __m512i xv[MR];                                                                                 \
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_loadu_si512(xr[i] + 256 * b + 64 * (S));            \
    for (int r = 0; r < NR; ++r) {                                                                  \
      const __m512i c = _mm512_and_si512((S) ? _mm512_srli_epi16(wv[r], 2 * (S)) : wv[r], mask);    \
      for (int i = 0; i < MR; ++i) acc[i][r][(S) % AS] = _mm512_dpbusd_epi32(acc[i][r][(S) % AS], c, xv[i]); \
    }                                                                                               \
  }
    FASTEMB_TERNARY_STEP(0)
    FASTEMB_TERNARY_STEP(1)
    FASTEMB_TERNARY_STEP(2)
    FASTEMB_TERNARY_STEP(3)
#undef FASTEMB_TERNARY_STEP
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) {
      __m512i t = acc[i][r][0];
      for (int u = 1; u < AS; ++u) t = _mm512_add_epi32(t, acc[i][r][u]);
      store_int8(a, i0 + i, j0 + r, _mm512_reduce_add_epi32(t) - a.sum_x[i0 + i]);
    }
}
template <int MR>
constexpr int gemv_nr() { return 1; }
// One activation row: the codes are not shifted down; sub-vector s is masked in place
// (w & (3 << 2s)), so its vpdpbusd sums are 4^s * sum(c x), kept in accumulator s and scaled back
// with an exact arithmetic shift at the end (each lane sum is a multiple of 4^s). 4 ops fewer per
// block than shift + mask; |acc_3| <= (k / 16) * 4 * 192 * 128 < 2^31 for k <= kMaxK.
template <>
inline void gemv_tile<1, 1>(const Int8Work& a, int64_t i0, int64_t j0) {
  const int64_t kp = a.w.kp, nb = kp / kBlock, rs = kp / 4;
  const __m512i m0 = _mm512_set1_epi8(0x03), m1 = _mm512_set1_epi8(0x0c), m2 = _mm512_set1_epi8(0x30),
                m3 = _mm512_set1_epi8(static_cast<char>(0xc0));
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  const uint8_t* wr = a.w.packed + j0 * rs;
  const int8_t* xr = a.xq + i0 * kp;
  constexpr int64_t pf = kPrefetchBytes;
  for (int64_t b = 0; b < nb; ++b) {
    const __m512i wv = _mm512_loadu_si512(wr + 64 * b);
    _mm_prefetch(reinterpret_cast<const char*>(wr + 64 * b + pf), _MM_HINT_T0);
    const int8_t* x = xr + 256 * b;
    a0 = _mm512_dpbusd_epi32(a0, _mm512_and_si512(wv, m0), _mm512_loadu_si512(x));
    a1 = _mm512_dpbusd_epi32(a1, _mm512_and_si512(wv, m1), _mm512_loadu_si512(x + 64));
    a2 = _mm512_dpbusd_epi32(a2, _mm512_and_si512(wv, m2), _mm512_loadu_si512(x + 128));
    a3 = _mm512_dpbusd_epi32(a3, _mm512_and_si512(wv, m3), _mm512_loadu_si512(x + 192));
  }
  const __m512i t = _mm512_add_epi32(_mm512_add_epi32(a0, _mm512_srai_epi32(a1, 2)),
                                     _mm512_add_epi32(_mm512_srai_epi32(a2, 4), _mm512_srai_epi32(a3, 6)));
  store_int8(a, i0, j0, _mm512_reduce_add_epi32(t) - a.sum_x[i0]);
}
#elif defined(__AVX2__)
template <int MR, int NR>
inline void gemv_tile(const Int8Work& a, int64_t i0, int64_t j0) {
  const int64_t kp = a.w.kp, nb = kp / kBlock, rs = kp / 4;
  const __m256i mask = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  __m256i acc[MR][NR];
  const uint8_t* wr[NR];
  const int8_t* xr[MR];
  for (int r = 0; r < NR; ++r) wr[r] = a.w.packed + (j0 + r) * rs;
  for (int i = 0; i < MR; ++i) xr[i] = a.xq + (i0 + i) * kp;
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_setzero_si256();
  constexpr int64_t pf = kPrefetchBytes;
  for (int64_t b = 0; b < nb; ++b) {
    __m256i s16[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < NR; ++r) s16[i][r] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      __m256i wv[NR];
      for (int r = 0; r < NR; ++r) {
        wv[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr[r] + 64 * b + 32 * h));
        if (h == 0) _mm_prefetch(reinterpret_cast<const char*>(wr[r] + 64 * b + pf), _MM_HINT_T0);
      }
#define FASTEMB_TERNARY_STEP(S)                                                                              \
  {                                                                                                           \
    __m256i xv[MR];                                                                                           \
    for (int i = 0; i < MR; ++i)                                                                              \
      xv[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xr[i] + 256 * b + 64 * (S) + 32 * h));      \
    for (int r = 0; r < NR; ++r) {                                                                            \
      const __m256i c = _mm256_and_si256((S) ? _mm256_srli_epi16(wv[r], 2 * (S)) : wv[r], mask);             \
      for (int i = 0; i < MR; ++i) s16[i][r] = _mm256_add_epi16(s16[i][r], _mm256_maddubs_epi16(c, xv[i]));  \
    }                                                                                                         \
  }
      FASTEMB_TERNARY_STEP(0)
      FASTEMB_TERNARY_STEP(1)
      FASTEMB_TERNARY_STEP(2)
      FASTEMB_TERNARY_STEP(3)
#undef FASTEMB_TERNARY_STEP
    }
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_add_epi32(acc[i][r], _mm256_madd_epi16(s16[i][r], ones));
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) {
      const __m128i v = _mm_add_epi32(_mm256_castsi256_si128(acc[i][r]), _mm256_extracti128_si256(acc[i][r], 1));
      const __m128i v2 = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4e));
      const __m128i v3 = _mm_add_epi32(v2, _mm_shuffle_epi32(v2, 0xb1));
      store_int8(a, i0 + i, j0 + r, _mm_cvtsi128_si32(v3) - a.sum_x[i0 + i]);
    }
}
template <int MR>
constexpr int gemv_nr() { return MR <= 2 ? 4 : (MR <= 4 ? 2 : 1); }
#else
// Serial: the CUDA dp4a kernel's decode (ternary_math.h word_weights) in scalar code; the result
// is the signed sum directly (no sum_x correction).
template <int MR, int NR>
inline void gemv_tile(const Int8Work& a, int64_t i0, int64_t j0) {
  const int64_t kp = a.w.kp, nb = kp / kBlock, rs = kp / 4;
  for (int r = 0; r < NR; ++r) {
    const uint8_t* wrow = a.w.packed + (j0 + r) * rs;
    for (int i = 0; i < MR; ++i) {
      const int8_t* xrow = a.xq + (i0 + i) * kp;
      int32_t s = 0;
      for (int64_t b = 0; b < nb; ++b)
        for (int t = 0; t < 64; t += 4) {
          const uint32_t word = load_u32(wrow + 64 * b + t);
          for (int q = 0; q < 4; ++q) s += dot4_s8(word_weights(word, q), load_u32(xrow + 256 * b + 64 * q + t));
        }
      store_int8(a, i0 + i, j0 + r, s);
    }
  }
}
template <int MR>
constexpr int gemv_nr() { return 1; }
#endif

template <int MR>
inline void gemv_rows(const Int8Work& a, int64_t i0, int64_t j0, int64_t j1) {
  constexpr int NR = gemv_nr<MR>();
  int64_t j = j0;
  for (; j + NR <= j1; j += NR) gemv_tile<MR, NR>(a, i0, j);
  for (; j < j1; ++j) gemv_tile<MR, 1>(a, i0, j);
}

void int8_gemv_impl(const Int8Work& a, int64_t j0, int64_t j1) {
  int64_t i = 0;
  for (; i + 8 <= a.m; i += 8) gemv_rows<8>(a, i, j0, j1);
  switch (a.m - i) {
    case 7: gemv_rows<7>(a, i, j0, j1); break;
    case 6: gemv_rows<6>(a, i, j0, j1); break;
    case 5: gemv_rows<5>(a, i, j0, j1); break;
    case 4: gemv_rows<4>(a, i, j0, j1); break;
    case 3: gemv_rows<3>(a, i, j0, j1); break;
    case 2: gemv_rows<2>(a, i, j0, j1); break;
    case 1: gemv_rows<1>(a, i, j0, j1); break;
    default: break;
  }
}

// ---- integer GEMM form (AVX-512 VNNI) -----------------------------------------------------------

#if defined(FASTEMB_TERNARY_VNNI)
constexpr int64_t kMc = 256;  // activation rows per pass (int32 tile 48 x 256 = 48 KB)
static_assert(kBlock == 256, "the GEMM form blocks k by one packed block");

// Micro-kernel over one k block (256 k = 64 groups of 4): MV groups of 16 activation rows (xb: the
// block's [group][64][64 bytes], group stride 4096) x NJ weight columns (pb: decoded codes
// [col][256], col stride 256); accumulators parked in ct[j * ldc + row] between k blocks.
// Written with named accumulators (macros below): with an array of __m512i, GCC 12 kept the array
// in memory and stored it on every iteration (3x slower).
#define FT_L6(M, v) M(v, 0) M(v, 1) M(v, 2) M(v, 3) M(v, 4) M(v, 5)
#define FT_L8(M, v) FT_L6(M, v) M(v, 6) M(v, 7)
#define FT_L12(M, v) FT_L8(M, v) M(v, 8) M(v, 9) M(v, 10) M(v, 11)
#define FT_L16(M, v) FT_L12(M, v) M(v, 12) M(v, 13) M(v, 14) M(v, 15)
#define FT_L4(M, v) M(v, 0) M(v, 1) M(v, 2) M(v, 3)
#define FT_J4(M) M(0) M(1) M(2) M(3)
#define FT_J6(M) M(0) M(1) M(2) M(3) M(4) M(5)
#define FT_J8(M) FT_J6(M) M(6) M(7)
#define FT_J12(M) FT_J8(M) M(8) M(9) M(10) M(11)
#define FT_J16(M) FT_J12(M) M(12) M(13) M(14) M(15)
#define FT_ZERO(v, j) __m512i c##v##_##j = _mm512_setzero_si512();
#define FT_STORE(v, j)                                                                                 \
  {                                                                                                    \
    int32_t* p = ct + (j) * ldc + 16 * (v);                                                            \
    _mm512_store_si512(p, first ? c##v##_##j : _mm512_add_epi32(c##v##_##j, _mm512_load_si512(p)));  \
  }
#define FT_X(v) const __m512i x##v = _mm512_load_si512(xb + (v) * 4096 + 64 * q);
#define FT_W(j) _mm512_set1_epi32(static_cast<int>(load_u32(pb + (j) * 256 + 4 * q)))
#define FT_DP(v, j) c##v##_##j = _mm512_dpbusd_epi32(c##v##_##j, w, x##v);
#define FT_COL4(j) { const __m512i w = FT_W(j); FT_DP(0, j) FT_DP(1, j) FT_DP(2, j) FT_DP(3, j) }
#define FT_COL3(j) { const __m512i w = FT_W(j); FT_DP(0, j) FT_DP(1, j) FT_DP(2, j) }
#define FT_COL2(j) { const __m512i w = FT_W(j); FT_DP(0, j) FT_DP(1, j) }
#define FT_COL1(j) { const __m512i w = FT_W(j); FT_DP(0, j) }

template <int MV, int NJ>
inline void gemm_micro(const int8_t* xb, const uint8_t* pb, int32_t* ct, int64_t ldc, bool first);

template <>
__attribute__((noinline)) void gemm_micro<4, 4>(const int8_t* xb, const uint8_t* pb, int32_t* ct, int64_t ldc, bool first) {
  FT_L4(FT_ZERO, 0) FT_L4(FT_ZERO, 1) FT_L4(FT_ZERO, 2) FT_L4(FT_ZERO, 3)
  for (int64_t q = 0; q < 64; ++q) {
    FT_X(0) FT_X(1) FT_X(2) FT_X(3)
    FT_J4(FT_COL4)
  }
  FT_L4(FT_STORE, 0) FT_L4(FT_STORE, 1) FT_L4(FT_STORE, 2) FT_L4(FT_STORE, 3)
}
template <>
__attribute__((noinline)) void gemm_micro<3, 6>(const int8_t* xb, const uint8_t* pb, int32_t* ct, int64_t ldc, bool first) {
  FT_L6(FT_ZERO, 0) FT_L6(FT_ZERO, 1) FT_L6(FT_ZERO, 2)
  for (int64_t q = 0; q < 64; ++q) {
    FT_X(0) FT_X(1) FT_X(2)
    FT_J6(FT_COL3)
  }
  FT_L6(FT_STORE, 0) FT_L6(FT_STORE, 1) FT_L6(FT_STORE, 2)
}
template <>
__attribute__((noinline)) void gemm_micro<2, 8>(const int8_t* xb, const uint8_t* pb, int32_t* ct, int64_t ldc, bool first) {
  FT_L8(FT_ZERO, 0) FT_L8(FT_ZERO, 1)
  for (int64_t q = 0; q < 64; ++q) {
    FT_X(0) FT_X(1)
    FT_J8(FT_COL2)
  }
  FT_L8(FT_STORE, 0) FT_L8(FT_STORE, 1)
}
template <>
__attribute__((noinline)) void gemm_micro<1, 16>(const int8_t* xb, const uint8_t* pb, int32_t* ct, int64_t ldc, bool first) {
  FT_L16(FT_ZERO, 0)
  for (int64_t q = 0; q < 64; ++q) {
    FT_X(0)
    FT_J16(FT_COL1)
  }
  FT_L16(FT_STORE, 0)
}

template <int MV, int NJ>
inline void gemm_cols(const int8_t* xb, const uint8_t* pb, int32_t* ct, int64_t ldc, bool first) {
  static_assert(kGemmCols % NJ == 0, "panel width");
  for (int64_t jc = 0; jc < kGemmCols; jc += NJ) gemm_micro<MV, NJ>(xb, pb + jc * 256, ct + jc * ldc, ldc, first);
}

void int8_gemm_impl(const Int8Work& a, int64_t j0, int64_t j1) {
  const int64_t kp = a.w.kp, rs = kp / 4, nb = kp / kBlock;
  const int64_t all_groups = (a.m + 15) / 16;
  const int64_t ncols = j1 - j0;
  // Decoded panel: [k block][kGemmCols cols][256 codes]; columns past j1 get code 1 (weight 0).
  Buf<uint8_t> panel(nb * kGemmCols * 256);
  const __m512i mask = _mm512_set1_epi8(3);
  for (int64_t c = 0; c < kGemmCols; ++c) {
    const uint8_t* src = a.w.packed + (j0 + c) * rs;
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* dst = panel.p + (b * kGemmCols + c) * 256;
      if (c >= ncols) {
        std::memset(dst, 1, 256);
        continue;
      }
      const __m512i v = _mm512_loadu_si512(src + 64 * b);
      _mm512_store_si512(dst, _mm512_and_si512(v, mask));
      _mm512_store_si512(dst + 64, _mm512_and_si512(_mm512_srli_epi16(v, 2), mask));
      _mm512_store_si512(dst + 128, _mm512_and_si512(_mm512_srli_epi16(v, 4), mask));
      _mm512_store_si512(dst + 192, _mm512_and_si512(_mm512_srli_epi16(v, 6), mask));
    }
  }
  const int64_t mc_rows = min_i64(kMc, all_groups * 16);
  Buf<int32_t> ct(kGemmCols * mc_rows);
  for (int64_t r0 = 0; r0 < a.m; r0 += kMc) {
    const int64_t rows = min_i64(kMc, a.m - r0);
    const int64_t groups = (rows + 15) / 16;
    const int64_t ldc = groups * 16;
    for (int64_t b = 0; b < nb; ++b) {
      const bool first = b == 0;
      const uint8_t* pb = panel.p + b * kGemmCols * 256;
      for (int64_t g = 0; g < groups;) {
        const int64_t left = groups - g;
        const int8_t* xb = a.xpack + (b * all_groups + r0 / 16 + g) * 4096;
        int32_t* cg = ct.p + 16 * g;
        if (left >= 4) {
          gemm_cols<4, 4>(xb, pb, cg, ldc, first);
          g += 4;
        } else if (left == 3) {
          gemm_cols<3, 6>(xb, pb, cg, ldc, first);
          g += 3;
        } else if (left == 2) {
          gemm_cols<2, 8>(xb, pb, cg, ldc, first);
          g += 2;
        } else {
          gemm_cols<1, 16>(xb, pb, cg, ldc, first);
          g += 1;
        }
      }
    }
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t c = 0; c < ncols; ++c) store_int8(a, r0 + i, j0 + c, ct.p[c * ldc + i] - a.sum_x[r0 + i]);
  }
}
#endif

// ---- float path ---------------------------------------------------------------------------------

void float_rows_impl(const FloatWork& a, int64_t j0, int64_t j1) {
  const int64_t k = a.w.k, kp = a.w.kp, rs = kp / 4;
  Buf<float> wf(kp);
  for (int64_t j = j0; j < j1; ++j) {
    const uint8_t* wrow = a.w.packed + j * rs;
    for (int64_t c = 0; c < k; ++c) wf.p[c] = static_cast<float>(code_at(wrow, c) - 1);
    const float gamma = a.w.scale[a.w.per_row ? j : 0];
    for (int64_t i = 0; i < a.m; ++i) {
      const float* x = a.x + i * k;
      float dot;
#if defined(__AVX512F__)
      __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      int64_t c = 0;
      for (; c + 64 <= k; c += 64) {
        s0 = _mm512_add_ps(s0, _mm512_mul_ps(_mm512_loadu_ps(x + c), _mm512_load_ps(wf.p + c)));
        s1 = _mm512_add_ps(s1, _mm512_mul_ps(_mm512_loadu_ps(x + c + 16), _mm512_load_ps(wf.p + c + 16)));
        s2 = _mm512_add_ps(s2, _mm512_mul_ps(_mm512_loadu_ps(x + c + 32), _mm512_load_ps(wf.p + c + 32)));
        s3 = _mm512_add_ps(s3, _mm512_mul_ps(_mm512_loadu_ps(x + c + 48), _mm512_load_ps(wf.p + c + 48)));
      }
      for (; c < k; c += 16) {
        const int cnt = static_cast<int>(min_i64(16, k - c));
        const __mmask16 mk = static_cast<__mmask16>(cnt >= 16 ? 0xffffu : ((1u << cnt) - 1u));
        s0 = _mm512_add_ps(s0, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, x + c), _mm512_maskz_loadu_ps(mk, wf.p + c)));
      }
      dot = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
#elif defined(__AVX2__)
      __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      int64_t c = 0;
      for (; c + 32 <= k; c += 32) {
        s0 = _mm256_add_ps(s0, _mm256_mul_ps(_mm256_loadu_ps(x + c), _mm256_load_ps(wf.p + c)));
        s1 = _mm256_add_ps(s1, _mm256_mul_ps(_mm256_loadu_ps(x + c + 8), _mm256_load_ps(wf.p + c + 8)));
        s2 = _mm256_add_ps(s2, _mm256_mul_ps(_mm256_loadu_ps(x + c + 16), _mm256_load_ps(wf.p + c + 16)));
        s3 = _mm256_add_ps(s3, _mm256_mul_ps(_mm256_loadu_ps(x + c + 24), _mm256_load_ps(wf.p + c + 24)));
      }
      alignas(32) float t[8];
      _mm256_store_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
      float tail = 0.0f;
      for (; c < k; ++c) tail += x[c] * wf.p[c];
      dot = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7])) + tail;
#else
      double d = 0.0;
      for (int64_t c = 0; c < k; ++c) d += static_cast<double>(x[c]) * wf.p[c];
      dot = static_cast<float>(d);
#endif
      a.out[i * a.w.n + j] = float_output(dot, gamma, a.bias, j);
    }
  }
}

}  // namespace

void quantize_rows(const void* x, int dt, int64_t k, int64_t kp, float eps, int64_t i0, int64_t i1, int8_t* xq,
                   float* x_scale) {
  const int64_t esize = dt == 1 ? 8 : (dt == 0 ? 4 : 2);
  for (int64_t i = i0; i < i1; ++i)
    quantize_row(static_cast<const char*>(x) + i * k * esize, dt, k, kp, eps, xq + i * kp, x_scale + i);
}

void int8_gemv(const Int8Work& a, int64_t j0, int64_t j1) { int8_gemv_impl(a, j0, j1); }

bool int8_gemm(const Int8Work& a, int64_t j0, int64_t j1) {
#if defined(FASTEMB_TERNARY_VNNI)
  int8_gemm_impl(a, j0, j1);
  return true;
#else
  (void)a;
  (void)j0;
  (void)j1;
  return false;
#endif
}

void float_rows(const FloatWork& a, int64_t j0, int64_t j1) { float_rows_impl(a, j0, j1); }

}  // namespace fastemb::ternary::FASTEMB_ISA_NS

#pragma GCC diagnostic pop
