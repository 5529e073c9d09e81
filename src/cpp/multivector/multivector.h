// Multi-vector retrieval: exact MaxSim (late interaction) and MUVERA fixed-dimensional encodings
// (Dhulipala et al., 2024). Plain C++ (no Python headers); callers own every buffer. The NumPy
// reference with exactly these rules is python/fastemb/_reference/multivector.py.
//
// Token sets: set s is rows [begin[s], end[s]) of x [rows, dim] (float32, row-major). A flat
// [total_tokens, dim] array with CSR offsets passes begin = offsets, end = offsets + 1; a padded
// [n, max_tokens, dim] array with lengths passes begin[s] = s * max_tokens, end = begin + length.
//
// MaxSim(Q, D) = sum over query tokens q (in row order) of max over document tokens d of <q, d>:
//   <q, d>  = fma chain over the dimensions in increasing order, starting at 0.0f
//             (acc = fma(q_k, d_k, acc), one rounding per step; the same on every ISA);
//   max     = m = max_rn(m, <q, d>) over the document tokens in row order (max_rn(a, b) = a > b ? a : b,
//             the x86 maxps rule), starting at the first dot product;
//   sum     = s = s + m_q over the query tokens in row order, starting at 0.0f.
//   An empty query set or an empty document set scores 0.
//
// MUVERA FDE of a token set X (rules in multivector_math.h):
//   for repetition r < R, SimHash bit b < k_sim of token t: z = <x_t, g_{r*k_sim+b}> (the hyperplane's
//   entries are +-1, summed in increasing dimension from 0.0f), bit = z > 0; the token's bucket is
//   id = sum_b bit_b << b (0 <= id < 2^k_sim).
//   S_{r,i} = sum of the tokens of bucket i in row order (float32, from 0.0f; per coordinate); c_{r,i} its size.
//   document with fill_empty and k_sim > 0 and a non-empty set: an empty bucket i takes the one token t
//     minimizing popcount(id_t ^ i) (ties: the lowest row) as its only member (S = 0.0f + x_t, c = 1).
//   inner projection (d_proj > 0): an AMS / count sketch per repetition: coordinate j goes to column
//     h_r(j) with sign s_r(j); P(S)_o = sum over j with h_r(j) = o, in increasing j, of +-S_j (from 0.0f);
//     d_proj = 0: P = identity.
//   block_{r,i} = P(S_{r,i}) for queries; P(S_{r,i}) / c_{r,i} (float32 division) for documents
//     (0 when c = 0). FDE = the blocks in order (r, i, o): [R * 2^k_sim * p], p = d_proj or dim.
//   final_dim > 0: a count sketch of the whole FDE: out_o = sum over i with h(i) = o, in increasing i, of
//     +-FDE_i (from 0.0f).
#pragma once
#include <cstdint>

#include "common/cpu_features.h"

namespace fastemb::multivector {

struct TokenSets {
  const float* x = nullptr;      // [rows, dim] row-major float32
  int64_t rows = 0;
  int64_t dim = 0;
  const int64_t* begin = nullptr;  // [n]
  const int64_t* end = nullptr;    // [n]; 0 <= begin[s] <= end[s] <= rows
  int64_t n = 0;
};

struct FdeSpec {
  int64_t repetitions = 1;  // R >= 1
  int k_sim = 0;            // SimHash bits, 0 <= k_sim <= kMaxKSim
  int64_t d_proj = 0;       // inner count-sketch width (0 = identity)
  int64_t final_dim = 0;    // final count-sketch width (0 = none)
  bool document = false;    // documents average their buckets (and may fill empty ones); queries sum
  bool fill_empty = false;  // documents only
  uint64_t seed = 0;
};

constexpr int kMaxKSim = 16;

// Width of one bucket's block (d_proj, or dim without inner projection), the FDE length before the
// final projection (R * 2^k_sim * block), and the output width.
// (Inline: the CUDA module, which does not link the CPU library, uses them too.)
inline int64_t fde_block_dim(const FdeSpec& s, int64_t dim) { return s.d_proj > 0 ? s.d_proj : dim; }
inline int64_t fde_raw_dim(const FdeSpec& s, int64_t dim) {
  return s.repetitions * (int64_t(1) << s.k_sim) * fde_block_dim(s, dim);
}
inline int64_t fde_dim(const FdeSpec& s, int64_t dim) { return s.final_dim > 0 ? s.final_dim : fde_raw_dim(s, dim); }

// out [q.n, d.n] = MaxSim(q set, d set). Throws std::invalid_argument (naming q / d) on bad sets or
// a non-finite token.
void maxsim(const TokenSets& q, const TokenSets& d, float* out);
// For each query set the k best document sets: scores [q.n, k] descending, ties to the lower document
// index; ids [q.n, k]. Positions past d.n hold -inf and -1. Never holds more than a tile of dot
// products; extra memory grows with q.n * k and the thread count, not with d.n.
void maxsim_topk(const TokenSets& q, const TokenSets& d, int64_t k, float* scores, int64_t* ids);
// out [x.n, fde_dim] float32.
void muvera_fde(const FdeSpec& s, const TokenSets& x, float* out);

// Same on an explicit ISA variant (tests); throws if the CPU lacks it.
void maxsim_isa(Isa isa, const TokenSets& q, const TokenSets& d, float* out);
void maxsim_topk_isa(Isa isa, const TokenSets& q, const TokenSets& d, int64_t k, float* scores, int64_t* ids);
void muvera_fde_isa(Isa isa, const FdeSpec& s, const TokenSets& x, float* out);

}  // namespace fastemb::multivector
