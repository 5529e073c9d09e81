// CUDA kernels of the graph family, mirroring the CPU kernels (src/cpp/graph/graph_kernels.h) and the
// NumPy reference bit for bit. Per-element math from graph/graph_math.h (shared with the CPU):
// mix64 / entry_bits / entry_sign, add_rn / mul_rn / div_rn (never contracted into FMA), the 16-lane
// norm combine.
//
//   random_rows:    one thread per entry.
//   project_dense / project_csr: one thread per output entry (i, j); it walks c (dense: increasing,
//                   zeros skipped; CSR: stored order) and regenerates R[c, j] on the fly (R is never
//                   stored; the GPU has the arithmetic to spare).
//   propagate:      one warp per row, 128-column chunks (one chunk for d <= 128: the edges are read
//                   once). Lane t owns columns 4t .. 4t + 3 of the chunk (one float4 load per edge) when
//                   d % 4 == 0 and prev / cur are 16-byte aligned, else columns t + 32 m (4-byte loads).
//                   The warp loads 32 edges' (index, weight) at a time, one per lane, and broadcasts them
//                   by shuffle; the gathers of kEdgeUnroll edges are issued before their adds. Each element
//                   still sees acc = 0, then one add per edge in stored order (the CPU's per-element
//                   order): only the assignment of columns to lanes differs. The scaled row u goes to
//                   cur; after __syncwarp, lanes 0..15 each sum their norm lane (j = l, l + 16, ...
//                   increasing, read back from cur, so independent of the column mapping) and the
//                   halving runs through shuffles in the CPU's order; then the epilogue (normalize,
//                   accumulate), also reading u back from cur.
//   CSR inputs:     not validated per call (no stream sync): the caller passes nnz, the length of
//                   indices (and data), and every kernel clamps a row's edge range into [0, nnz] and
//                   skips column indices outside [0, cols), so no input values can make a read go out
//                   of bounds. validate_csr (graph_validate_csr) is the full check, one sync.
//   standardize:    double column sums over 4096-row blocks (one thread per (block, column), rows in
//                   order), combined in block order by one thread per column: the CPU's bits.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_util.cuh"
#include "graph/graph.h"
#include "graph/graph_validate.h"
#include "graph/graph_math.h"
#include "graph_cuda.cuh"

namespace fastemb::graph::cuda {
namespace {

using cuda_util::ceil_div;
using cuda_util::check_cuda;
using cuda_util::check_launch;
using cuda_util::DeviceBuffer;
using cuda_util::fail;
using cuda_util::grid_for;
using cuda_util::kMaxGrid;

constexpr int kWarp = 32;
constexpr int kBlock = 256;
constexpr int kCols = 4;  // columns per lane per chunk (chunk = 128 columns)
constexpr int kChunk = kWarp * kCols;
static_assert(kCols == 4, "propagate's vec4 path: one float4 per lane per chunk");
constexpr int kEdgeUnroll = 4;  // propagate: gathers in flight per lane before their adds
static_assert(kWarp % kEdgeUnroll == 0, "propagate_chunk: shuffle source lanes stay below 32");
constexpr unsigned kFull = 0xffffffffu;
constexpr int64_t kStdBlock = 4096;

__device__ __forceinline__ int64_t index_at(const void* idx, bool i32, int64_t e) {
  return i32 ? static_cast<int64_t>(static_cast<const int32_t*>(idx)[e]) : static_cast<const int64_t*>(idx)[e];
}

// Row i's edge range [e0, e1) clamped into [0, nnz] (e1 >= e0): whatever indptr holds, every e read is
// in [0, nnz). For a valid CSR (indptr[0] = 0, nondecreasing, indptr[rows] = nnz) it is the row's range.
struct EdgeRange {
  int64_t e0, e1;
};
__device__ __forceinline__ EdgeRange edge_range(const int64_t* indptr, int64_t i, int64_t nnz) {
  int64_t e0 = indptr[i], e1 = indptr[i + 1];
  e0 = e0 < 0 ? 0 : (e0 > nnz ? nnz : e0);
  e1 = e1 < e0 ? e0 : (e1 > nnz ? nnz : e1);
  return {e0, e1};
}

// ---- CSR validation (graph_validate_csr only) --------------------------------------------------------

constexpr unsigned long long kBadOrder = 1, kBadIndex = 2;

struct CsrCheck {
  unsigned long long flags;
  long long first, last;  // indptr[0], indptr[rows]
};

__global__ void check_csr_kernel(const int64_t* indptr, int64_t rows, const void* idx, bool i32, int64_t nnz, int64_t cols,
                                 CsrCheck* out) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    out->first = indptr[0];
    out->last = indptr[rows];
  }
  const int64_t work = rows > nnz ? rows : nnz;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  unsigned long long bad = 0;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < work; t += stride) {
    if (t < rows && indptr[t + 1] < indptr[t]) bad |= kBadOrder;
    if (t < nnz) {
      const int64_t c = index_at(idx, i32, t);
      if (c < 0 || c >= cols) bad |= kBadIndex;
    }
  }
  if (bad) atomicOr(&out->flags, bad);
}

