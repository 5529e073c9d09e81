// Per-row math of binarize, shared by every CPU variant (and written so that CUDA code could share
// it: FASTEMB_HD, no std:: templates). Layout and reference: python/fastemb/_reference/binary.py.
//
// Why thresholds: the reference computes y = fl64(x / s) and, plane after plane, compares y with a
// dyadic level c (the running reconstruction; exact in float64, and fl(y - c) has the sign of
// y - c), plane 0 comparing x itself with 0. fl64(x / s) is monotone in x, so for each level c the
// set {x : fl64(x / s) >= c} ("ge"; "> c" for "gt") is {x >= t_c} for one double t_c, found here
// exactly by a few correctly rounded divisions per row (level_threshold). For an input held in
// float32 (float16 / bfloat16 convert to float32 exactly), x >= t_c <=> x >= ceil_f32(t_c), so
// the kernels compare the input in its own precision with per-row thresholds and reproduce the
// float64 reference's decisions bit for bit, with no per-element division.
//
// The recursive planes are a binary search over the 2^bits - 1 level boundaries (sorted, k = 0..L-1,
// y-value (2k + 2 - 2^bits) / 2^(bits-1), the middle one being plane 0's x >= 0 / x > 0): the
// integer code C = sum_i 2^(u-i) c_i is the number of boundaries x passes, and plane i (bit
// b = u - i of C) is the XOR of the pass masks of boundaries j - 1 for every multiple j of 2^b
// (passes are nested, so C >= j for exactly floor(C / 2^b) of those j).
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/float16.h"  // FASTEMB_HD

namespace fastemb::binary {

// The next double above / below x (x not NaN; +-inf stay), without libm (also for device code).
static inline FASTEMB_HD double next_up_f64(double x) {
  if (x != x || x == HUGE_VAL) return x;
  if (x == 0.0) return 4.9406564584124654e-324;
  uint64_t u;
  memcpy(&u, &x, 8);
  u = x > 0 ? u + 1 : u - 1;
  memcpy(&x, &u, 8);
  return x;
}
static inline FASTEMB_HD double next_down_f64(double x) { return -next_up_f64(-x); }
static inline FASTEMB_HD float next_up_f32(float x) {
  if (x != x || x == HUGE_VALF) return x;
  if (x == 0.0f) return 1.40129846e-45f;
  uint32_t u;
  memcpy(&u, &x, 4);
  u = x > 0 ? u + 1 : u - 1;
  memcpy(&x, &u, 4);
  return x;
}

// y-value of boundary k (0..L-1) for `bits` planes.
static inline FASTEMB_HD double boundary_level(int bits, int k) {
  return double(2 * k + 2 - (1 << bits)) / double(1 << (bits - 1));
}

// The smallest double x with fl64(x / s) >= c ("ge") or fl64(x / s) > c ("gt"); +inf when no finite
// x has it. s > 0 (inf allowed: every y is then +-0), c != 0.
// fl(c * s) lies within half an ulp of the real boundary c s, and the doubles x with
// fl(x / s) = c but x / s != c lie within a relative 2^-53 of it, so the walks below take a few
// steps (one or two past the subnormal range's absolute spacing); the cap is only a guard.
static inline FASTEMB_HD double level_threshold(double c, double s, bool gt) {
  auto pass = [=](double x) {
    const double y = x / s;
    return gt ? y > c : y >= c;
  };
  double g = c * s;
  if (g > DBL_MAX) g = DBL_MAX;
  if (g < -DBL_MAX) g = -DBL_MAX;
  for (int step = 0; !pass(g); ++step) {
    if (g == HUGE_VAL || step > 4096) return HUGE_VAL;
    g = next_up_f64(g);
  }
  for (int step = 0; step < 4096; ++step) {
    const double prev = next_down_f64(g);
    if (prev == -HUGE_VAL || !pass(prev)) break;
    g = prev;
  }
  return g;
}

// The smallest float f with (double)f >= t (+inf when t > FLT_MAX): x >= t <=> x >= ceil_f32(t) for
// every float x.
static inline FASTEMB_HD float ceil_f32(double t) {
  float f = static_cast<float>(t);
  if (static_cast<double>(f) < t) f = next_up_f32(f);
  return f;
}

// The L = 2^bits - 1 ascending thresholds of one row, for the comparison `x >= thr[k]` in double.
// Boundary (L - 1) / 2 (plane 0) compares x itself: x >= 0 ("ge", -0.0 passes) or x > 0 ("gt").
static inline FASTEMB_HD void row_thresholds_f64(int bits, double s, bool gt, double* thr) {
  const int L = (1 << bits) - 1;
  for (int k = 0; k < L; ++k)
    thr[k] = k == (L - 1) / 2 ? (gt ? next_up_f64(0.0) : 0.0) : level_threshold(boundary_level(bits, k), s, gt);
}

// The same thresholds for float inputs (float32 / float16 / bfloat16, compared as float).
static inline FASTEMB_HD void row_thresholds_f32(int bits, double s, bool gt, float* thr) {
  const int L = (1 << bits) - 1;
  for (int k = 0; k < L; ++k)
    thr[k] = k == (L - 1) / 2 ? (gt ? next_up_f32(0.0f) : 0.0f)
                              : ceil_f32(level_threshold(boundary_level(bits, k), s, gt));
}

// Bits of each byte reversed (LSB-first element masks -> np.packbits' bitorder='big').
static inline FASTEMB_HD uint64_t reverse_bits_in_bytes(uint64_t v) {
  v = ((v >> 1) & 0x5555555555555555ull) | ((v & 0x5555555555555555ull) << 1);
  v = ((v >> 2) & 0x3333333333333333ull) | ((v & 0x3333333333333333ull) << 2);
  v = ((v >> 4) & 0x0F0F0F0F0F0F0F0Full) | ((v & 0x0F0F0F0F0F0F0F0Full) << 4);
  return v;
}

}  // namespace fastemb::binary
