// The ternary kernels, written once and compiled per ISA: ternary_<isa>.cpp defines FASTEMB_ISA_NS
// and includes this file with that ISA's flags. Everything here lives in that namespace with
// internal linkage, and no std:: template is instantiated (the linker could otherwise hand one
// ISA's code to another's caller; see centroid_kernels.h).
//
// Integer path, GEMV form (int8_gemv, every ISA, any m; the dispatcher uses it below the GEMM
//   crossover): a tile of MR activation rows x NR weight rows is walked block by block (256
//   weights = 64 packed bytes per weight row). One 64-byte load (AVX-512) or two 32-byte loads
//   (AVX2) of a weight row,
//   shifted right by 2s and masked with 3, give the u8 codes of 64 (32) consecutive weights, aligned
//   with the activations b*256 + 64s ...; the products are summed with
//     AVX-512 VNNI: vpdpbusd (u8 codes x s8 activations -> int32 lanes), or
//     AVX2: vpmaddubsw (-> s16 pairs, |pair| <= 2*3*128) summed in int16 over a few blocks (no
//           saturation, bounds at gemv1_tile), then vpmaddwd with ones -> int32 (the AVX2 tiles,
//           their own loop order and prefetch are described at gemv1_tile),
//   and acc = sum(c x) - sum(x) (sum_x computed once per activation row by the dispatcher). Each
//   decoded code vector meets MR activation rows, each activation load NR weight rows. For m >= 2
//   (x86 SIMD) the rows are split into groups of <= kMaxMR and every group runs over a tile of
//   weight rows before the next tile (gemvm_rows): each weight byte comes from DRAM once; the
//   activations come block-interleaved from the dispatcher (Int8Work::xblk).
// Integer path, GEMM form (int8_gemm, AVX-512 VNNI and AVX2; m >= the crossover): a panel of kGemmCols
//   weight rows is decoded once to u8 codes [col][kp]; activations come repacked by the dispatcher
//   as [row group of 16][kp/4][16][4] so that one zmm holds 4 consecutive k of 16 rows. The
//   micro-kernel keeps MV x NJ zmm accumulators (MV groups of 16 rows x NJ weight columns):
//   per 4 k, MV activation loads, NJ code broadcasts (vpbroadcastd), MV*NJ vpdpbusd. K is blocked
//   by 256 (activation tile <= 16 KB in L1) with accumulators parked in a per-task int32 tile.
//   AVX2 keeps the data flow with a 16-row x 6-column ymm micro-kernel (vpmaddubsw into int16,
//   vpmaddwd into the int32 tile every 128 k; see gemm2_micro).
// AVX-VNNI (ternary_avxvnni.cpp, kernel variant "avx2_vnni"): the AVX2 code above, every line of it,
//   with vpdpbusd on ymm (VEX) as its product step (dp_add below: straight into int32 lanes).
// ARM64 i8mm (ternary_i8mm.cpp, kernel variant "dotprod_i8mm": the dotprod GEMV below the
//   crossover, plus this GEMM form; ternary_gemm_i8mm.h). usmmla (vusmmlaq_s32) multiplies a 2x8
//   u8 matrix by an 8x2 s8 one into a 2x2 int32 tile: register a = columns (weight rows) c, c+1 x 8
//   consecutive k (bytes 0-7: column c, 8-15: column c+1), register b = activation rows r, r+1 x the
//   same 8 k, result lanes [c.r, c.r+1, c+1.r, c+1.r+1]. So both operands are "2 x 8 k" pairs:
//     activations: the dispatcher packs k-groups of 8 (IsaKernels::gemm_k_group) instead of 4:
//       [k block][row group of 16][32 k-groups][16 rows][8 bytes], so 16 bytes at
//       128 q + 16 p are rows 2p, 2p+1 of the group x k 8q..8q+7 (one load, no shuffle);
//     weights: decode_panel(paired) writes [k block][col pair][32 k-groups][2 cols][8 codes].
//   The micro-kernel (mmla_micro) is 8 rows x 8 columns: 4 row-pair x 4 column-pair accumulators
//   (16 registers) + 4 + 4 operands; per 8 k: 8 loads, 16 usmmla (512 multiply-adds). A 16-row group
//   x 48-column panel is 2 x 6 of them per k block (1 x 6 for a last group of <= 8 rows); sums go
//   into the int32 tile (ct, [col][row]) after each block with two 64-bit zips per pair of
//   accumulators (4 consecutive rows of a column). Crossover 16 rows (gemm_min_rows: unmeasured).
//   Exact: a lane adds 8 products c x with c <= 3, |x| <= 128 per step, and the tile holds
//   sum_k c x over the whole row, |.| <= 3 * 128 * kp <= 384 * 2^22 < 2^31 (kMaxK); the output
//   ct - sum_x = sum (c - 1) x fits as well (the x86 forms' bounds).
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
#if defined(FASTEMB_ARM_SIMD)  // ARM64 neon / dotprod variants (CMakeLists.txt)
#include <arm_neon.h>
#endif

#include "ternary/ternary.h"
#include "ternary/ternary_internal.h"
#include "ternary/ternary_math.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define FASTEMB_TERNARY_VNNI 1
#endif
// ARM64 i8mm kernel set (ternary_i8mm.cpp): the dotprod GEMV plus the usmmla GEMM form.
#if defined(FASTEMB_ARM_SIMD) && defined(__ARM_FEATURE_DOTPROD) && defined(__ARM_FEATURE_MATMUL_INT8)
#define FASTEMB_TERNARY_USMMLA 1
#endif
// The zmm quantize and float paths: AVX-512 builds, except the ymm-only EVEX twin of the AVX-VNNI
// variant (tests/native/ternary_avxvnni_evex.cpp: AVX512VL + VNNI flags for its vpdpbusd alone).
#if defined(__AVX512F__) && !defined(FASTEMB_TERNARY_AVXVNNI_EVEX)
#define FASTEMB_TERNARY_ZMM 1
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

