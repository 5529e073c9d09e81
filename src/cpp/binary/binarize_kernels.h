// binarize kernels, compiled once per ISA (included at the end of binary_kernels.h, inside each
// binary_<isa>.cpp with FASTEMB_ISA_NS set). Math and why it reproduces the float64 reference bit for
// bit: binarize_math.h. Per row: s (mean|x| in NumPy's pairwise order, float64) when bits > 1 and no
// scale was given, then L = 2^bits - 1 thresholds, then one pass comparing 64 elements at a time with
// each threshold (nested pass masks), XOR-combining the masks into the planes, and storing 8 bytes
// per plane (bits reversed within each byte: np.packbits' bitorder='big'). Elements past m are never
// read; padding bits stay zero. Non-finite elements are detected in the same pass.
#ifndef FASTEMB_ISA_NS
#error "define FASTEMB_ISA_NS before including binarize_kernels.h"
#endif

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "binary/binarize_math.h"
#include "binary/binary.h"
#include "common/float16.h"

// GCC 12 warns falsely about the undefined source operand inside _mm512_cvtps_pd & co.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastemb::binary::FASTEMB_ISA_NS {
namespace {

// Element i as its comparison type (float for float32 / float16 / bfloat16, double for float64).
inline float bz_elem(const float* x, int64_t i) { return x[i]; }
inline double bz_elem(const double* x, int64_t i) { return x[i]; }
inline float bz_elem(const half_t* x, int64_t i) { return half_bits_to_float(x[i].bits); }
inline float bz_elem(const bf16_t* x, int64_t i) { return bf16_bits_to_float(x[i].bits); }

inline bool bz_finite(float v) { return std::fabs(v) <= FLT_MAX; }
inline bool bz_finite(double v) { return std::fabs(v) <= DBL_MAX; }

template <class T> struct BzCmp { using type = float; };
template <> struct BzCmp<double> { using type = double; };

// ---- s = mean|x|: NumPy's pairwise summation (numpy/_core/src/umath/loops_utils.h.src) of |x| in
// float64: below 8 elements one running sum from 0; up to 128, eight lane sums over blocks of 8,
// combined ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the rest one by one; above, two halves split at
// a multiple of 8.
// Eight |x| as doubles, one vector (lane j accumulates elements 8i + j, as NumPy's r[j]).
#if defined(__AVX512F__)
struct V8 { __m512d v; };
template <class T>
inline V8 v8_abs(const T* a) {
  if constexpr (std::is_same_v<T, double>) {
    return {_mm512_abs_pd(_mm512_loadu_pd(a))};
  } else {
    __m256 f;  // |x| taken in float (exact), one 256-bit op instead of a 512-bit one
    if constexpr (std::is_same_v<T, float>) f = _mm256_loadu_ps(a);
    else if constexpr (std::is_same_v<T, half_t>) f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
    else f = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))), 16));
    return {_mm512_cvtps_pd(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), f))};
  }
}
inline V8 v8_add(V8 a, V8 b) { return {_mm512_add_pd(a.v, b.v)}; }
// ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)) in registers: the same additions of the same pairs.
inline double v8_hsum(V8 a) {
  const __m512d t = _mm512_add_pd(a.v, _mm512_permute_pd(a.v, 0x55));                          // r0+r1, r2+r3, ...
  const __m512d u = _mm512_add_pd(t, _mm512_shuffle_f64x2(t, t, _MM_SHUFFLE(2, 3, 0, 1)));     // lanes 0 and 4
  return _mm_cvtsd_f64(_mm_add_sd(_mm512_castpd512_pd128(u), _mm512_extractf64x2_pd(u, 2)));
}
#elif defined(__AVX2__)
struct V8 { __m256d lo, hi; };
template <class T>
inline V8 v8_abs(const T* a) {
  const __m256d sign = _mm256_set1_pd(-0.0);
  __m256d l, h;
  if constexpr (std::is_same_v<T, double>) {
    l = _mm256_loadu_pd(a);
    h = _mm256_loadu_pd(a + 4);
  } else {
    __m256 f;
    if constexpr (std::is_same_v<T, float>) f = _mm256_loadu_ps(a);
    else if constexpr (std::is_same_v<T, half_t>) f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
    else f = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))), 16));
    f = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), f);  // |x| in float (exact)
    return {_mm256_cvtps_pd(_mm256_castps256_ps128(f)), _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1))};
  }
  return {_mm256_andnot_pd(sign, l), _mm256_andnot_pd(sign, h)};
}
inline V8 v8_add(V8 a, V8 b) { return {_mm256_add_pd(a.lo, b.lo), _mm256_add_pd(a.hi, b.hi)}; }
inline double v8_hsum(V8 a) {
  const __m256d tl = _mm256_add_pd(a.lo, _mm256_permute_pd(a.lo, 0x5));  // r0+r1, ., r2+r3, .
  const __m256d th = _mm256_add_pd(a.hi, _mm256_permute_pd(a.hi, 0x5));
  const __m256d ul = _mm256_add_pd(tl, _mm256_permute2f128_pd(tl, tl, 0x01));  // lane 0: (r0+r1)+(r2+r3)
  const __m256d uh = _mm256_add_pd(th, _mm256_permute2f128_pd(th, th, 0x01));
  return _mm_cvtsd_f64(_mm_add_sd(_mm256_castpd256_pd128(ul), _mm256_castpd256_pd128(uh)));
}
#else
struct V8 { double d[8]; };
template <class T>
inline V8 v8_abs(const T* a) {
  V8 r;
  for (int j = 0; j < 8; ++j) r.d[j] = std::fabs(static_cast<double>(bz_elem(a, j)));
  return r;
}
inline V8 v8_add(V8 a, V8 b) {
  for (int j = 0; j < 8; ++j) a.d[j] += b.d[j];
  return a;
}
inline double v8_hsum(V8 a) {
  const double* r = a.d;
  return ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
}
#endif

