// Per-element math of centroid aggregation, shared by the CPU kernels and the CUDA kernels
// (`FASTEMB_HD`: __host__ __device__ under nvcc). Plain, generic helpers templated on the
// accumulation type A (float or double); `static inline` so every translation unit (one per ISA,
// plus the CUDA one) keeps its own copy.
//
// These are the rules every backend must agree on:
//   - safe_div:          num / den, or 0 when den == 0 (empty groups, zero weight sums);
//   - clamp_norm:        max(norm, eps), the divisor of L2 normalization (a NaN norm stays NaN);
//   - normalize_grad:    the gradient through y = v / max(||v||, eps), one element at a time:
//                        (g - y_hat (y_hat . g)) / ||v|| when ||v|| > eps, else g / eps
//                        (used for 'post' on centroids and for 'pre' on rows);
//   - loo_value:         the leave-one-out centroid element, 0 for singletons and zero denominators;
//   - extreme_replaces:  the amax/amin update, rows visited in increasing row order:
//                        strictly better replaces (ties keep the lowest row), a NaN wins and stays;
//   - mul_rn / madd:     a * b and acc + a * b rounded like separate operations (never fused), so a device sum in row order
//                        gives the same bits as the CPU kernels (built with -ffp-contract=off).
#pragma once

#include "common/float16.h"
#include "common/rounding.h"

namespace fastemb::centroid {

template <class A>
static inline FASTEMB_HD bool is_nan_a(A v) {
  return v != v;
}

template <class A>
static inline FASTEMB_HD A safe_div(A num, A den) {
  return den != A(0) ? num / den : A(0);
}

template <class A>
static inline FASTEMB_HD A clamp_norm(A norm, A eps) {
  return (norm > eps || is_nan_a(norm)) ? norm : eps;  // a NaN norm propagates (NaN rows stay NaN)
}

// Gradient w.r.t. v of y = v / max(||v||, eps), element j: g = dL/dy_j, y_hat = y_j,
// proj = y . g over the whole row, norm = ||v|| (the raw norm, or the clamped one: only the
// comparison with eps and the division use it, and both agree for either).
template <class A>
static inline FASTEMB_HD A normalize_grad(A g, A y_hat, A proj, A norm, A eps) {
  return norm > eps ? (g - y_hat * proj) / norm : g / eps;
}

// Leave-one-out element: (total - own) / denom for 'mean', total - own for 'sum'; 0 for a
// singleton group or a zero mean denominator. own = w_i * x_ij (x_hat under 'pre'),
// denom = W_y - w_i.
template <class A>
static inline FASTEMB_HD A loo_value(A total, A own, A denom, bool singleton, bool mean) {
  if (singleton || (mean && denom == A(0))) return A(0);
  return mean ? (total - own) / denom : total - own;
}

// True when candidate v (from a later row) replaces the current extreme cur.
template <class A>
static inline FASTEMB_HD bool extreme_replaces(A cur, A v, bool is_max) {
  if (is_nan_a(cur)) return false;  // a NaN stays
  const bool better = is_max ? v > cur : v < cur;
  return better || is_nan_a(v);  // strictly better, or a NaN: ties keep the earlier (lower) row
}

// a * b rounded on its own (common/rounding.h): the device compiler never fuses it into a later add.
using fastemb::mul_rn;

// acc + a * b with two roundings (no FMA contraction on the device either).
template <class A>
static inline FASTEMB_HD A madd(A acc, A a, A b) {
  return acc + mul_rn(a, b);
}

}  // namespace fastemb::centroid