#if defined(FASTEMB_TERNARY_ZMM)
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

void quantize_row(const void* xrow, int dt, int64_t k, int64_t kp, float eps, int rule, int8_t* q, float* s_out) {
  float amax = 0.0f;
  int64_t c = 0;
#if defined(FASTEMB_TERNARY_ZMM)
  {
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    __m512 m0 = _mm512_setzero_ps();
    for (; c < k; c += 16) {
      const int cnt = static_cast<int>(min_i64(16, k - c));
      m0 = _mm512_max_ps(m0, _mm512_and_ps(load16(xrow, dt, c, cnt), sign));
    }
    amax = _mm512_reduce_max_ps(m0);
  }
  const float s = activation_scale(amax, eps, rule);
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
  const float s = activation_scale(amax, eps, rule);
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
  const float s = activation_scale(amax, eps, rule);
  for (c = 0; c < k; ++c) q[c] = quantize_value(load_activation(xrow, dt, c), s);
#endif
  if (kp > k) std::memset(q + k, 0, static_cast<size_t>(kp - k));
  *s_out = s;
}

// ---- integer GEMV form --------------------------------------------------------------------------

#if defined(FASTEMB_TERNARY_VNNI)
// Memory (as the AVX2 GEMV): weight rows [j0, j1) of a task are contiguous and read in order. Each
// block step prefetches NR lines at a linear cursor kPrefetch512 bytes ahead of the bytes consumed
// so far (clamped to the task's rows; pf_end = null: none), into L2 (prefetcht1), and
// int8_gemv_impl starts the task's first kPrefetch512 bytes. Measured on the Zen 4 VM (cold
// weights, 2 threads, m = 1): it replaced a 512-byte prefetcht0 that left the AVX-512 GEMV ~1.25-1.4x
// slower than the AVX2 one (now on par); 8 KB into L2 beat 2-4 KB (t0 or t1), 16 KB, t2, nta and
// 2 weight rows per tile; without software prefetch it runs 2-3x slower.
constexpr int64_t kPrefetch512 = 8192;

// Prefetches `lines` cache lines from p, not past end. Compared as integers (see the AVX2
// prefetch_lines: GCC 12 -O2 dropped the prefetches of a pointer-comparison form).
inline void prefetch_lines_512(const uint8_t* p, const uint8_t* end, int lines) {
  const uintptr_t e = reinterpret_cast<uintptr_t>(end);
  for (int l = 0; l < lines; ++l) {
    const uint8_t* q = p + 64 * l;
    if (reinterpret_cast<uintptr_t>(q) < e) _mm_prefetch(reinterpret_cast<const char*>(q), _MM_HINT_T1);
  }
}