// Host-side checks of a device CSR that need no device read (no sync).
void check_csr_args(const Csr& a, int64_t nnz) {
  if (a.rows < 0) fail("indptr: negative number of rows " + std::to_string(a.rows));
  if (a.cols < 0) fail("indices: negative number of columns " + std::to_string(a.cols));
  if (nnz < 0) fail("nnz: must be >= 0 (the length of indices), got " + std::to_string(nnz));
  check_ptr(a.indptr, true, "indptr");
  check_ptr(a.indices, nnz > 0, "indices");
}

// ---- random rows and projection ---------------------------------------------------------------------

__global__ void random_rows_kernel(uint64_t key, uint64_t threshold, float value, int64_t d, int64_t row0, int64_t rows,
                                   const float* row_scale, float* out) {
  const int64_t total = rows * d;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int64_t i = t / d, j = t - i * d;
    const uint64_t u = entry_bits(key, static_cast<uint64_t>(row0 + i) * static_cast<uint64_t>(d) + static_cast<uint64_t>(j));
    const int s = entry_sign(u, threshold);
    const float v = s == 0 ? 0.f : (s > 0 ? value : -value);
    out[t] = row_scale ? mul_rn(v, row_scale[i]) : v;
  }
}

__global__ void project_dense_kernel(uint64_t key, uint64_t threshold, float value, int64_t d, const float* x, int64_t rows,
                                     int64_t n_in, float* out) {
  const int64_t total = rows * d;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int64_t i = t / d, j = t - i * d;
    const float* xi = x + i * n_in;
    float acc = 0.f;
    for (int64_t c = 0; c < n_in; ++c) {
      const float xv = xi[c];
      if (xv == 0.f) continue;
      const int s = entry_sign(entry_bits(key, static_cast<uint64_t>(c) * static_cast<uint64_t>(d) + static_cast<uint64_t>(j)), threshold);
      if (s > 0) acc = add_rn(acc, xv);
      else if (s < 0) acc = sub_rn(acc, xv);
    }
    out[t] = mul_rn(acc, value);
  }
}

__global__ void project_csr_kernel(uint64_t key, uint64_t threshold, float value, int64_t d, const int64_t* indptr,
                                   const void* idx, bool i32, const float* data, int64_t rows, int64_t cols, int64_t nnz,
                                   float* out) {
  const int64_t total = rows * d;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int64_t i = t / d, j = t - i * d;
    const EdgeRange r = edge_range(indptr, i, nnz);
    float acc = 0.f;
    for (int64_t e = r.e0; e < r.e1; ++e) {
      const int64_t c = index_at(idx, i32, e);
      if (c < 0 || c >= cols) continue;
      const float xv = data ? data[e] : 1.f;
      const int s = entry_sign(entry_bits(key, static_cast<uint64_t>(c) * static_cast<uint64_t>(d) + static_cast<uint64_t>(j)), threshold);
      if (s > 0) acc = add_rn(acc, xv);
      else if (s < 0) acc = sub_rn(acc, xv);
    }
    out[t] = mul_rn(acc, value);
  }
}