// ---- s = mean|x|: NumPy's pairwise summation (numpy/_core/src/umath/loops_utils.h.src) of |x| in
// float64: below 8 elements one running sum from 0; up to 128 (a leaf), eight lane sums over
// blocks of 8, combined ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the rest one by one; above, two
// halves split at a multiple of 8, summed left + right. The leaves depend on m only: they are listed
// once per call, summed four at a time in lockstep (independent add chains), then combined in the
// tree's order.
constexpr int kMaxLeaves = 512;

struct BzLeaves {
  int64_t lo[kMaxLeaves], n[kMaxLeaves];
  int count = 0;
  bool ok = true;  // false: more than kMaxLeaves leaves (m > ~32k): plain recursion instead
  void build(int64_t a, int64_t len) {
    if (len <= 128) {
      if (count == kMaxLeaves) { ok = false; return; }
      lo[count] = a;
      n[count] = len;
      ++count;
      return;
    }
    int64_t n2 = len / 2;
    n2 -= n2 % 8;
    build(a, n2);
    build(a + n2, len - n2);
  }
};

template <class T>
inline double bz_leaf_finish(V8 acc, const T* a, int64_t n8, int64_t n) {
  double res = v8_hsum(acc);
  for (int64_t i = n8; i < n; ++i) res += std::fabs(static_cast<double>(bz_elem(a, i)));
  return res;
}

template <class T>
double bz_leaf_sum(const T* a, int64_t n) {
  if (n < 8) {
    double res = 0.;
    for (int64_t i = 0; i < n; ++i) res += std::fabs(static_cast<double>(bz_elem(a, i)));
    return res;
  }
  const int64_t n8 = n - n % 8;
  V8 acc = v8_abs(a);
  for (int64_t i = 8; i < n8; i += 8) acc = v8_add(acc, v8_abs(a + i));
  return bz_leaf_finish(acc, a, n8, n);
}

// Leaf sums of one row (every leaf has >= 8 elements when m >= 8).
template <class T>
void bz_leaf_sums(const T* row, const BzLeaves& lv, double* out) {
  int i = 0;
  for (; i + 4 <= lv.count; i += 4) {
    const T* a[4];
    int64_t n8[4];
    V8 acc[4];
    int64_t common = INT64_MAX;
    for (int g = 0; g < 4; ++g) {
      a[g] = row + lv.lo[i + g];
      n8[g] = lv.n[i + g] - lv.n[i + g] % 8;
      common = min_i64(common, n8[g]);
      acc[g] = v8_abs(a[g]);
    }
    for (int64_t j = 8; j < common; j += 8)
      for (int g = 0; g < 4; ++g) acc[g] = v8_add(acc[g], v8_abs(a[g] + j));
    for (int g = 0; g < 4; ++g) {
      for (int64_t j = common; j < n8[g]; j += 8) acc[g] = v8_add(acc[g], v8_abs(a[g] + j));
      out[i + g] = bz_leaf_finish(acc[g], a[g], n8[g], lv.n[i + g]);
    }
  }
  for (; i < lv.count; ++i) out[i] = bz_leaf_sum(row + lv.lo[i], lv.n[i]);
}