template <int MR, int NR>
inline void gemv_tile(const Int8Work& a, int64_t i0, int64_t j0, const uint8_t* pf_end);
// One activation row: the codes are not shifted down; sub-vector s is masked in place
// (w & (3 << 2s)), so its vpdpbusd sums are 4^s * sum(c x), kept in accumulator s and scaled back
// with an exact arithmetic shift at the end (each lane sum is a multiple of 4^s). 4 ops fewer per
// block than shift + mask; |acc_3| <= (k / 16) * 4 * 192 * 128 < 2^31 for k <= kMaxK.
template <>
inline void gemv_tile<1, 1>(const Int8Work& a, int64_t i0, int64_t j0, const uint8_t* pf_end) {
  const int64_t kp = a.w.kp, nb = kp / kBlock, rs = kp / 4;
  const __m512i m0 = _mm512_set1_epi8(0x03), m1 = _mm512_set1_epi8(0x0c), m2 = _mm512_set1_epi8(0x30),
                m3 = _mm512_set1_epi8(static_cast<char>(0xc0));
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  const uint8_t* wr = a.w.packed + j0 * rs;
  const int8_t* xr = a.xq + i0 * kp;
  const uint8_t* pf = wr + kPrefetch512;
  for (int64_t b = 0; b < nb; ++b) {
    prefetch_lines_512(pf + 64 * b, pf_end, 1);
    const __m512i wv = _mm512_loadu_si512(wr + 64 * b);
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

// The int32 sums of v[0], ..., v[NR - 1] (NR <= 4) in the low lanes of an xmm (the others 0): a
// transposing tree (19 ops for 4 vectors against 36 for 4 separate reductions).
inline __m256i fold256(__m512i v) {
  return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}
template <int NR>
inline __m128i hsum_x4(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
  static_assert(NR >= 1 && NR <= 4, "hsum_x4 takes 1 to 4 vectors");
  const __m256i z = _mm256_setzero_si256();
  const __m256i h0 = fold256(v0), h1 = NR > 1 ? fold256(v1) : z, h2 = NR > 2 ? fold256(v2) : z,
                h3 = NR > 3 ? fold256(v3) : z;
  const __m256i ab = _mm256_add_epi32(_mm256_unpacklo_epi32(h0, h1), _mm256_unpackhi_epi32(h0, h1));
  const __m256i cd = _mm256_add_epi32(_mm256_unpacklo_epi32(h2, h3), _mm256_unpackhi_epi32(h2, h3));
  const __m256i t = _mm256_add_epi32(_mm256_unpacklo_epi64(ab, cd), _mm256_unpackhi_epi64(ab, cd));
  return _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
}

// store_int8 for the nr (<= 4) outputs (i, j0 .. j0 + nr - 1) from their dot sums (before the
// sum_x correction), in SIMD: the same IEEE operations as int8_output, so the same bits.
inline void store_int8_x4(const Int8Work& a, int64_t i, int64_t j0, int nr, __m128i sums) {
  const __mmask8 mk = static_cast<__mmask8>((1u << nr) - 1u);
  const int64_t n = a.w.n;
  const __m128i v = _mm_sub_epi32(sums, _mm_set1_epi32(a.sum_x[i]));
  if (a.acc) _mm_mask_storeu_epi32(a.acc + i * n + j0, mk, v);
  const __m128 g = a.w.per_row ? _mm_maskz_loadu_ps(mk, a.w.scale + j0) : _mm_set1_ps(a.w.scale[0]);
  __m128 r = _mm_mul_ps(_mm_cvtepi32_ps(v), _mm_div_ps(g, _mm_set1_ps(a.x_scale[i])));
  if (a.bias) r = _mm_add_ps(r, _mm_maskz_loadu_ps(mk, a.bias + j0));
  _mm_mask_storeu_ps(a.out + i * n + j0, mk, r);
}

// Several activation rows (m >= 2; gemvm_rows): gemvm_tile<MR, NR>, MR <= 8 activation rows x NR
// weight rows with MR * NR zmm accumulators. Per sub-vector step s of a block: NR code vectors
// ((w >> 2s) & 3, decoded once each), MR activation loads (each used by NR vpdpbusd), MR * NR
// vpdpbusd. So a weight byte is decoded once for all MR rows and an activation load feeds NR
// products: loads per vpdpbusd 1 / NR + 1 / (4 MR), against 1 for the 8 x 1 tile this replaced
// (bound by its loads: 8 x 4096 x 4096 ran at ~0.55 vpdpbusd per cycle, this loop at ~0.88 with
// hot weights; every int32 lane sums at most k / 16 * 4 products of 3 * 128: no overflow).
template <int MR, int NR>
__attribute__((noinline)) void gemvm_tile(const Int8Work& a, int64_t i0, int64_t j0, const uint8_t* pf_end) {
  const int64_t kp = a.w.kp, nb = kp / kBlock, rs = kp / 4;
  const __m512i mask = _mm512_set1_epi8(3);
  __m512i acc[MR][NR];
  const uint8_t* w0 = a.w.packed + j0 * rs;
  const int8_t* x0 = a.xblk + i0 * kBlock;  // [nb][m][256]: this tile's rows of block b are contiguous
  const int64_t xstride = a.m * kBlock;
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_setzero_si512();
  const uint8_t* pf = w0 + kPrefetch512;
  for (int64_t b = 0; b < nb; ++b) {
    prefetch_lines_512(pf + NR * 64 * b, pf_end, NR);
    const uint8_t* wb = w0 + 64 * b;
    const int8_t* xb = x0 + xstride * b;
#pragma GCC unroll 4
    for (int s = 0; s < 4; ++s) {
      __m512i c[NR];
#pragma GCC unroll 4
      for (int r = 0; r < NR; ++r) {
        const __m512i v = _mm512_loadu_si512(wb + r * rs);
        c[r] = _mm512_and_si512(s ? _mm512_srli_epi16(v, 2 * s) : v, mask);
      }
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        __m512i xv = _mm512_loadu_si512(xb + i * kBlock + 64 * s);
        // Keeps xv in a register: without it GCC 12 folds the load into each of the NR vpdpbusd
        // (NR loads instead of one). No instruction is emitted.
        __asm__("" : "+v"(xv));
#pragma GCC unroll 4
        for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_dpbusd_epi32(acc[i][r], c[r], xv);
      }
    }
  }
  // Parked in memory first: reduced straight from the registers, GCC 12 spilled accumulators
  // inside the k loop (measured 1.15x slower).
  alignas(64) int32_t park[MR][NR][16];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int r = 0; r < NR; ++r) _mm512_store_si512(park[i][r], acc[i][r]);
  for (int i = 0; i < MR; ++i) {
    __m512i v[4];
    for (int r = 0; r < 4; ++r) v[r] = _mm512_load_si512(park[i][r < NR ? r : 0]);
    store_int8_x4(a, i0 + i, j0, NR, hsum_x4<NR>(v[0], v[1], v[2], v[3]));
  }
}
#elif defined(__AVX2__)
// AVX2 GEMV (no AVX-512 narrowed: the op count per 256 weights is what limits a 256-bit core).
//
// One activation row (gemv1_tile, the m = 1 case): the codes are not shifted down one by one; of a
// 32-byte load w (4 x 32 codes) and w4 = w >> 4 (one vpsrlw), sub-vector s is
//   s = 0: w & 0x03 -> c,   s = 1: w & 0x0c -> 4c,   s = 2: w4 & 0x03 -> c,   s = 3: w4 & 0x0c -> 4c,
// so 1 shift + 4 ands per 128 weights (instead of 3 + 4). vpmaddubsw (u8 codes x s8 activations)
// of the scale-1 vectors goes to the int16 accumulator lo, of the scale-4 ones to hi. Bounds (codes
// <= 3, |x| <= 128; code 3 is never packed but is decoded like the reference): one vpmaddubsw lane
// |c x + c' x'| <= 768 (lo) / 3072 (hi); per 256-weight block 4 of each are summed per lane, so
// over kGroup1 = 2 blocks |lo| <= 6144 and |hi| <= 24576 < 2^15. Every hi lane is a multiple of 4,
// so hi >> 2 (vpsraw) is exact; then vpmaddwd(lo + (hi >> 2), 1) -> int32 every 2 blocks.
// Per weight row and 256 weights: 2 loads, 2 shifts, 8 ands, 8 vpmaddubsw, 8 vpaddw, ~2 to flush.
//
// Several activation rows (gemvm_tile, m >= 2, groups of <= 4 rows; gemvm_rows): each decoded code
// vector ((w >> 2s) & 3, amortized over MR rows) meets MR activation vectors; one int16 accumulator
// per (row, weight row) takes 8 vpmaddubsw per block (|sum| <= 8 * 768 = 6144), flushed with
// vpmaddwd every kGroupM = 4 blocks (24576 < 2^15). On the Zen 4 VM this form runs at ~1.1
// vpmaddubsw + vpaddw pairs per cycle whatever the tile (1.6 in a loop of nothing else): its
// vector ports, not the decode or the loads, bound it.
//
// Memory: weight rows [j0, j1) of a task are contiguous; a tile of NR rows is read as NR streams.
// Besides the hardware prefetchers, each block step prefetches NR lines at a linear cursor
// kPrefetch2 bytes ahead of the bytes consumed so far (clamped to the task's rows), so that the
// next tile's lines are in flight while this one runs, whatever the row length.
constexpr int64_t kGroup1 = 2;
constexpr int64_t kGroupM = 4;
// Tile shapes and prefetch distance, measured on the Zen 4 VM with FASTEMB_FORCE_ISA=avx2 (cold
// weights, 2 threads): m = 1 takes 2 weight rows per tile (1, 3, 4 measured equal or slower); m >= 2
// takes groups of <= 4 activation rows x 3 (groups of 1-2 rows) or 2 (3-4 rows) weight rows (hot
// weights, 1 thread: 4 x 2 1.15x faster than the 3 + 3 + 2 rows x 3 it replaced at m = 8; 8 x 1,
// 8 x 2, 4 x 3, 4 x 4 slower); the prefetch cursor runs 2 KB ahead (1 KB and 8-16 KB slower;
// without it 2-3x slower on that VM, whose hardware prefetchers did little for these streams).
constexpr int kNR1 = 2;
constexpr int64_t kPrefetch2 = 2048;