// ---- propagate / accumulate -----------------------------------------------------------------------

// Norm of row u (length d) in the fixed 16-lane order; every lane of the warp gets it.
// Caller: __syncwarp() after the row was written.
__device__ float warp_row_norm(const float* u, int64_t d, int lane) {
  float s = 0.f;
  if (lane < 16)
    for (int64_t j = lane; j < d; j += 16) s = add_rn(s, mul_rn(u[j], u[j]));
  // lane l += lane l + w, w = 8, 4, 2, 1 (only lanes < w matter at each step)
  for (int w = 8; w >= 1; w >>= 1) {
    const float o = __shfl_down_sync(0xffffffffu, s, w);
    if (lane < w) s = add_rn(s, o);
  }
  const float norm = sqrt_rn(s);
  return __shfl_sync(0xffffffffu, norm, 0);
}

// Epilogue on row u (in cur, already scaled, written by any lanes of this warp): normalize / accumulate /
// write back v. Lane t handles columns t + 32 m here whatever lanes wrote them (hence the first sync).
__device__ void row_epilogue(float* u, int64_t d, int lane, bool normalize, bool propagate_normalized, float alpha,
                             float* accum) {
  __syncwarp();
  if (!normalize) {
    if (accum)
      for (int64_t j = lane; j < d; j += kWarp) accum[j] = add_rn(accum[j], mul_rn(alpha, u[j]));
    return;
  }
  const float norm = warp_row_norm(u, d, lane);
  __syncwarp();
  for (int64_t j = lane; j < d; j += kWarp) {
    const float v = normalized_value(u[j], norm);
    if (accum) accum[j] = add_rn(accum[j], mul_rn(alpha, v));
    if (propagate_normalized) u[j] = v;
  }
}

// One column chunk [j0, j0 + 128) of row u = scale * sum over edges [e0, e1) of w_e * prev[c_e]. kVec4:
// lane t owns columns j0 + 4t + k (k < 4; d % 4 == 0, prev 16-byte aligned), else j0 + t + 32 k. Each
// owned element: acc = 0, then for each edge in stored order acc = acc + w * p (acc + p when data is
// null), then acc * scale; columns >= d are neither read nor written.
template <bool kVec4>
__device__ __forceinline__ void propagate_chunk(int64_t e0, int64_t e1, const void* idx, bool i32, const float* data,
                                                int64_t n, const float* prev, int64_t d, int64_t j0, int lane,
                                                float scale, float* u) {
  float acc[kCols];
#pragma unroll
  for (int k = 0; k < kCols; ++k) acc[k] = 0.f;
  // The first owned column (vec4: all four are valid together, as d % 4 == 0).
  const int64_t jl = kVec4 ? j0 + int64_t(kCols) * lane : j0 + lane;
  for (int64_t eb = e0; eb < e1; eb += kWarp) {  // warp-uniform: e0, e1 are the same in every lane
    const int cnt = e1 - eb < kWarp ? static_cast<int>(e1 - eb) : kWarp;
    // lane l holds edge eb + l: its column (-1: no edge or out of [0, n), skipped) and weight.
    int64_t my_c = -1;
    float my_w = 1.f;
    if (lane < cnt) {
      const int64_t c = index_at(idx, i32, eb + lane);
      if (c >= 0 && c < n) my_c = c;
      if (data) my_w = data[eb + lane];
    }
    // k + q <= 31 (k: a multiple of kEdgeUnroll below cnt <= 32, 32 % kEdgeUnroll == 0); lanes >= cnt
    // hold my_c = -1, so the padding slots of the last group are skipped like invalid columns.
    for (int k = 0; k < cnt; k += kEdgeUnroll) {
      int64_t c[kEdgeUnroll];
      float w[kEdgeUnroll];
      float p[kEdgeUnroll][kCols];
#pragma unroll
      for (int q = 0; q < kEdgeUnroll; ++q) {
        c[q] = __shfl_sync(kFull, my_c, k + q);
        w[q] = __shfl_sync(kFull, my_w, k + q);
      }
      // All gathers first (memory-level parallelism), then the adds in edge order.
#pragma unroll
      for (int q = 0; q < kEdgeUnroll; ++q) {
#pragma unroll
        for (int m = 0; m < kCols; ++m) p[q][m] = 0.f;
        if (c[q] < 0) continue;
        const float* pr = prev + c[q] * d;
        if (kVec4) {
          if (jl < d) {
            const float4 v = __ldg(reinterpret_cast<const float4*>(pr + jl));
            p[q][0] = v.x;
            p[q][1] = v.y;
            p[q][2] = v.z;
            p[q][3] = v.w;
          }
        } else {
#pragma unroll
          for (int m = 0; m < kCols; ++m)
            if (jl + int64_t(m) * kWarp < d) p[q][m] = __ldg(pr + jl + int64_t(m) * kWarp);
        }
      }
#pragma unroll
      for (int q = 0; q < kEdgeUnroll; ++q) {
        if (c[q] < 0) continue;
#pragma unroll
        for (int m = 0; m < kCols; ++m) acc[m] = data ? add_rn(acc[m], mul_rn(w[q], p[q][m])) : add_rn(acc[m], p[q][m]);
      }
    }
  }
  if (kVec4) {
    if (jl < d)
      *reinterpret_cast<float4*>(u + jl) =
          make_float4(mul_rn(acc[0], scale), mul_rn(acc[1], scale), mul_rn(acc[2], scale), mul_rn(acc[3], scale));
  } else {
#pragma unroll
    for (int m = 0; m < kCols; ++m)
      if (jl + int64_t(m) * kWarp < d) u[jl + int64_t(m) * kWarp] = mul_rn(acc[m], scale);
  }
}

