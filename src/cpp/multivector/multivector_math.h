// Per-element math of the multi-vector family, shared by the CPU kernels (every ISA) and the CUDA
// kernels (`FASTEMB_HD`: __host__ __device__ under nvcc). `static inline`: every translation unit keeps
// its own copy.
//
// The random matrices are never stored: every entry comes from the graph family's counter-based
// SplitMix64 generator (graph_math.h: entry_bits(key, c), key = mix64(stream seed)), with one stream
// per matrix:
//   stream seed    = seed + stream * kStreamStep (uint64, wrapping); stream 0 SimHash, 1 inner sketch,
//                    2 final sketch (stream 0 is the seed itself: the SimHash signs are exactly
//                    sparse_random_projection's R with s = 1, rows = hyperplanes, d = dim);
//   SimHash        g_h[j] = -1 if bit 10 of entry_bits(key0, h * dim + j) is 1, else +1
//                    (hyperplane h = r * k_sim + b);
//   inner sketch   u = entry_bits(key1, r * dim + j): column ((u >> 32) * d_proj) >> 32, negative iff
//                    bit 10 of u;
//   final sketch   u = entry_bits(key2, i): column ((u >> 32) * final_dim) >> 32, negative iff bit 10.
#pragma once
#include <cstdint>

#include "common/rounding.h"
#include "graph/graph_math.h"

namespace fastemb::multivector {

constexpr uint64_t kStreamStep = 0xD1B54A32D192ED03ull;
enum Stream : int { kStreamSimHash = 0, kStreamInner = 1, kStreamFinal = 2 };

static inline FASTEMB_HD uint64_t stream_key(uint64_t seed, int stream) {
  return graph::mix64(seed + static_cast<uint64_t>(stream) * kStreamStep);
}

// +1 or -1: entry j of SimHash hyperplane h.
static inline FASTEMB_HD float simhash_sign(uint64_t key, uint64_t h, uint64_t dim, uint64_t j) {
  return ((graph::entry_bits(key, h * dim + j) >> 10) & 1u) ? -1.f : 1.f;
}

// Count-sketch entry c into `width` columns: column in [0, width), negative sign flag.
static inline FASTEMB_HD uint32_t sketch_column(uint64_t u, uint64_t width) {
  return static_cast<uint32_t>(((u >> 32) * width) >> 32);
}
static inline FASTEMB_HD bool sketch_negative(uint64_t u) { return ((u >> 10) & 1u) != 0; }

// acc +- v, rounded once (the sketches' step).
static inline FASTEMB_HD float signed_add(float acc, float v, bool negative) {
  return negative ? sub_rn(acc, v) : add_rn(acc, v);
}

// The max of the MaxSim rule: a > b ? a : b (x86 maxps(a, b): b when either is NaN or both are zero).
static inline FASTEMB_HD float max_rn(float a, float b) { return a > b ? a : b; }

static inline FASTEMB_HD int popcount32(uint32_t v) {
#if defined(__CUDA_ARCH__)
  return __popc(v);
#else
  return __builtin_popcount(v);
#endif
}

}  // namespace fastemb::multivector