inline int32_t hsum_epi32(__m256i v) {
  const __m128i x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i y = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4e));
  return _mm_cvtsi128_si32(_mm_add_epi32(y, _mm_shuffle_epi32(y, 0xb1)));
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// An empty asm that "changes" v: the accumulator chains stay chains. Without it GCC 12
// reassociates the int16 sums into trees of partial products and spills most of them to the stack
// (measured 1.3-1.5x slower). No instruction is emitted.
#define FT2_PIN(v) __asm__("" : "+x"(v))

// The product step of the 256-bit integer kernels (gemv1_tile, gemvm_tile, gemm2_micro, t5_tile):
// the only code in which the avx2 and AVX-VNNI variants differ. The products c x (u8 codes x s8
// activations, 32 per vector) are summed within each group of 4 bytes (the int32 lane they share):
//   AVX2 (vpmaddubsw + vpaddw): a lane's two pairs go to two int16 lanes; the callers bound those
//     int16 sums (< 2^15, no saturation) and call dp_to_i32 (vpmaddwd with ones: the two pair
//     sums added into their int32 lane) before they could overflow.
//   AVX-VNNI (vpdpbusd, FASTEMB_TERNARY_AVXVNNI; the driver's EVEX twin FASTEMB_TERNARY_AVXVNNI_EVEX):
//     the four products go straight into the int32 lane, and dp_to_i32 is the identity. The same
//     flush points stay exact: every value an int16 lane could hold fits an int32 lane, and the
//     total of a lane over all k fits int32 (kMaxK), so the int32 sums are the same integers.
// dp_fold_scaled(lo, hi) = dp_to_i32(lo + hi / 4) for hi's lanes all multiples of 4 (exact shift).
#if defined(FASTEMB_TERNARY_AVXVNNI_EVEX)
// Same instruction, EVEX encoding (AVX512-VNNI + AVX512VL): runs the AVX-VNNI variant's code on
// CPUs without AVX-VNNI (no emulator here has it), so the native driver can check it bit for bit.
#define FASTEMB_TERNARY_YMM_DPBUSD(acc, c, x) _mm256_dpbusd_epi32(acc, c, x)
#elif defined(FASTEMB_TERNARY_AVXVNNI)
#define FASTEMB_TERNARY_YMM_DPBUSD(acc, c, x) _mm256_dpbusd_avx_epi32(acc, c, x)
#endif
#if defined(FASTEMB_TERNARY_YMM_DPBUSD)
inline __m256i dp_add(__m256i acc, __m256i c, __m256i x) { return FASTEMB_TERNARY_YMM_DPBUSD(acc, c, x); }
inline __m256i dp_add2(__m256i acc, __m256i c0, __m256i x0, __m256i c1, __m256i x1) {
  return FASTEMB_TERNARY_YMM_DPBUSD(FASTEMB_TERNARY_YMM_DPBUSD(acc, c0, x0), c1, x1);
}
inline __m256i dp_to_i32(__m256i acc) { return acc; }
inline __m256i dp_fold_scaled(__m256i lo, __m256i hi) { return _mm256_add_epi32(lo, _mm256_srai_epi32(hi, 2)); }
#else
inline __m256i dp_add(__m256i acc, __m256i c, __m256i x) { return _mm256_add_epi16(acc, _mm256_maddubs_epi16(c, x)); }
inline __m256i dp_add2(__m256i acc, __m256i c0, __m256i x0, __m256i c1, __m256i x1) {
  return _mm256_add_epi16(acc, _mm256_add_epi16(_mm256_maddubs_epi16(c0, x0), _mm256_maddubs_epi16(c1, x1)));
}
inline __m256i dp_to_i32(__m256i acc) { return _mm256_madd_epi16(acc, _mm256_set1_epi16(1)); }
inline __m256i dp_fold_scaled(__m256i lo, __m256i hi) { return dp_to_i32(_mm256_add_epi16(lo, _mm256_srai_epi16(hi, 2))); }
#endif

// Prefetches `lines` cache lines from p, not past end (end = null: none). Compared as integers:
// written with pointer comparisons and an early return for null, GCC 12 -O2 dropped every
// prefetch of the calling loops.
inline void prefetch_lines(const uint8_t* p, const uint8_t* end, int lines) {
  const uintptr_t e = reinterpret_cast<uintptr_t>(end);
  for (int l = 0; l < lines; ++l) {
    const uint8_t* q = p + 64 * l;
    if (reinterpret_cast<uintptr_t>(q) < e) _mm_prefetch(reinterpret_cast<const char*>(q), _MM_HINT_T0);
  }
}