template <bool kVec4>
__global__ void propagate_kernel(const int64_t* indptr, const void* idx, bool i32, const float* data, int64_t nnz,
                                 int64_t n, const float* row_scale, const float* prev, int64_t d, float* cur,
                                 bool normalize, bool propagate_normalized, float alpha, float* accum) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t i = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp; i < n; i += warps) {
    const EdgeRange r = edge_range(indptr, i, nnz);
    const float scale = row_scale ? row_scale[i] : 1.f;
    float* u = cur + i * d;
    for (int64_t j0 = 0; j0 < d; j0 += kChunk)
      propagate_chunk<kVec4>(r.e0, r.e1, idx, i32, data, n, prev, d, j0, lane, scale, u);
    row_epilogue(u, d, lane, normalize, propagate_normalized, alpha, accum ? accum + i * d : nullptr);
  }
}

// propagate with prev = diag(init_scale) R regenerated on the fly (R never stored): lane t owns
// columns j = t + 32 m and adds, edge by edge in stored order, w * (+-value * init_scale[c]) for the
// nonzero R[c, j] (the CPU's propagate_random order; zero terms skipped).
__global__ void propagate_random_kernel(uint64_t key, uint64_t threshold, float value, const float* init_scale,
                                        const int64_t* indptr, const void* idx, bool i32, const float* data,
                                        int64_t nnz, int64_t n, const float* row_scale, int64_t d, float* cur,
                                        bool normalize, bool propagate_normalized, float alpha, float* accum) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t i = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp; i < n; i += warps) {
    const EdgeRange r = edge_range(indptr, i, nnz);
    const float scale = row_scale ? row_scale[i] : 1.f;
    float* u = cur + i * d;
    for (int64_t j0 = 0; j0 < d; j0 += kChunk) {
      float acc[kCols];
#pragma unroll
      for (int k = 0; k < kCols; ++k) acc[k] = 0.f;
      for (int64_t e = r.e0; e < r.e1; ++e) {
        const int64_t c = index_at(idx, i32, e);
        if (c < 0 || c >= n) continue;
        const float pv = init_scale ? mul_rn(value, init_scale[c]) : value;
        const float w = data ? data[e] : 1.f;
#pragma unroll
        for (int k = 0; k < kCols; ++k) {
          const int64_t j = j0 + lane + int64_t(k) * kWarp;
          if (j >= d) continue;
          const int s = entry_sign(entry_bits(key, static_cast<uint64_t>(c) * static_cast<uint64_t>(d) + static_cast<uint64_t>(j)), threshold);
          if (s == 0) continue;
          const float x = s > 0 ? pv : -pv;
          acc[k] = data ? add_rn(acc[k], mul_rn(w, x)) : add_rn(acc[k], x);
        }
      }
#pragma unroll
      for (int k = 0; k < kCols; ++k) {
        const int64_t j = j0 + lane + int64_t(k) * kWarp;
        if (j < d) u[j] = mul_rn(acc[k], scale);
      }
    }
    row_epilogue(u, d, lane, normalize, propagate_normalized, alpha, accum ? accum + i * d : nullptr);
  }
}

