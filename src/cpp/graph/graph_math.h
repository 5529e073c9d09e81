// Per-element math of the graph family, shared by the CPU kernels (every ISA) and the CUDA kernels
// (`FASTEMB_HD`: __host__ __device__ under nvcc). `static inline`: every translation unit keeps its
// own copy, so the linker never hands one ISA's code to another's caller.
//
// The rules (graph.h):
//   mix64 / entry_bits:  SplitMix64, u = mix64(key + (c + 1) * kGolden), key = mix64(seed),
//                        c = row * d + column (uint64, wrapping);
//   entry_sign:          0 unless (u >> 11) < threshold; +1 when bit 10 of u is 0, else -1;
//   add_rn / mul_rn:     float ops rounded one at a time (never contracted into an FMA, on the
//                        device either: __fadd_rn / __fmul_rn are never fused by nvcc);
//   norm_lanes_combine:  the halving of the 16 lanes of the fixed-order L2 norm;
//   normalized_value:    u / norm when norm > 0, else 0.
#pragma once
#include <cstdint>

#include "common/float16.h"
#include "common/rounding.h"

namespace fastemb::graph {

static inline FASTEMB_HD uint64_t mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z;
}

// Random bits of entry c (the c-th output of SplitMix64 seeded with key).
static inline FASTEMB_HD uint64_t entry_bits(uint64_t key, uint64_t c) {
  return mix64(key + (c + 1) * 0x9E3779B97F4A7C15ull);
}

// -1, 0 or +1 from the entry's bits.
static inline FASTEMB_HD int entry_sign(uint64_t u, uint64_t threshold) {
  if ((u >> 11) >= threshold) return 0;
  return ((u >> 10) & 1u) ? -1 : 1;
}

// Float ops rounded one at a time (common/rounding.h): the CUDA twin gives the same bits.
using fastemb::add_rn;
using fastemb::div_rn;
using fastemb::mul_rn;
using fastemb::sub_rn;

static inline FASTEMB_HD float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return __builtin_sqrtf(a);
#endif
}

// lanes[0..16) -> the norm: lane l += lane l + w for w = 8, 4, 2, 1, then sqrt of lane 0.
static inline FASTEMB_HD float norm_lanes_combine(float* lanes) {
  for (int w = 8; w >= 1; w >>= 1)
    for (int l = 0; l < w; ++l) lanes[l] = add_rn(lanes[l], lanes[l + w]);
  return sqrt_rn(lanes[0]);
}

// v_j of the epilogue when normalizing.
static inline FASTEMB_HD float normalized_value(float u, float norm) { return norm > 0.f ? div_rn(u, norm) : 0.f; }

// Fixed-order L2 norm of a row (the serial form: lane l sums j = l, l + 16, ... in increasing j).
static inline FASTEMB_HD float norm_fixed_order_row(const float* u, int64_t d) {
  float lanes[16];
  for (int l = 0; l < 16; ++l) lanes[l] = 0.f;
  for (int64_t j = 0; j < d; ++j) lanes[j & 15] = add_rn(lanes[j & 15], mul_rn(u[j], u[j]));
  return norm_lanes_combine(lanes);
}

}  // namespace fastemb::graph