// int32 sums parked in memory between flushes (they are touched once per group of blocks), so
// that the registers hold the int16 accumulators, the codes and the activations.
template <int N>
struct Acc32 {
  alignas(32) int32_t v[N][8];
  Acc32() { std::memset(v, 0, sizeof(v)); }
  void add(int e, __m256i x) {
    __m256i* p = reinterpret_cast<__m256i*>(v[e]);
    _mm256_store_si256(p, _mm256_add_epi32(_mm256_load_si256(p), x));
  }
  int32_t sum(int e) const { return hsum_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(v[e]))); }
};

template <int NR>
inline void gemv1_tile(const Int8Work& a, int64_t i0, int64_t j0, const uint8_t* pf_end) {
  const int64_t kp = a.w.kp, nb = kp / kBlock, rs = kp / 4;
  const __m256i m03 = _mm256_set1_epi8(0x03), m0c = _mm256_set1_epi8(0x0c);
  const uint8_t* wr = a.w.packed + j0 * rs;
  const int8_t* xr = a.xq + i0 * kp;
  const uint8_t* pf = wr + kPrefetch2;
  Acc32<NR> acc;
  for (int64_t b0 = 0; b0 < nb; b0 += kGroup1) {
    const int64_t b1 = min_i64(nb, b0 + kGroup1);
    __m256i lo[NR], hi[NR];
    for (int r = 0; r < NR; ++r) lo[r] = hi[r] = _mm256_setzero_si256();
    for (int64_t b = b0; b < b1; ++b) {
      prefetch_lines(pf + NR * 64 * b, pf_end, NR);
      for (int h = 0; h < 2; ++h) {
        const int8_t* x = xr + 256 * b + 32 * h;
        const uint8_t* w = wr + 64 * b + 32 * h;
        for (int r = 0; r < NR; ++r) {
          const __m256i v = load256(w + r * rs), v4 = _mm256_srli_epi16(v, 4);
          lo[r] = dp_add2(lo[r], _mm256_and_si256(v, m03), load256(x), _mm256_and_si256(v4, m03), load256(x + 128));
          FT2_PIN(lo[r]);
          hi[r] = dp_add2(hi[r], _mm256_and_si256(v, m0c), load256(x + 64), _mm256_and_si256(v4, m0c), load256(x + 192));
          FT2_PIN(hi[r]);
        }
      }
    }
    for (int r = 0; r < NR; ++r)
      acc.add(r, dp_fold_scaled(lo[r], hi[r]));
  }
  for (int r = 0; r < NR; ++r) store_int8(a, i0, j0 + r, acc.sum(r) - a.sum_x[i0]);
}