__global__ void accumulate_kernel(const float* x, int64_t rows, int64_t d, bool normalize, float alpha, float* accum) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t i = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp; i < rows; i += warps) {
    const float* xi = x + i * d;
    float* ai = accum + i * d;
    const float norm = normalize ? warp_row_norm(xi, d, lane) : 1.f;
    for (int64_t j = lane; j < d; j += kWarp) {
      const float v = normalize ? normalized_value(xi[j], norm) : xi[j];
      ai[j] = add_rn(ai[j], mul_rn(alpha, v));
    }
  }
}

// ---- standardize -------------------------------------------------------------------------------------

// part[b, j] = sum over the rows of block b, in order, of x_ij (mean null) or (x_ij - mean_j)^2.
__global__ void column_block_sums(const float* x, int64_t rows, int64_t d, const double* mean, double* part) {
  const int64_t nb = (rows + kStdBlock - 1) / kStdBlock;
  const int64_t total = nb * d;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int64_t b = t / d, j = t - b * d;
    const int64_t i1 = (b + 1) * kStdBlock < rows ? (b + 1) * kStdBlock : rows;
    double s = 0.0;
    if (mean) {
      const double m = mean[j];
      for (int64_t i = b * kStdBlock; i < i1; ++i) {
        const double v = __dsub_rn(static_cast<double>(x[i * d + j]), m);
        s = __dadd_rn(s, __dmul_rn(v, v));
      }
    } else {
      for (int64_t i = b * kStdBlock; i < i1; ++i) s = __dadd_rn(s, static_cast<double>(x[i * d + j]));
    }
    part[t] = s;
  }
}

// out_j = combine(sum over blocks in order of part[b, j]): the mean (sqrt_of false) or the std.
__global__ void column_combine(const double* part, int64_t nb, int64_t rows, int64_t d, bool is_std, double* out) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < d; j += stride) {
    double s = 0.0;
    for (int64_t b = 0; b < nb; ++b) s = __dadd_rn(s, part[b * d + j]);
    const double q = __ddiv_rn(s, static_cast<double>(rows));
    out[j] = is_std ? __dsqrt_rn(q) : q;
  }
}

__global__ void column_apply(float* x, int64_t rows, int64_t d, const double* mean, const double* std) {
  const int64_t total = rows * d;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int64_t j = t % d;
    const double s = std[j] > 0.0 ? std[j] : 1.0;
    x[t] = __double2float_rn(__ddiv_rn(__dsub_rn(static_cast<double>(x[t]), mean[j]), s));
  }
}

}  // namespace

// ---- host entry points -------------------------------------------------------------------------------

void random_rows(const RandomSpec& r, int64_t row0, int64_t rows, const float* row_scale, float* out, cudaStream_t stream) {
  check_spec(r);
  if (rows < 0) fail("rows must be >= 0, got " + std::to_string(rows));
  if (row0 < 0) fail("row0 must be >= 0, got " + std::to_string(row0));
  check_ptr(out, rows > 0, "out");
  if (rows == 0) return;
  random_rows_kernel<<<grid_for(ceil_div(rows * r.d, kBlock)), kBlock, 0, stream>>>(mix64(r.seed), r.threshold, r.value, r.d,
                                                                                     row0, rows, row_scale, out);
  check_launch("random_rows_kernel");
}