// The tree's combination of the leaf sums (consumed in order).
inline double bz_combine(int64_t len, const double*& leaf) {
  if (len <= 128) return *leaf++;
  int64_t n2 = len / 2;
  n2 -= n2 % 8;
  const double left = bz_combine(n2, leaf);
  return left + bz_combine(len - n2, leaf);
}

template <class T>
double bz_pairwise_abs_sum(const T* a, int64_t n) {
  if (n <= 128) return bz_leaf_sum(a, n);
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return bz_pairwise_abs_sum(a, n2) + bz_pairwise_abs_sum(a + n2, n - n2);
}

// ---- pass masks ----------------------------------------------------------------------------------

// Scalar: mk[k] bit j = (x[j] >= thr[k]) for j < cnt (<= 64); returns false on a non-finite element.
template <int L, class T, class C>
bool bz_masks_scalar(const T* x, int64_t cnt, const C* thr, uint64_t* mk) {
  bool ok = true;
  for (int k = 0; k < L; ++k) mk[k] = 0;
  for (int64_t j = 0; j < cnt; ++j) {
    const C v = bz_elem(x, j);
    ok &= bz_finite(v);
    for (int k = 0; k < L; ++k) mk[k] |= uint64_t(v >= thr[k]) << j;
  }
  return ok;
}

// Plane p (bit b = bits-1-p of the code) = XOR of the masks of boundaries j-1, j a multiple of 2^b.
template <int BITS>
inline void bz_planes(const uint64_t* mk, uint64_t* pl) {
  constexpr int L = (1 << BITS) - 1;
  for (int p = 0; p < BITS; ++p) {
    const int step = 1 << (BITS - 1 - p);
    uint64_t v = 0;
    for (int j = step; j <= L; j += step) v ^= mk[j - 1];
    pl[p] = v;
  }
}

template <int BITS>
inline void bz_store(const uint64_t* pl, uint8_t* out, int64_t nbytes, int64_t byte0, int64_t nb) {
  for (int p = 0; p < BITS; ++p) {
    const uint64_t w = reverse_bits_in_bytes(pl[p]);
    std::memcpy(out + p * nbytes + byte0, &w, static_cast<size_t>(nb));
  }
}

#if defined(__AVX512F__)
// 64 elements as 4 x 16 floats.
template <class T>
inline void bz_load64(const T* x, __m512* v) {
  for (int q = 0; q < 4; ++q) {
    if constexpr (sizeof(T) == 4) {
      v[q] = _mm512_loadu_ps(reinterpret_cast<const float*>(x) + 16 * q);
    } else {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16 * q));
      if constexpr (std::is_same_v<T, half_t>)
        v[q] = _mm512_cvtph_ps(h);
      else
        v[q] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
  }
}
#elif defined(__AVX2__)
template <class T>
inline __m256 bz_load8(const T* x) {
  if constexpr (sizeof(T) == 4) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(x));
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x));
    if constexpr (std::is_same_v<T, half_t>)
      return _mm256_cvtph_ps(h);
    else
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}
#endif