template <int MR, int NR>
__attribute__((noinline)) void gemvm_tile(const Int8Work& a, int64_t i0, int64_t j0, const uint8_t* pf_end) {
  const int64_t kp = a.w.kp, nb = kp / kBlock, rs = kp / 4;
  const __m256i m03 = _mm256_set1_epi8(0x03);
  const uint8_t* wr = a.w.packed + j0 * rs;
  const int8_t* x0 = a.xblk + i0 * kBlock;  // [nb][m][256]: this tile's rows of block b are contiguous
  const int64_t xstride = a.m * kBlock;
  const uint8_t* pf = wr + kPrefetch2;
  Acc32<MR * NR> acc;
  for (int64_t b0 = 0; b0 < nb; b0 += kGroupM) {
    const int64_t b1 = min_i64(nb, b0 + kGroupM);
    __m256i s16[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < NR; ++r) s16[i][r] = _mm256_setzero_si256();
    for (int64_t b = b0; b < b1; ++b) {
      prefetch_lines(pf + NR * 64 * b, pf_end, NR);
      for (int h = 0; h < 2; ++h) {
        const int8_t* x = x0 + xstride * b + 32 * h;
        const uint8_t* w = wr + 64 * b + 32 * h;
        for (int s = 0; s < 4; ++s) {
          __m256i c[NR];
          for (int r = 0; r < NR; ++r) {
            const __m256i v = load256(w + r * rs);
            c[r] = _mm256_and_si256(s ? _mm256_srli_epi16(v, 2 * s) : v, m03);
          }
          for (int i = 0; i < MR; ++i) {
            const __m256i xv = load256(x + i * kBlock + 64 * s);
            for (int r = 0; r < NR; ++r) {
              s16[i][r] = dp_add(s16[i][r], c[r], xv);
              FT2_PIN(s16[i][r]);
            }
          }
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < NR; ++r) acc.add(i * NR + r, dp_to_i32(s16[i][r]));
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) store_int8(a, i0 + i, j0 + r, acc.sum(i * NR + r) - a.sum_x[i0 + i]);
}

#define FASTEMB_TERNARY_AVX2_GEMV 1
#elif defined(FASTEMB_ARM_SIMD) && defined(__ARM_FEATURE_DOTPROD)
// ARM64 dotprod: a 16-byte slice h of a block's 64 weight bytes, shifted right by 2s and masked
// with 3, gives the codes of weights b*256 + 64s + 16h ...; minus 1 they are the signed weights
// (-1, 0, 1), so sdot (vdotq_s32: s8 x s8, 4 products per int32 lane) sums w x directly, exactly
// (no sum_x correction, the serial variant's integers). MR activation rows x NR weight rows.
// (The plain neon variant runs the serial loop below, auto-vectorized.)
template <int MR, int NR>
inline void gemv_tile(const Int8Work& a, int64_t i0, int64_t j0) {
  const int64_t kp = a.w.kp, nb = kp / kBlock, rs = kp / 4;
  const uint8x16_t mask = vdupq_n_u8(3);
  const int8x16_t one = vdupq_n_s8(1);
  int32x4_t acc[MR][NR];
  const uint8_t* wr[NR];
  const int8_t* xr[MR];
  for (int r = 0; r < NR; ++r) wr[r] = a.w.packed + (j0 + r) * rs;
  for (int i = 0; i < MR; ++i) xr[i] = a.xq + (i0 + i) * kp;
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) acc[i][r] = vdupq_n_s32(0);
  for (int64_t b = 0; b < nb; ++b) {
    for (int h = 0; h < 4; ++h) {
      uint8x16_t wv[NR];
      for (int r = 0; r < NR; ++r) wv[r] = vld1q_u8(wr[r] + 64 * b + 16 * h);
#define FASTEMB_TERNARY_SDOT_STEP(S)                                                                     \
  {                                                                                                      \
    int8x16_t xv[MR];                                                                                    \
    for (int i = 0; i < MR; ++i) xv[i] = vld1q_s8(xr[i] + 256 * b + 64 * (S) + 16 * h);                 \
    for (int r = 0; r < NR; ++r) {                                                                       \
      const uint8x16_t c = vandq_u8((S) ? vshrq_n_u8(wv[r], 2 * (S) + ((S) == 0)) : wv[r], mask);       \
      const int8x16_t wt = vsubq_s8(vreinterpretq_s8_u8(c), one);                                        \
      for (int i = 0; i < MR; ++i) acc[i][r] = vdotq_s32(acc[i][r], wt, xv[i]);                          \
    }                                                                                                    \
  }
      FASTEMB_TERNARY_SDOT_STEP(0)
      FASTEMB_TERNARY_SDOT_STEP(1)
      FASTEMB_TERNARY_SDOT_STEP(2)
      FASTEMB_TERNARY_SDOT_STEP(3)
#undef FASTEMB_TERNARY_SDOT_STEP
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) store_int8(a, i0 + i, j0 + r, vaddvq_s32(acc[i][r]));
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

#if defined(FASTEMB_TERNARY_AVX2_GEMV) || defined(FASTEMB_TERNARY_VNNI)
// Several activation rows (AVX-512 VNNI and AVX2): the rows are split into ceil(m / kMaxMR) groups
// of near-equal size (AVX-512: 8 + 8 for 16, 5 + 4 for 9); for each tile of NR weight rows, every
// group in turn runs gemvm_tile, so the tile's weights come from DRAM once (the first group's pass
// prefetches) and from L1 for the other groups.
#if defined(FASTEMB_TERNARY_VNNI)
constexpr int64_t kMaxMR = 8;
// Weight rows per tile for groups of (at most) mr activation rows, measured on the Zen 4 VM (cold
// weights, 1 thread, CPU time, 4096x4096 and 2560x6912): 4 up to 6 rows (2 x 4 1.18x faster than
// 2 x 2 at k = 4096; 3 and 4 within 3% for 3-6 rows), 3 for 7 and 8 rows (8 x 3 1.17x faster than
// 8 x 4, whose 32 accumulators spill).
int gemvm_nr(int64_t mr) { return mr <= 6 ? 4 : 3; }
#else
constexpr int64_t kMaxMR = 4;
// Weight rows per tile for groups of (at most) mr activation rows (see kNR1).
int gemvm_nr(int64_t mr) { return mr <= 2 ? 3 : 2; }
#endif

using TileFn = void (*)(const Int8Work&, int64_t, int64_t, const uint8_t*);

template <int NR>
TileFn tile_for(int64_t mr) {
  switch (mr) {
    case 1: return gemvm_tile<1, NR>;
    case 2: return gemvm_tile<2, NR>;
    case 3: return gemvm_tile<3, NR>;
#if defined(FASTEMB_TERNARY_VNNI)
    case 4: return gemvm_tile<4, NR>;
    case 5: return gemvm_tile<5, NR>;
    case 6: return gemvm_tile<6, NR>;
    case 7: return gemvm_tile<7, NR>;
    default: return gemvm_tile<8, NR>;
#else
    default: return gemvm_tile<4, NR>;
#endif
  }
}
TileFn tile_for_nr(int nr, int64_t mr) {
  switch (nr) {
    case 1: return tile_for<1>(mr);
    case 2: return tile_for<2>(mr);
    case 3: return tile_for<3>(mr);
    default: return tile_for<4>(mr);
  }
}

void gemvm_rows(const Int8Work& a, int64_t j0, int64_t j1, const uint8_t* pf_end) {
  constexpr int64_t kMaxGroups = 64;
  const int64_t groups = (a.m + kMaxMR - 1) / kMaxMR;
  const int64_t base = a.m / groups, extra = a.m % groups;  // the first `extra` groups get base + 1 rows
  const int nr = gemvm_nr(base + (extra ? 1 : 0));
  for (int64_t g0 = 0; g0 < groups; g0 += kMaxGroups) {  // at most kMaxGroups groups per pass over j
    const int64_t g1 = min_i64(groups, g0 + kMaxGroups);
    int64_t first_row[kMaxGroups];
    TileFn wide[kMaxGroups], one[kMaxGroups];
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t rows = base + (g < extra ? 1 : 0);
      first_row[g - g0] = g * base + min_i64(g, extra);
      wide[g - g0] = tile_for_nr(nr, rows);
      one[g - g0] = tile_for_nr(1, rows);
    }
    int64_t j = j0;
    for (; j + nr <= j1; j += nr)
      for (int64_t g = 0; g < g1 - g0; ++g) wide[g](a, first_row[g], j, g == 0 ? pf_end : nullptr);
    for (; j < j1; ++j)
      for (int64_t g = 0; g < g1 - g0; ++g) one[g](a, first_row[g], j, g == 0 ? pf_end : nullptr);
  }
}
#endif

#if defined(FASTEMB_TERNARY_AVX2_GEMV)
// AVX2: one activation row -> gemv1_tile over kNR1 weight rows at a time; several -> gemvm_rows.
void int8_gemv_impl(const Int8Work& a, int64_t j0, int64_t j1) {
  const int64_t rs = a.w.kp / 4;
  const uint8_t* pf_end = a.w.packed + j1 * rs;
  // The tiles prefetch kPrefetch2 bytes ahead of themselves: start the task's first bytes now.
  prefetch_lines(a.w.packed + j0 * rs, pf_end, static_cast<int>(kPrefetch2 / 64));
  if (a.m == 1) {
    int64_t j = j0;
    for (; j + kNR1 <= j1; j += kNR1) gemv1_tile<kNR1>(a, 0, j, pf_end);
    for (; j < j1; ++j) gemv1_tile<1>(a, 0, j, pf_end);
    return;
  }
  gemvm_rows(a, j0, j1, pf_end);
}
#elif defined(FASTEMB_TERNARY_VNNI)
// AVX-512 VNNI: one activation row -> gemv_tile<1, 1> over the task's weight rows; several ->
// gemvm_rows.
void int8_gemv_impl(const Int8Work& a, int64_t j0, int64_t j1) {
  const int64_t rs = a.w.kp / 4;
  const uint8_t* pf_end = a.w.packed + j1 * rs;
  // The tiles prefetch kPrefetch512 bytes ahead of themselves: start the task's first bytes now.
  prefetch_lines_512(a.w.packed + j0 * rs, pf_end, static_cast<int>(kPrefetch512 / 64));
  if (a.m == 1) {
    for (int64_t j = j0; j < j1; ++j) gemv_tile<1, 1>(a, 0, j, pf_end);
    return;
  }
  gemvm_rows(a, j0, j1, pf_end);
}
#else
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

#endif

// ---- integer GEMM forms: what both share ------------------------------------------------------

#if defined(FASTEMB_TERNARY_VNNI) || defined(FASTEMB_TERNARY_AVX2_GEMV) || defined(FASTEMB_TERNARY_USMMLA)
constexpr int64_t kMc = 256;  // activation rows per pass (int32 tile 48 x 256 = 48 KB)
static_assert(kBlock == 256, "the GEMM forms block k by one packed block");

// The decoded panel of the kGemmCols weight rows from j0: [k block][col][256 u8 codes], the code of
// packed byte t, bits 2s..2s+1, at 64 s + t; columns past ncols get code 1 (weight 0).
// decode64(src, dst) writes the 256 codes of one 64-byte packed block (the ISA's shifts and masks).
// paired (the i8mm form): [k block][col pair][32 k-groups of 8][2 cols][8 codes] instead, so that one
// 16-byte load is a usmmla operand (columns 2p, 2p+1 x 8 k); a column pair starts where its even
// column would in the plain layout.
template <class Decode64>
inline void decode_panel(const Int8Work& a, int64_t j0, int64_t ncols, int64_t nb, uint8_t* panel, Decode64 decode64,
                         bool paired = false) {
  const int64_t rs = a.w.kp / 4;
  alignas(64) uint8_t one[256];
  for (int64_t c = 0; c < kGemmCols; ++c) {
    const uint8_t* src = a.w.packed + (j0 + c) * rs;
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* dst = paired ? one : panel + (b * kGemmCols + c) * 256;
      if (c >= ncols) std::memset(dst, 1, 256);
      else decode64(src + 64 * b, dst);
      if (paired) {
        uint8_t* pair = panel + (b * kGemmCols + (c & ~int64_t(1))) * 256 + 8 * (c & 1);
        for (int64_t q = 0; q < 32; ++q) std::memcpy(pair + 16 * q, one + 8 * q, 8);
      }
    }
  }
}

// Rows [r0, r0 + rows) of the int32 tile ct ([col][ldc]) -> the outputs of columns [j0, j0 + ncols).
inline void store_gemm_tile(const Int8Work& a, int64_t r0, int64_t rows, int64_t j0, int64_t ncols, const int32_t* ct,
                            int64_t ldc) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < ncols; ++c) store_int8(a, r0 + i, j0 + c, ct[c * ldc + i] - a.sum_x[r0 + i]);
}
#endif