void project_dense(const RandomSpec& r, const float* x, int64_t rows, int64_t n_in, float* out, cudaStream_t stream) {
  check_spec(r);
  if (rows < 0) fail("rows must be >= 0, got " + std::to_string(rows));
  if (n_in < 0) fail("n_in must be >= 0, got " + std::to_string(n_in));
  check_ptr(x, rows > 0 && n_in > 0, "x");
  check_ptr(out, rows > 0, "out");
  if (overlaps(x, rows * n_in * 4, out, rows * r.d * 4)) fail("out: must not overlap x");
  if (rows == 0) return;
  project_dense_kernel<<<grid_for(ceil_div(rows * r.d, kBlock)), kBlock, 0, stream>>>(mix64(r.seed), r.threshold, r.value,
                                                                                       r.d, x, rows, n_in, out);
  check_launch("project_dense_kernel");
}

void validate_csr(const Csr& a, int64_t nnz, cudaStream_t stream) {
  check_csr_args(a, nnz);
  DeviceBuffer buf;
  CsrCheck* dev = buf.alloc_n<CsrCheck>(1, stream);
  check_cuda(cudaMemsetAsync(dev, 0, sizeof(CsrCheck), stream), "cudaMemsetAsync");
  const int64_t work = a.rows > nnz ? a.rows : nnz;
  check_csr_kernel<<<grid_for(ceil_div(work, kBlock)), kBlock, 0, stream>>>(a.indptr, a.rows, a.indices, a.indices_int32,
                                                                             nnz, a.cols, dev);
  check_launch("check_csr_kernel");
  CsrCheck host{};
  check_cuda(cudaMemcpyAsync(&host, dev, sizeof(CsrCheck), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (host.first != 0) fail("indptr: must start at 0, got " + std::to_string(host.first));
  if (host.flags & kBadOrder) fail("indptr: must be nondecreasing");
  if (host.last != nnz)
    fail("indptr: indptr[rows] = " + std::to_string(host.last) + " must equal nnz = " + std::to_string(nnz) +
         " (the length of indices)");
  if (host.flags & kBadIndex) fail("indices: an index is out of range [0, " + std::to_string(a.cols) + ")");
}

void project_csr(const RandomSpec& r, const Csr& x, int64_t nnz, float* out, cudaStream_t stream) {
  check_spec(r);
  check_csr_args(x, nnz);
  check_ptr(out, x.rows > 0, "out");
  if (x.rows == 0) return;
  project_csr_kernel<<<grid_for(ceil_div(x.rows * r.d, kBlock)), kBlock, 0, stream>>>(
      mix64(r.seed), r.threshold, r.value, r.d, x.indptr, x.indices, x.indices_int32, x.data, x.rows, x.cols, nnz, out);
  check_launch("project_csr_kernel");
}

void propagate(const Csr& a, int64_t nnz, const float* row_scale, const float* prev, int64_t d, float* cur,
               bool normalize, bool propagate_normalized, float alpha, float* accum, cudaStream_t stream) {
  if (d < 1) fail("d must be >= 1, got " + std::to_string(d));
  check_step_buffers(a, d, prev, true, cur, accum);
  check_csr_args(a, nnz);
  const int64_t n = a.rows;
  if (n == 0) return;
  const unsigned grid = grid_for(ceil_div(n, kBlock / kWarp));
  // 16-byte loads when every row of prev starts 16-byte aligned (and the float4 stays inside the row).
  const bool vec4 = d % 4 == 0 && reinterpret_cast<uintptr_t>(prev) % 16 == 0 && reinterpret_cast<uintptr_t>(cur) % 16 == 0;
  if (vec4) {
    propagate_kernel<true><<<grid, kBlock, 0, stream>>>(a.indptr, a.indices, a.indices_int32, a.data, nnz, n, row_scale,
                                                        prev, d, cur, normalize, propagate_normalized, alpha, accum);
  } else {
    propagate_kernel<false><<<grid, kBlock, 0, stream>>>(a.indptr, a.indices, a.indices_int32, a.data, nnz, n, row_scale,
                                                         prev, d, cur, normalize, propagate_normalized, alpha, accum);
  }
  check_launch("propagate_kernel");
}

void propagate_random(const RandomSpec& r, const float* init_scale, const Csr& a, int64_t nnz, const float* row_scale,
                      float* cur, bool normalize, bool propagate_normalized, float alpha, float* accum,
                      cudaStream_t stream) {
  check_spec(r);
  check_step_buffers(a, r.d, nullptr, false, cur, accum);
  check_csr_args(a, nnz);
  const int64_t n = a.rows, d = r.d;
  if (n == 0) return;
  propagate_random_kernel<<<grid_for(ceil_div(n, kBlock / kWarp)), kBlock, 0, stream>>>(
      mix64(r.seed), r.threshold, r.value, init_scale, a.indptr, a.indices, a.indices_int32, a.data, nnz, n, row_scale,
      d, cur, normalize, propagate_normalized, alpha, accum);
  check_launch("propagate_random_kernel");
}

void accumulate(const float* x, int64_t rows, int64_t d, bool normalize, float alpha, float* accum, cudaStream_t stream) {
  if (rows < 0) fail("rows must be >= 0, got " + std::to_string(rows));
  if (d < 1) fail("d must be >= 1, got " + std::to_string(d));
  check_ptr(x, rows > 0, "x");
  check_ptr(accum, rows > 0, "accum");
  if (overlaps(x, rows * d * 4, accum, rows * d * 4) && x != accum) fail("accum: must not partially overlap x");
  if (rows == 0) return;
  const int64_t warps_per_block = kBlock / kWarp;
  accumulate_kernel<<<grid_for(ceil_div(rows, warps_per_block)), kBlock, 0, stream>>>(x, rows, d, normalize, alpha, accum);
  check_launch("accumulate_kernel");
}

void standardize_columns(float* x, int64_t rows, int64_t d, double* mean, double* std, cudaStream_t stream) {
  if (rows < 0) fail("rows must be >= 0, got " + std::to_string(rows));
  if (d < 1) fail("d must be >= 1, got " + std::to_string(d));
  check_ptr(x, rows > 0, "x");
  check_ptr(mean, true, "mean");
  check_ptr(std, true, "std");
  if (rows == 0) {
    check_cuda(cudaMemsetAsync(mean, 0, sizeof(double) * static_cast<size_t>(d), stream), "cudaMemsetAsync");
    check_cuda(cudaMemsetAsync(std, 0, sizeof(double) * static_cast<size_t>(d), stream), "cudaMemsetAsync");
    return;
  }
  const int64_t nb = ceil_div(rows, kStdBlock);
  DeviceBuffer part_buf;
  double* part = part_buf.alloc_n<double>(nb * d, stream);
  const unsigned g_part = grid_for(ceil_div(nb * d, kBlock)), g_col = grid_for(ceil_div(d, kBlock));
  column_block_sums<<<g_part, kBlock, 0, stream>>>(x, rows, d, nullptr, part);
  check_launch("column_block_sums");
  column_combine<<<g_col, kBlock, 0, stream>>>(part, nb, rows, d, false, mean);
  check_launch("column_combine");
  column_block_sums<<<g_part, kBlock, 0, stream>>>(x, rows, d, mean, part);
  check_launch("column_block_sums");
  column_combine<<<g_col, kBlock, 0, stream>>>(part, nb, rows, d, true, std);
  check_launch("column_combine");
  column_apply<<<grid_for(ceil_div(rows * d, kBlock)), kBlock, 0, stream>>>(x, rows, d, mean, std);
  check_launch("column_apply");
}

}  // namespace fastemb::graph::cuda