// One row: codes [bits, nbytes] at out. Returns false on a non-finite element.
// next: the next row to be read (nullptr: none); its bytes are prefetched block by block while this
// row, already in cache from the scale pass, is encoded, so the memory reads overlap the compute.
// check_finite: false when the row's finite |x| sum already proved every element finite.
template <int BITS, class T>
bool bz_encode_row(const T* x, int64_t m, const typename BzCmp<T>::type* thr, uint8_t* out, int64_t nbytes,
                   const T* next, bool check_finite) {
  (void)check_finite;  // only the avx512 float path skips its check
  auto prefetch = [&](int64_t c) {
    if (next == nullptr) return;
    const char* a = reinterpret_cast<const char*>(next + c);
    for (int64_t b = 0; b < 64 * int64_t(sizeof(T)); b += 64) __builtin_prefetch(a + b);
  };
  constexpr int L = (1 << BITS) - 1;
  uint64_t mk[L], pl[BITS];
  bool ok = true;
  int64_t c = 0;
#if defined(__AVX512F__)
  if constexpr (!std::is_same_v<T, double>) {
    __m512 tv[L];
    for (int k = 0; k < L; ++k) tv[k] = _mm512_set1_ps(thr[k]);
    __mmask16 bad = 0;
    // Elements reversed within each group of 8, so that mask bit order is np.packbits' big order
    // (one permute per 16 elements instead of reversing the bits of every plane word).
    const __m512i rev = _mm512_set_epi32(8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    for (; c + 64 <= m; c += 64) {
      __m512 v[4];
      prefetch(c);
      bz_load64(x + c, v);
      if (check_finite)
        for (int q = 0; q < 4; ++q) bad |= _mm512_fpclass_ps_mask(v[q], 0x99);  // NaN or +-inf
      for (int q = 0; q < 4; ++q) v[q] = _mm512_permutexvar_ps(rev, v[q]);
      for (int k = 0; k < L; ++k) {
        const __mmask32 lo = _mm512_kunpackw(_mm512_cmp_ps_mask(v[1], tv[k], _CMP_GE_OQ), _mm512_cmp_ps_mask(v[0], tv[k], _CMP_GE_OQ));
        const __mmask32 hi = _mm512_kunpackw(_mm512_cmp_ps_mask(v[3], tv[k], _CMP_GE_OQ), _mm512_cmp_ps_mask(v[2], tv[k], _CMP_GE_OQ));
        mk[k] = _cvtmask64_u64(_mm512_kunpackd(hi, lo));
      }
      bz_planes<BITS>(mk, pl);
      for (int p = 0; p < BITS; ++p) std::memcpy(out + p * nbytes + c / 8, &pl[p], 8);
    }
    ok = bad == 0;
  } else {
    __m512d tv[L];
    for (int k = 0; k < L; ++k) tv[k] = _mm512_set1_pd(thr[k]);
    __mmask8 bad = 0;
    const double* f = reinterpret_cast<const double*>(x);
    for (; c + 64 <= m; c += 64) {
      __m512d v[8];
      prefetch(c);
      for (int q = 0; q < 8; ++q) {
        v[q] = _mm512_loadu_pd(f + c + 8 * q);
        bad |= _mm512_fpclass_pd_mask(v[q], 0x99);
      }
      for (int k = 0; k < L; ++k) {
        uint64_t w = 0;
        for (int q = 0; q < 8; ++q) w |= uint64_t(_mm512_cmp_pd_mask(v[q], tv[k], _CMP_GE_OQ)) << (8 * q);
        mk[k] = w;
      }
      bz_planes<BITS>(mk, pl);
      bz_store<BITS>(pl, out, nbytes, c / 8, 8);
    }
    ok = bad == 0;
  }
#elif defined(__AVX2__)
  if constexpr (!std::is_same_v<T, double>) {
    __m256 tv[L];
    for (int k = 0; k < L; ++k) tv[k] = _mm256_set1_ps(thr[k]);
    const __m256 sign = _mm256_set1_ps(-0.0f), inf = _mm256_set1_ps(HUGE_VALF);
    __m256 bad = _mm256_setzero_ps();
    for (; c + 64 <= m; c += 64) {
      __m256 v[8];
      prefetch(c);
      for (int q = 0; q < 8; ++q) {
        v[q] = bz_load8(x + c + 8 * q);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_andnot_ps(sign, v[q]), inf, _CMP_NLT_UQ));
      }
      for (int k = 0; k < L; ++k) {
        uint64_t w = 0;
        for (int q = 0; q < 8; ++q) w |= uint64_t(uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(v[q], tv[k], _CMP_GE_OQ)))) << (8 * q);
        mk[k] = w;
      }
      bz_planes<BITS>(mk, pl);
      bz_store<BITS>(pl, out, nbytes, c / 8, 8);
    }
    ok = _mm256_movemask_ps(bad) == 0;
  } else {
    __m256d tv[L];
    for (int k = 0; k < L; ++k) tv[k] = _mm256_set1_pd(thr[k]);
    const __m256d sign = _mm256_set1_pd(-0.0), inf = _mm256_set1_pd(HUGE_VAL);
    __m256d bad = _mm256_setzero_pd();
    const double* f = reinterpret_cast<const double*>(x);
    for (; c + 64 <= m; c += 64) {
      __m256d v[16];
      prefetch(c);
      for (int q = 0; q < 16; ++q) {
        v[q] = _mm256_loadu_pd(f + c + 4 * q);
        bad = _mm256_or_pd(bad, _mm256_cmp_pd(_mm256_andnot_pd(sign, v[q]), inf, _CMP_NLT_UQ));
      }
      for (int k = 0; k < L; ++k) {
        uint64_t w = 0;
        for (int q = 0; q < 16; ++q) w |= uint64_t(uint32_t(_mm256_movemask_pd(_mm256_cmp_pd(v[q], tv[k], _CMP_GE_OQ)))) << (4 * q);
        mk[k] = w;
      }
      bz_planes<BITS>(mk, pl);
      bz_store<BITS>(pl, out, nbytes, c / 8, 8);
    }
    ok = _mm256_movemask_pd(bad) == 0;
  }
