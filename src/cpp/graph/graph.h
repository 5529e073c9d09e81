// FastRP and very sparse random projection: the counter-based random matrix, the projection
// X @ R, and one fused CSR SpMM propagation step. Plain C++ (no Python headers); callers own every
// buffer. Math: shared/specs/fastrp.md; the NumPy reference with exactly these rules (same bits) is
// python/fastemb/_reference/graph.py.
//
// The random matrix R [n_in, d] is never stored. Entry (i, j) comes from counter c = i * d + j:
//   key = mix64(seed),  u = mix64(key + (c + 1) * kGolden)      (uint64 arithmetic, wrapping)
//   (the c-th output of a SplitMix64 generator seeded with key), with
//   mix64(z): z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31.
//   R[i, j] = 0 unless (u >> 11) < threshold (probability threshold / 2^53 = 1/s);
//   otherwise +value when bit 10 of u is 0, -value when it is 1. value = float32(sqrt(s / d)).
// The Python layer computes threshold = floor(2^53 / s) and value, so every backend uses the same.
#pragma once
#include <cstdint>

#include "common/cpu_features.h"

namespace fastemb::graph {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

struct RandomSpec {
  uint64_t seed = 0;       // user seed (key = mix64(seed))
  uint64_t threshold = 0;  // nonzero iff (u >> 11) < threshold
  float value = 0.f;       // magnitude of a nonzero entry
  int64_t d = 0;           // columns of R (output dimension)
};

// CSR matrix [rows, cols]. indices int32 or int64 (indices_int32), sorted or not: the kernels sum
// in stored order. data null = all ones. The C++ layer checks 0 <= index < cols.
struct Csr {
  const int64_t* indptr = nullptr;  // [rows + 1], indptr[0] = 0, nondecreasing
  const void* indices = nullptr;    // [nnz]
  bool indices_int32 = false;
  const float* data = nullptr;      // [nnz] or null
  int64_t rows = 0;
  int64_t cols = 0;
};

// out [rows, d] = diag(row_scale) * R[row0 : row0 + rows, :], i.e.
//   out[i, j] = R[row0 + i, j] * row_scale[i]   (float32 multiply; row_scale null = 1).
// FastRP's initial matrix diag(deg^beta) R.
void random_rows(const RandomSpec& r, int64_t row0, int64_t rows, const float* row_scale, float* out);

// Projection out [rows, d] = X @ R for dense X float32 [rows, n_in] (x) or CSR X (csr, x = null):
//   acc_j = 0; for each nonzero x_ic of row i in stored order (dense: c ascending, zeros skipped)
//   with R[c, j] != 0: acc_j = acc_j + x_ic (R positive) or acc_j - x_ic (R negative);
//   out[i, j] = acc_j * value.                       (float32, each op rounded)
void project_dense(const RandomSpec& r, const float* x, int64_t rows, int64_t n_in, float* out);
void project_csr(const RandomSpec& r, const Csr& x, float* out);

// One fused FastRP step over adjacency a [N, N] with prev [N, d] -> cur [N, d], for each row i:
//   u_j   = row_scale[i] * (sum over edges e of row i in stored order: acc = acc + w_e * prev[col_e, j])
//           (float32; w_e = data[e] or 1; the sum starts at 0.0f; the multiply by w_e is skipped
//           when data is null)
//   norm  = fixed-order L2 norm of u (norm_fixed_order below)
//   v_j   = normalize ? (norm > 0 ? u_j / norm : 0) : u_j
//   cur[i, j] = propagate_normalized ? v_j : u_j
//   if accum: accum[i, j] = accum[i, j] + alpha * v_j    (alpha * v_j rounded, then the add)
//             with accum_init: accum[i, j] = 0.0f + alpha * v_j, accum not read (the same bits as a
//             zero-filled accum without the N x d fill)
// accum may be null (nothing accumulated). Rows are independent: any thread split gives the same
// bits. prev and cur must not overlap.
void propagate(const Csr& a, const float* row_scale, const float* prev, int64_t d, float* cur, bool normalize,
               bool propagate_normalized, float alpha, float* accum, bool accum_init = false);

// propagate() with prev = random_rows(r, 0, N, init_scale) never materialized (addition): R's rows
// are generated once as sparse lists and each edge adds only its R row's nonzeros, in the same
// per-column order. Same bits as random_rows + propagate when the edge weights and init_scale are
// finite (the zero terms it skips change no bit of a sum that starts at +0.0f). FastRP's first step
// U_1 = M diag(deg^beta) R: with s = sqrt(N) an R row has d / sqrt(N) nonzeros, so this skips a full
// gather pass over an N x d matrix.
void propagate_random(const RandomSpec& r, const float* init_scale, const Csr& a, const float* row_scale, float* cur,
                      bool normalize, bool propagate_normalized, float alpha, float* accum, bool accum_init = false);
void propagate_random_isa(Isa isa, const RandomSpec& r, const float* init_scale, const Csr& a, const float* row_scale,
                          float* cur, bool normalize, bool propagate_normalized, float alpha, float* accum,
                          bool accum_init = false);

// accum[i, j] = accum[i, j] + alpha * v_j, v = normalize ? x[i] / norm(x[i]) (0 when the norm is 0)
// : x[i]. (GDS nodeSelfInfluence: the normalized initial vectors.)
void accumulate(const float* x, int64_t rows, int64_t d, bool normalize, float alpha, float* accum);

// Column statistics of x [rows, d] for standardization: mean_j = (sum_i x_ij) / rows and
// std_j = sqrt((sum_i (x_ij - mean_j)^2) / rows) (population std), sums in double over fixed
// 4096-row blocks combined in block order (same bits for every thread count). Then, in place,
// x_ij = float((double(x_ij) - mean_j) / (std_j > 0 ? std_j : 1)). mean / std: [d] double (outputs).
void standardize_columns(float* x, int64_t rows, int64_t d, double* mean, double* std);

// The fixed-order L2 norm every backend uses (row of length d):
//   16 float32 lanes, lane l = sum of u_j * u_j over j = l, l + 16, l + 32, ... in increasing j;
//   then halving: lane l += lane l + 8 (l < 8), l += l + 4 (l < 4), l += l + 2, l += l + 1;
//   norm = sqrtf(lane 0).
float norm_fixed_order(const float* u, int64_t d);

// Explicit-ISA variants (tests run every variant the CPU has).
void project_dense_isa(Isa isa, const RandomSpec& r, const float* x, int64_t rows, int64_t n_in, float* out);
void project_csr_isa(Isa isa, const RandomSpec& r, const Csr& x, float* out);
void random_rows_isa(Isa isa, const RandomSpec& r, int64_t row0, int64_t rows, const float* row_scale, float* out);
void propagate_isa(Isa isa, const Csr& a, const float* row_scale, const float* prev, int64_t d, float* cur,
                   bool normalize, bool propagate_normalized, float alpha, float* accum, bool accum_init = false);
void accumulate_isa(Isa isa, const float* x, int64_t rows, int64_t d, bool normalize, float alpha, float* accum);

}  // namespace fastemb::graph
