// Centroid aggregation: group sums / means / max / min of rows of x by label, leave-one-out
// centroids, and their backward. Plain C++ (no Python headers). Callers own every buffer.
#pragma once
#include <cstdint>

#include "common/cpu_features.h"

namespace fastemb::centroid {

enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };
enum class Reduce : int { sum = 0, mean = 1, amax = 2, amin = 3 };
// Bit flags: 'pre' normalizes rows before reducing, 'post' normalizes each centroid.
enum NormalizeFlags : int { kNormalizePre = 1, kNormalizePost = 2 };

// Accumulation type: float64 for float64 input, float32 otherwise (fp16/bf16 accumulate in fp32).
inline bool acc_is_double(DType t) { return t == DType::f64; }

struct Problem {
  const void* x = nullptr;  // [n, d] row-major, `dtype`
  DType dtype = DType::f32;
  int64_t n = 0, d = 0;
  const void* labels = nullptr;  // [n] int32 or int64 group ids, any order; or null with offsets
  bool labels_int32 = false;
  const int64_t* offsets = nullptr;  // [k + 1] non-decreasing CSR pointer; or null with labels
  int64_t k = 0;                     // number of groups
  const void* weights = nullptr;     // [n] in the accumulation type, or null (all ones)
  Reduce reduce = Reduce::mean;
  int normalize = 0;  // NormalizeFlags
  double eps = 1e-12;
  bool leave_one_out = false;  // sum / mean only: row i gets its group's centroid without itself
};

// Output rows: k, or n when leave_one_out.
struct ForwardOutputs {
  void* out = nullptr;          // [rows, d] `dtype`
  int64_t* counts = nullptr;    // [k] rows per group
  void* wsum = nullptr;         // [k] accumulation type: sum of weights (= counts without weights)
  int64_t* arg = nullptr;       // [k, d] amax/amin: row holding the extreme (ties: lowest row), -1 if empty
  void* out_norm = nullptr;     // [rows] accumulation type: ||centroid|| before 'post' (post only)
};

struct BackwardInputs {
  const void* grad_out = nullptr;  // [rows, d] `dtype`
  const void* out = nullptr;       // forward outputs, as returned
  const int64_t* counts = nullptr;
  const void* wsum = nullptr;
  const int64_t* arg = nullptr;
  const void* out_norm = nullptr;
};

struct BackwardOutputs {
  void* grad_x = nullptr;  // [n, d] `dtype`, or null
  void* grad_w = nullptr;  // [n] accumulation type, or null (not for amax/amin)
};

// Throw std::invalid_argument naming the offending argument on bad input (labels out of range,
// offsets not a valid CSR pointer, unsupported mode combination).
void forward(const Problem& p, const ForwardOutputs& o);
void backward(const Problem& p, const BackwardInputs& in, const BackwardOutputs& o);
// Same, on an explicit ISA variant (tests); throws if the CPU lacks it.
void forward_isa(Isa isa, const Problem& p, const ForwardOutputs& o);
void backward_isa(Isa isa, const Problem& p, const BackwardInputs& in, const BackwardOutputs& o);

// Rows grouped by group id: rows of group g are row_of(j) for j in [offsets[g], offsets[g+1]),
// in increasing row order (a stable counting sort when labels are unsorted), so every backend
// and thread count sums each group in the same order and gives the same bits.
struct Segments {
  const int64_t* offsets = nullptr;  // [k + 1]
  const int64_t* perm = nullptr;     // [n] or null (identity: labels sorted or offsets given)
  const int64_t* chunks = nullptr;   // [num_chunks + 1] group boundaries of the parallel tasks
  int64_t num_chunks = 0;
  int64_t col_blocks = 1;            // columns split into this many blocks (few groups)
  int64_t col_block_width = 0;       // multiple of 16
  // > 0: unsorted labels with few groups, reduced by streaming x in row blocks of this many rows
  // into per-block partial sums (perm is then not built); 0: the segment path above.
  int64_t block_rows = 0;
};

}  // namespace fastemb::centroid