#endif
  for (; c < m; c += 64) {  // serial variant, and the last m % 64 elements of the SIMD ones
    const int64_t cnt = min_i64(64, m - c);
    if (cnt == 64) prefetch(c);
    ok &= bz_masks_scalar<L>(x + c, cnt, thr, mk);
    bz_planes<BITS>(mk, pl);
    bz_store<BITS>(pl, out, nbytes, c / 8, (cnt + 7) / 8);
  }
  return ok;
}

template <class T>
bool bz_rows(const BinarizeProblem& p, int64_t r0, int64_t r1, uint8_t* out) {
  using C = typename BzCmp<T>::type;
  const T* x = static_cast<const T*>(p.x);
  const int64_t nbytes = (p.m + 7) / 8;
  C thr[15];
  double s_prev = 0.0;
  bool ok = true;
  const bool need_sum = p.bits > 1 && p.scale == nullptr;
  BzLeaves* lv = nullptr;
  double* leaf = nullptr;
  if (need_sum && p.m >= 8) {
    lv = new BzLeaves();
    lv->build(0, p.m);
    if (lv->ok) {
      leaf = new double[kMaxLeaves];
    } else {
      delete lv;
      lv = nullptr;
    }
  }
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = x + r * p.ld;
    double s = 1.0;  // unused at bits = 1 (plane 0 compares x itself)
    bool check = true;
    if (p.bits > 1) {
      if (p.scale != nullptr) {
        s = p.scale[r * p.scale_stride];
      } else {
        double sum;
        if (lv != nullptr) {
          bz_leaf_sums(row, *lv, leaf);
          const double* it = leaf;
          sum = bz_combine(p.m, it);
        } else {
          sum = bz_pairwise_abs_sum(row, p.m);
        }
        s = sum / static_cast<double>(p.m);
        check = !(sum <= DBL_MAX);  // a finite sum of |x|: every element is finite
        if (!(s > 0)) s = 1.0;  // all-zero row (or NaN, reported below)
      }
    }
    if (r == r0 || !(s == s_prev)) {  // thresholds depend on s alone (one scalar scale: once per task)
      if constexpr (std::is_same_v<C, float>)
        row_thresholds_f32(p.bits, s, p.gt, thr);
      else
        row_thresholds_f64(p.bits, s, p.gt, thr);
      s_prev = s;
    }
    uint8_t* o = out + r * p.bits * nbytes;
    const T* next = need_sum && r + 1 < r1 ? row + p.ld : nullptr;
    switch (p.bits) {
      case 1: ok &= bz_encode_row<1>(row, p.m, thr, o, nbytes, next, check); break;
      case 2: ok &= bz_encode_row<2>(row, p.m, thr, o, nbytes, next, check); break;
      case 3: ok &= bz_encode_row<3>(row, p.m, thr, o, nbytes, next, check); break;
      default: ok &= bz_encode_row<4>(row, p.m, thr, o, nbytes, next, check); break;
    }
  }
  delete lv;
  delete[] leaf;
  return ok;
}

}  // namespace

// Rows [r0, r1) of a validated problem (m >= 1); false when one of them holds NaN or inf.
bool binarize_rows(const BinarizeProblem& p, int64_t r0, int64_t r1, uint8_t* out) {
  switch (p.dtype) {
    case 0: return bz_rows<float>(p, r0, r1, out);
    case 1: return bz_rows<double>(p, r0, r1, out);
    case 2: return bz_rows<half_t>(p, r0, r1, out);
    default: return bz_rows<bf16_t>(p, r0, r1, out);
  }
}

}  // namespace fastemb::binary::FASTEMB_ISA_NS

#pragma GCC diagnostic pop
