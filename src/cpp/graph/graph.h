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
  // propagate_block / propagate_random_block only (null everywhere else): CSR row k is row row_ids[k] of
  // the row block (strictly increasing), so a piece stores only the rows it has edges in.
  const int64_t* row_ids = nullptr;
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
//
// Column bands (CPU; propagate and propagate_block alike): when prev is far larger than the L3, the step
// may run as passes over bands of prev's rows [b * W, (b + 1) * W), b increasing, so that each pass
// gathers from a cache-resident 8 MB slice of prev. Each row's sum is carried across the passes in cur
// (float32, exactly the register value) and continues from a per-row cursor into its stored edges: a
// pass adds the row's next edges while their column is below the band's end, so every row still adds
// the same terms in stored order and the bits are those of one pass, for any index order, ISA and
// thread count. Scratch: the cursors, 8 bytes per row of a. Chosen per call (graph_dispatch.cpp
// band_rows_for): on only when the graph has many edges per (row, band) pair, since each pair costs a
// read and a write of the row's partial sum; FASTEMB_GRAPH_BAND_ROWS = k forces bands of k rows
// (0: never).
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

// ---- row blocks of a row-partitioned graph (fastemb.dask) ------------------------------------------
// A row block i of A [N, N] is split by the column blocks j of a partition of the nodes; a = A[i, j]
// as CSR [rows_i, cols_j] with column indices local to block j, prev = X[j] [cols_j, d]. Per row:
//   acc = (acc_in ? acc_in[row] : 0.0f), then acc = acc + w_e * prev[col_e] over the row's edges in
//   stored order (exactly propagate's chain, which this continues);
//   finish == false: out[row] = acc (the partial sum, unscaled; accum untouched);
//   finish == true:  out[row] = row_scale[row] * acc, then propagate's epilogue (normalize, accum,
//                    propagate_normalized) on out.
// Chaining the column blocks j in increasing order (acc_in = the previous out) with finish on the
// last gives propagate's bits whenever each row's stored edges are ordered by column block (e.g.
// sorted indices). acc_in may be out itself (in place); no other buffers may overlap. A row block
// with no edges finishes with a = [rows, 0] (prev unused). out, acc_in, accum and row_scale have
// out_rows rows: a.rows, or with a.row_ids (a piece storing only the rows it has edges in) the row
// block's rows; then only the listed rows are computed (acc_in must be null or out; out's other rows
// are left as they are: zero them before a chain's first link, finish the chain with a [rows, 0] block).
void propagate_block(const Csr& a, int64_t out_rows, const float* row_scale, const float* prev, int64_t d,
                     const float* acc_in, float* out, bool finish, bool normalize, bool propagate_normalized,
                     float alpha, float* accum, bool accum_init = false);
void propagate_block_isa(Isa isa, const Csr& a, int64_t out_rows, const float* row_scale, const float* prev,
                         int64_t d, const float* acc_in, float* out, bool finish, bool normalize,
                         bool propagate_normalized, float alpha, float* accum, bool accum_init = false);

// R's rows [row0, row0 + n) as sparse lists ((column << 1) | negative, increasing column, int32):
// random_table_offsets writes offsets [n + 1] (offsets[0] = 0, row k's list at [offsets[k],
// offsets[k + 1])); random_table_lists fills lists [offsets[n]] and checks offsets against the
// generator (invalid_argument when they disagree).
void random_table_offsets_isa(Isa isa, const RandomSpec& r, int64_t row0, int64_t n, int64_t* offsets);
void random_table_lists_isa(Isa isa, const RandomSpec& r, int64_t row0, int64_t n, const int64_t* offsets,
                            int32_t* lists, int64_t num_lists);

// propagate_block with prev = diag(init_scale) R[row0_j : row0_j + cols_j] never materialized: the
// table of those R rows (random_table_*; entries checked against d), init_scale [cols_j] (null = 1).
// The same bits as random_rows + propagate_block for finite weights and init_scale (as
// propagate_random).
void propagate_random_block_isa(Isa isa, const RandomSpec& r, const float* init_scale, const int64_t* offsets,
                                const int32_t* lists, int64_t num_lists, const Csr& a, int64_t out_rows,
                                const float* row_scale,
                                const float* acc_in, float* out, bool finish, bool normalize,
                                bool propagate_normalized, float alpha, float* accum, bool accum_init = false);