// ---- integer GEMM form (AVX-512 VNNI) -----------------------------------------------------------

#if defined(FASTEMB_TERNARY_VNNI)

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
  const int64_t nb = a.w.kp / kBlock;
  const int64_t all_groups = (a.m + 15) / 16;
  const int64_t ncols = j1 - j0;
  Buf<uint8_t> panel(nb * kGemmCols * 256);
  const __m512i mask = _mm512_set1_epi8(3);
  decode_panel(a, j0, ncols, nb, panel.p, [mask](const uint8_t* src, uint8_t* dst) {
    const __m512i v = _mm512_loadu_si512(src);
    _mm512_store_si512(dst, _mm512_and_si512(v, mask));
    _mm512_store_si512(dst + 64, _mm512_and_si512(_mm512_srli_epi16(v, 2), mask));
    _mm512_store_si512(dst + 128, _mm512_and_si512(_mm512_srli_epi16(v, 4), mask));
    _mm512_store_si512(dst + 192, _mm512_and_si512(_mm512_srli_epi16(v, 6), mask));
  });
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
    store_gemm_tile(a, r0, rows, j0, ncols, ct.p, ldc);
  }
}
#elif defined(FASTEMB_TERNARY_AVX2_GEMV)
// ---- integer GEMM form (AVX2) -------------------------------------------------------------------
// The same data flow as the VNNI form (decoded panel of kGemmCols weight rows, activations repacked
// by the dispatcher as [k block][group of 16 rows][64 k-groups of 4][16 rows][4 bytes]), with a
// micro-kernel built for 16 ymm registers and no vpdpbusd: per 4 k, one 16-row group is 2 ymm
// (rows 0-7, 8-15; x0, x1), the 4 codes of a weight column are broadcast (vpbroadcastd from the
// panel), and vpmaddubsw (u8 codes x s8 activations) gives per row 2 int16 pair sums, added into
// int16 accumulators: 12 of them (2 row vectors x 6 columns) + 2 activations + 1 broadcast = 15
// registers; per 4 k: 2 loads, 6 broadcasts, 12 vpmaddubsw, 12 vpaddw. Bounds: one lane
// |c x + c' x'| <= 2 * 3 * 128 = 768 (codes <= 3), so 32 steps (128 k) sum to <= 24576 < 2^15;
// then vpmaddwd with ones adds each row's two pair sums into the int32 tile (ct, [col][row]).
constexpr int64_t kFlushSteps = 32;   // k-groups of 4 between int16 -> int32 flushes

