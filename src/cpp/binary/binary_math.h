// Per-word math of the SDC binary-code kernels, shared by the CPU kernels and the CUDA kernels
// (`FASTEMB_HD`: __host__ __device__ under nvcc); `static inline` so every translation unit (one per
// ISA, plus the CUDA one) keeps its own copy. Layout and formulas: shared/specs/sdc.md.
//
// Words are 64-bit little-endian loads of a plane's bytes (byte t of the word = plane byte 8w + t);
// only the last word of a plane holds padding bits, cleared by last_word_mask().
//
// With s_i = 2 c_i - 1 in {-1, +1} and u = bits - 1, L = 2^bits - 1:  2 C - L = sum_i 2^(u-i) s_i, so
//   S = sum_{i,k} 2^(2u-i-k) sum_j s_qij s_dkj = dim L^2 - 2 sum_{i,k} 2^(2u-i-k) popcnt(Pq_i ^ Pd_k)
// (xor form: one weighted accumulator, no per-row side data), and equivalently the spec's AND form
//   S = 4 sum_{i,k} 2^(2u-i-k) popcnt(Pq_i & Pd_k) - 2 L (sumC_q + sumC_d) + dim L^2.
// Both are exact; every intermediate fits int64 (the dispatchers bound dim L^2 <= INT32_MAX, so the
// weighted sums fit even uint32).
#pragma once
#include <cstdint>

#include "common/float16.h"  // FASTEMB_HD

namespace fastemb::binary {

// L = 2^bits - 1.
static inline FASTEMB_HD int64_t level_max(int bits) { return (int64_t(1) << bits) - 1; }

// Valid bits of the last 64-bit word of a plane of `nbytes` bytes holding `dim` dimensions
// (8 * (nbytes - 1) < dim <= 8 * nbytes), for a little-endian load of its tail bytes.
static inline FASTEMB_HD uint64_t last_word_mask(int64_t nbytes, int64_t dim) {
  const int64_t words = (nbytes + 7) / 8;
  const int64_t tail_bytes = nbytes - 8 * (words - 1);           // 1..8
  const int64_t valid_last_byte = dim - 8 * (nbytes - 1);         // 1..8, the most significant bits
  const uint64_t last_byte = (0xFFull << (8 - valid_last_byte)) & 0xFFull;
  const int64_t shift = 8 * (tail_bytes - 1);
  return (shift > 0 ? (1ull << shift) - 1 : 0ull) | (last_byte << shift);
}

// Weight exponent of the plane pair (i, k) in both forms: 2u - i - k.
static inline FASTEMB_HD int pair_shift(int bits, int i, int k) { return 2 * (bits - 1) - i - k; }

// S from the weighted xor sum wx = sum_{i,k} 2^(2u-i-k) popcnt(Pq_i ^ Pd_k) (bits = 1: dim - 2 H).
static inline FASTEMB_HD int64_t sdc_from_xor(int64_t dim, int bits, int64_t wx) {
  const int64_t L = level_max(bits);
  return dim * L * L - 2 * wx;
}

// S from the weighted and sum wa = sum_{i,k} 2^(2u-i-k) popcnt(Pq_i & Pd_k) and the rows' sumC.
static inline FASTEMB_HD int64_t sdc_from_and(int64_t dim, int bits, int64_t wa, int64_t sumc_q, int64_t sumc_d) {
  const int64_t L = level_max(bits);
  return 4 * wa - 2 * L * (sumc_q + sumc_d) + dim * L * L;
}

}  // namespace fastemb::binary