// accum[i, j] = accum[i, j] + alpha * v_j, v = normalize ? x[i] / norm(x[i]) (0 when the norm is 0)
// : x[i]. (GDS nodeSelfInfluence: the normalized initial vectors.)
void accumulate(const float* x, int64_t rows, int64_t d, bool normalize, float alpha, float* accum);

// Column statistics of x [rows, d] for standardization: mean_j = (sum_i x_ij) / rows and
// std_j = sqrt((sum_i (x_ij - mean_j)^2) / rows) (population std), sums in double over fixed
// 4096-row blocks combined in block order (same bits for every thread count). Then, in place,
// x_ij = float((double(x_ij) - mean_j) / (std_j > 0 ? std_j : 1)). mean / std: [d] double (outputs).
void standardize_columns(float* x, int64_t rows, int64_t d, double* mean, double* std);

// The pieces of standardize_columns, for statistics split across row blocks (fastemb.dask): out[b, j]
// [ceil(rows / 4096), d] = the sum in double, from 0, rows in order, over the rows of each 4096-row block b
// of x (rows b * 4096 .. of x; the last block may be shorter) of x_ij (mean null) or (x_ij - mean_j)^2 --
// the per-block sums standardize_columns adds in block order; and the in-place pass,
// out_ij = float((double(x_ij) - mean_j) / (std_j > 0 ? std_j : 1)) (x may be out).
void column_block_sums(const float* x, int64_t rows, int64_t d, const double* mean, double* out);
void standardize_apply(const float* x, int64_t rows, int64_t d, const double* mean, const double* std, float* out);

// The fixed-order L2 norm every backend uses (row of length d):
//   16 float32 lanes, lane l = sum of u_j * u_j over j = l, l + 16, l + 32, ... in increasing j;
//   then halving: lane l += lane l + 8 (l < 8), l += l + 4 (l < 4), l += l + 2, l += l + 1;
//   norm = sqrtf(lane 0).
float norm_fixed_order(const float* u, int64_t d);

// ---- node order (fastemb.reorder_graph): ISA-free --------------------------------------------------

// Reverse Cuthill-McKee order of a square CSR's nodes, breadth first over the stored edges: each
// component starts at its lowest-degree unvisited node (ties: lower id), each node appends its unvisited
// neighbours by increasing degree (ties: lower id), and the whole order is reversed at the end.
// order: [rows], order[c] = the node placed at position c. Single-threaded, O(rows + nnz log deg).
void rcm_order(const Csr& a, int64_t* order);

// a [n, n] with node order[c] renamed c: row c of the result is row order[c] of a, its entries in stored
// order, column ids renumbered j -> inverse[j]. order must be a permutation and inverse its inverse
// (checked). Outputs: indptr_out [n + 1], indices_out [nnz] (int32 when out_int32, else int64), data_out
// [nnz] (only when a.data is not null).
void permute_csr(const Csr& a, const int64_t* order, const int64_t* inverse, int64_t* indptr_out, void* indices_out,
                 bool out_int32, float* data_out);

// dst[i, :] = src[idx[i], :] for i < rows: float32 rows of d, 0 <= idx[i] < src_rows (checked); src and dst
// must not overlap.
void gather_rows(const float* src, int64_t src_rows, int64_t d, const int64_t* idx, int64_t rows, float* dst);

// Explicit-ISA variants (tests run every variant the CPU has).
void project_dense_isa(Isa isa, const RandomSpec& r, const float* x, int64_t rows, int64_t n_in, float* out);
void project_csr_isa(Isa isa, const RandomSpec& r, const Csr& x, float* out);
void random_rows_isa(Isa isa, const RandomSpec& r, int64_t row0, int64_t rows, const float* row_scale, float* out);
void propagate_isa(Isa isa, const Csr& a, const float* row_scale, const float* prev, int64_t d, float* cur,
                   bool normalize, bool propagate_normalized, float alpha, float* accum, bool accum_init = false);
void accumulate_isa(Isa isa, const float* x, int64_t rows, int64_t d, bool normalize, float alpha, float* accum);

}  // namespace fastemb::graph
