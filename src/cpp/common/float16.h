// IEEE half and bfloat16 <-> float conversions (round to nearest even), shared by the CPU kernels
// and the CUDA kernels. `static inline`: every translation unit (each compiled for its own ISA)
// keeps its own copy, so the linker never swaps in a variant built for another ISA.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FASTEMB_HD __host__ __device__
#else
#define FASTEMB_HD
#endif

namespace fastemb {

struct half_t { uint16_t bits; };
struct bf16_t { uint16_t bits; };

static inline FASTEMB_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

static inline FASTEMB_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

static inline FASTEMB_HD float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp == 0) {
    // zero or subnormal: man * 2^-24, exact in float
    const float mag = static_cast<float>(man) * 5.9604644775390625e-8f;
    return sign ? -mag : mag;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline FASTEMB_HD uint16_t float_to_half_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan (keep nan quiet)
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u | ((abs >> 13) & 0x3ffu) : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {
    // result is subnormal or zero: round abs * 2^24 to an integer, half to even
    const float scaled = bits_float(abs) * 16777216.0f;  // exact: power-of-two scaling
    uint32_t q = static_cast<uint32_t>(scaled);
    const float rem = scaled - static_cast<float>(q);
    if (rem > 0.5f || (rem == 0.5f && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  // normal: drop 13 mantissa bits with round to nearest even
  const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

static inline FASTEMB_HD float bf16_bits_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

static inline FASTEMB_HD uint16_t float_to_bf16_bits(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet nan
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Storage type -> accumulation type conversions used by templated kernels.
static inline FASTEMB_HD float to_acc(half_t v, float) { return half_bits_to_float(v.bits); }
static inline FASTEMB_HD float to_acc(bf16_t v, float) { return bf16_bits_to_float(v.bits); }
static inline FASTEMB_HD float to_acc(float v, float) { return v; }
static inline FASTEMB_HD double to_acc(double v, double) { return v; }
static inline FASTEMB_HD void from_acc(float v, half_t* out) { out->bits = float_to_half_bits(v); }
static inline FASTEMB_HD void from_acc(float v, bf16_t* out) { out->bits = float_to_bf16_bits(v); }
static inline FASTEMB_HD void from_acc(float v, float* out) { *out = v; }
static inline FASTEMB_HD void from_acc(double v, double* out) { *out = v; }

}  // namespace fastemb