#define G2_J6(M) M(0) M(1) M(2) M(3) M(4) M(5)
#define G2_ZERO(j) __m256i c0_##j = _mm256_setzero_si256(), c1_##j = _mm256_setzero_si256();
#define G2_COL(j)                                                                          \
  {                                                                                        \
    const __m256i w = _mm256_set1_epi32(static_cast<int>(load_u32(pb + (j) * 256 + 4 * q))); \
    c0_##j = dp_add(c0_##j, w, x0);                                                        \
    FT2_PIN(c0_##j);                                                                       \
    c1_##j = dp_add(c1_##j, w, x1);                                                        \
    FT2_PIN(c1_##j);                                                                       \
  }
#define G2_FLUSH(j)                                                                            \
  {                                                                                            \
    __m256i* p0 = reinterpret_cast<__m256i*>(ct + (j) * ldc);                                  \
    _mm256_store_si256(p0, _mm256_add_epi32(_mm256_load_si256(p0), dp_to_i32(c0_##j)));         \
    _mm256_store_si256(p0 + 1, _mm256_add_epi32(_mm256_load_si256(p0 + 1), dp_to_i32(c1_##j))); \
  }

// One k block (64 k-groups of 4) of one 16-row group (xb: [64][64 bytes]) x 6 weight columns
// (pb: codes [col][256]); the int32 sums are added into ct[j * ldc + 0..15].
__attribute__((noinline)) void gemm2_micro(const int8_t* xb, const uint8_t* pb, int32_t* ct, int64_t ldc) {
  for (int64_t q0 = 0; q0 < 64; q0 += kFlushSteps) {
    G2_J6(G2_ZERO)
    for (int64_t q = q0; q < q0 + kFlushSteps; ++q) {
      const __m256i x0 = load256(xb + 64 * q);
      const __m256i x1 = load256(xb + 64 * q + 32);
      G2_J6(G2_COL)
    }
    G2_J6(G2_FLUSH)
  }
}

void int8_gemm_impl(const Int8Work& a, int64_t j0, int64_t j1) {
  static_assert(kGemmCols % 6 == 0, "panel width");
  const int64_t nb = a.w.kp / kBlock;
  const int64_t all_groups = (a.m + 15) / 16;
  const int64_t ncols = j1 - j0;
  Buf<uint8_t> panel(nb * kGemmCols * 256);
  const __m256i mask = _mm256_set1_epi8(3);
  decode_panel(a, j0, ncols, nb, panel.p, [mask](const uint8_t* src, uint8_t* dst) {
    for (int h = 0; h < 2; ++h) {
      const __m256i v = load256(src + 32 * h);
      for (int sh = 0; sh < 4; ++sh)
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 64 * sh + 32 * h),
                           _mm256_and_si256(sh ? _mm256_srli_epi16(v, 2 * sh) : v, mask));
    }
  });
  const int64_t mc_rows = min_i64(kMc, all_groups * 16);
  Buf<int32_t> ct(kGemmCols * mc_rows);
  for (int64_t r0 = 0; r0 < a.m; r0 += kMc) {
    const int64_t rows = min_i64(kMc, a.m - r0);
    const int64_t groups = (rows + 15) / 16;
    const int64_t ldc = groups * 16;
    std::memset(ct.p, 0, sizeof(int32_t) * static_cast<size_t>(kGemmCols * ldc));
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* pb = panel.p + b * kGemmCols * 256;
      for (int64_t g = 0; g < groups; ++g) {
        const int8_t* xb = a.xpack + (b * all_groups + r0 / 16 + g) * 4096;
        for (int64_t jc = 0; jc < kGemmCols; jc += 6) gemm2_micro(xb, pb + jc * 256, ct.p + jc * ldc + 16 * g, ldc);
      }
    }
    store_gemm_tile(a, r0, rows, j0, ncols, ct.p, ldc);
  }
}
#undef G2_J6
#undef G2_ZERO
#undef G2_COL
#undef G2_FLUSH
#elif defined(FASTEMB_TERNARY_USMMLA)
#include "ternary/ternary_gemm_i8mm.h"
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
#if defined(FASTEMB_TERNARY_ZMM)
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

// ---- t5 (1.6-bit) integer GEMV ------------------------------------------------------------------
#include "ternary/ternary_t5.h"

}  // namespace

void quantize_rows(const void* x, int dt, int64_t k, int64_t kp, float eps, int rule, int64_t i0, int64_t i1,
                   int8_t* xq, float* x_scale) {
  const int64_t esize = dt == 1 ? 8 : (dt == 0 ? 4 : 2);
  for (int64_t i = i0; i < i1; ++i)
    quantize_row(static_cast<const char*>(x) + i * k * esize, dt, k, kp, eps, rule, xq + i * kp, x_scale + i);
}

void int8_gemv(const Int8Work& a, int64_t j0, int64_t j1) { int8_gemv_impl(a, j0, j1); }

void int8_gemv_t5(const Int8Work& a, int64_t j0, int64_t j1) { int8_gemv_t5_impl(a, j0, j1); }

bool int8_gemm(const Int8Work& a, int64_t j0, int64_t j1) {
#if defined(FASTEMB_TERNARY_VNNI) || defined(FASTEMB_TERNARY_AVX2_GEMV) || defined(FASTEMB_TERNARY_USMMLA)
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

#undef FT2_PIN
#pragma GCC diagnostic pop
