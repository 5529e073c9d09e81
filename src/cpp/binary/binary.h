// SDC binary codes: Hamming distances and exact integer SDC scores between multi-bit binary codes,
// as a full score matrix or a fused top-k that streams the corpus. Plain C++ (no Python headers);
// callers own every buffer. Math and layout: shared/specs/sdc.md.
//
// Code layout: uint8 [n, bits, nbytes], bit plane after bit plane, first dimension = most
// significant bit of byte 0 (np.packbits bitorder='big'). Only the first `dim` bits of a plane
// are dimensions; the kernels mask the rest, so padding bits never change a score even when they
// are not zero.
#pragma once
#include <cstdint>

#include "common/cpu_features.h"

namespace fastemb::binary {

// hamming: popcount(q XOR d) over the first `dim` bits of every plane (plane i against plane i).
// sdc:     S = sum_j (2 C_qj - L)(2 C_dj - L), L = 2^bits - 1 (bits = 1: S = dim - 2 * Hamming).
enum class Mode : int { hamming = 0, sdc = 1 };

struct Problem {
  const uint8_t* q = nullptr;  // [nq, bits, nbytes]
  int64_t nq = 0;
  const uint8_t* d = nullptr;  // [nd, bits, nbytes]
  int64_t nd = 0;
  int bits = 1;                // 1..4
  int64_t nbytes = 0;          // bytes per plane, >= 1
  int64_t dim = 0;             // true dimensions: 8 * (nbytes - 1) < dim <= 8 * nbytes
  Mode mode = Mode::sdc;
};

// Docs per tile: the corpus is copied tile by tile into a word-major buffer [bits*words][kTile]
// (masked), so one broadcast query word meets kTile docs per vector op.
constexpr int64_t kTile = 16;

// Throw std::invalid_argument naming the argument on bad input.
// out: [nq, nd] int32.
void scores(const Problem& p, int32_t* out);
// Top-k by score (descending), ties to the lower doc id; rows padded with score INT32_MIN and id -1
// when k > nd. scores/ids: [nq, k]. Same result for every thread count and ISA.
void topk(const Problem& p, int64_t k, int32_t* scores, int64_t* ids);
void scores_isa(Isa isa, const Problem& p, int32_t* out);
void topk_isa(Isa isa, const Problem& p, int64_t k, int32_t* scores, int64_t* ids);
// The kernel variant that runs for a requested ISA: avx512 needs AVX512-VPOPCNTDQ on top of the
// centroid family's AVX-512 set, and falls back to avx2 without it.
Isa kernel_isa(Isa requested);

// ---- binarize: float rows -> multi-bit codes (python/fastemb/_reference/binary.py, same bits) ----
// x: [n, m] rows of dtype (0 float32, 1 float64, 2 float16, 3 bfloat16), row r at element offset
// r * ld (ld >= m), elements contiguous. scale: nullptr (s = mean|x| per row in float64, NumPy's
// pairwise summation order, all-zero row -> 1) or positive values read at scale[r * scale_stride]
// (stride 0: one scalar). out: uint8 [n, bits, ceil(m / 8)], padding bits zero.
struct BinarizeProblem {
  const void* x = nullptr;
  int dtype = 0;
  int64_t n = 0, m = 0, ld = 0;
  int bits = 1;                   // 1..4
  const double* scale = nullptr;
  int64_t scale_stride = 0;       // 0 or 1
  bool gt = false;                // threshold rule: false "ge" (r >= 0 -> 1), true "gt" (r > 0 -> 1)
};

// Returns false (out then unspecified) when x holds NaN or inf; throws std::invalid_argument on bad
// arguments. Same bits for every ISA and thread count.
bool binarize(const BinarizeProblem& p, uint8_t* out);
bool binarize_isa(Isa isa, const BinarizeProblem& p, uint8_t* out);

}  // namespace fastemb::binary
