// CUDA kernels of the graph family, mirroring the CPU kernels (src/cpp/graph/graph_kernels.h) and the
// NumPy reference bit for bit. Per-element math from graph/graph_math.h (shared with the CPU):
// mix64 / entry_bits / entry_sign, add_rn / mul_rn / div_rn (never contracted into FMA), the 16-lane
// norm combine.
//
//   random_rows:    one thread per entry.
//   project_dense / project_csr: one thread per output entry (i, j); it walks c (dense: increasing,
//                   zeros skipped; CSR: stored order) and regenerates R[c, j] on the fly (R is never
//                   stored; the GPU has the arithmetic to spare).
//   propagate:      one warp per row; lane t owns columns j = t + 32 m of a 32 * kCols column chunk and
//                   loops over the row's edges in stored order (the CPU's per-element order). The
//                   scaled row u goes to cur; after __syncwarp, lanes 0..15 each sum their norm lane
//                   (j = l, l + 16, ... increasing, read back from cur) and the halving runs through
//                   shuffles in the CPU's order; then the epilogue (normalize, accumulate).
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
constexpr int64_t kStdBlock = 4096;

__device__ __forceinline__ int64_t index_at(const void* idx, bool i32, int64_t e) {
  return i32 ? static_cast<int64_t>(static_cast<const int32_t*>(idx)[e]) : static_cast<const int64_t*>(idx)[e];
}

// ---- CSR validation -----------------------------------------------------------------------------

constexpr unsigned kBadStart = 1, kBadOrder = 2, kBadIndex = 4;

__global__ void check_csr_kernel(const int64_t* indptr, int64_t rows, const void* idx, bool i32, int64_t nnz, int64_t cols,
                                 unsigned* flags) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < (rows > nnz ? rows : nnz); t += stride) {
    if (t == 0 && indptr[0] != 0) atomicOr(flags, kBadStart);
    if (t < rows && indptr[t + 1] < indptr[t]) atomicOr(flags, kBadOrder);
    if (t < nnz) {
      const int64_t c = index_at(idx, i32, t);
      if (c < 0 || c >= cols) atomicOr(flags, kBadIndex);
    }
  }
}

// Checks a device CSR (one stream synchronization); returns nnz.
int64_t check_csr(const Csr& a, cudaStream_t stream) {
  if (a.rows < 0) fail("indptr: negative number of rows " + std::to_string(a.rows));
  if (a.cols < 0) fail("indices: negative number of columns " + std::to_string(a.cols));
  check_ptr(a.indptr, true, "indptr");
  int64_t ends[2] = {0, 0};
  check_cuda(cudaMemcpyAsync(&ends[0], a.indptr, sizeof(int64_t), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  check_cuda(cudaMemcpyAsync(&ends[1], a.indptr + a.rows, sizeof(int64_t), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (ends[0] != 0) fail("indptr: must start at 0, got " + std::to_string(ends[0]));
  if (ends[1] < 0) fail("indptr: must be nondecreasing");
  const int64_t nnz = ends[1];
  if (nnz > 0) check_ptr(a.indices, true, "indices");
  DeviceBuffer flag_buf;
  unsigned* flags = flag_buf.alloc_n<unsigned>(1, stream);
  check_cuda(cudaMemsetAsync(flags, 0, sizeof(unsigned), stream), "cudaMemsetAsync");
  const int64_t work = a.rows > nnz ? a.rows : nnz;
  check_csr_kernel<<<grid_for(ceil_div(work, kBlock)), kBlock, 0, stream>>>(a.indptr, a.rows, a.indices, a.indices_int32,
                                                                             nnz, a.cols, flags);
  check_launch("check_csr_kernel");
  unsigned host = 0;
  check_cuda(cudaMemcpyAsync(&host, flags, sizeof(unsigned), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (host & kBadStart) fail("indptr: must start at 0");
  if (host & kBadOrder) fail("indptr: must be nondecreasing");
  if (host & kBadIndex) fail("indices: an index is out of range [0, " + std::to_string(a.cols) + ")");
  return nnz;
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
                                   const void* idx, bool i32, const float* data, int64_t rows, int64_t cols, float* out) {
  const int64_t total = rows * d;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int64_t i = t / d, j = t - i * d;
    float acc = 0.f;
    for (int64_t e = indptr[i]; e < indptr[i + 1]; ++e) {
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

// Epilogue on row u (in cur, already scaled): normalize / accumulate / write back v.
__device__ void row_epilogue(float* u, int64_t d, int lane, bool normalize, bool propagate_normalized, float alpha,
                             float* accum) {
  if (!normalize) {
    if (accum)
      for (int64_t j = lane; j < d; j += kWarp) accum[j] = add_rn(accum[j], mul_rn(alpha, u[j]));
    return;
  }
  __syncwarp();
  const float norm = warp_row_norm(u, d, lane);
  __syncwarp();
  for (int64_t j = lane; j < d; j += kWarp) {
    const float v = normalized_value(u[j], norm);
    if (accum) accum[j] = add_rn(accum[j], mul_rn(alpha, v));
    if (propagate_normalized) u[j] = v;
  }
}

__global__ void propagate_kernel(const int64_t* indptr, const void* idx, bool i32, const float* data, int64_t n,
                                 const float* row_scale, const float* prev, int64_t d, float* cur, bool normalize,
                                 bool propagate_normalized, float alpha, float* accum) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t i = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp; i < n; i += warps) {
    const int64_t e0 = indptr[i], e1 = indptr[i + 1];
    const float scale = row_scale ? row_scale[i] : 1.f;
    float* u = cur + i * d;
    for (int64_t j0 = 0; j0 < d; j0 += int64_t(kWarp) * kCols) {
      float acc[kCols];
#pragma unroll
      for (int k = 0; k < kCols; ++k) acc[k] = 0.f;
      for (int64_t e = e0; e < e1; ++e) {
        const int64_t c = index_at(idx, i32, e);
        if (c < 0 || c >= n) continue;  // validated on the host; never read out of bounds
        const float* p = prev + c * d;
        const float w = data ? data[e] : 1.f;
#pragma unroll
        for (int k = 0; k < kCols; ++k) {
          const int64_t j = j0 + lane + int64_t(k) * kWarp;
          if (j < d) acc[k] = data ? add_rn(acc[k], mul_rn(w, __ldg(p + j))) : add_rn(acc[k], __ldg(p + j));
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

// propagate with prev = diag(init_scale) R regenerated on the fly (R never stored): lane t owns
// columns j = t + 32 m and adds, edge by edge in stored order, w * (+-value * init_scale[c]) for the
// nonzero R[c, j] (the CPU's propagate_random order; zero terms skipped).
__global__ void propagate_random_kernel(uint64_t key, uint64_t threshold, float value, const float* init_scale,
                                        const int64_t* indptr, const void* idx, bool i32, const float* data, int64_t n,
                                        const float* row_scale, int64_t d, float* cur, bool normalize,
                                        bool propagate_normalized, float alpha, float* accum) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t i = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp; i < n; i += warps) {
    const int64_t e0 = indptr[i], e1 = indptr[i + 1];
    const float scale = row_scale ? row_scale[i] : 1.f;
    float* u = cur + i * d;
    for (int64_t j0 = 0; j0 < d; j0 += int64_t(kWarp) * kCols) {
      float acc[kCols];
#pragma unroll
      for (int k = 0; k < kCols; ++k) acc[k] = 0.f;
      for (int64_t e = e0; e < e1; ++e) {
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

void project_csr(const RandomSpec& r, const Csr& x, float* out, cudaStream_t stream) {
  check_spec(r);
  check_csr(x, stream);
  check_ptr(out, x.rows > 0, "out");
  if (x.rows == 0) return;
  project_csr_kernel<<<grid_for(ceil_div(x.rows * r.d, kBlock)), kBlock, 0, stream>>>(
      mix64(r.seed), r.threshold, r.value, r.d, x.indptr, x.indices, x.indices_int32, x.data, x.rows, x.cols, out);
  check_launch("project_csr_kernel");
}

void propagate(const Csr& a, const float* row_scale, const float* prev, int64_t d, float* cur, bool normalize,
               bool propagate_normalized, float alpha, float* accum, cudaStream_t stream) {
  if (d < 1) fail("d must be >= 1, got " + std::to_string(d));
  check_step_buffers(a, d, prev, true, cur, accum);
  const int64_t n = a.rows;
  check_csr(a, stream);
  if (n == 0) return;
  const int64_t warps_per_block = kBlock / kWarp;
  propagate_kernel<<<grid_for(ceil_div(n, warps_per_block)), kBlock, 0, stream>>>(
      a.indptr, a.indices, a.indices_int32, a.data, n, row_scale, prev, d, cur, normalize, propagate_normalized, alpha, accum);
  check_launch("propagate_kernel");
}

void propagate_random(const RandomSpec& r, const float* init_scale, const Csr& a, const float* row_scale, float* cur,
                      bool normalize, bool propagate_normalized, float alpha, float* accum, cudaStream_t stream) {
  check_spec(r);
  check_step_buffers(a, r.d, nullptr, false, cur, accum);
  const int64_t n = a.rows, d = r.d;
  check_csr(a, stream);
  if (n == 0) return;
  const int64_t warps_per_block = kBlock / kWarp;
  propagate_random_kernel<<<grid_for(ceil_div(n, warps_per_block)), kBlock, 0, stream>>>(
      mix64(r.seed), r.threshold, r.value, init_scale, a.indptr, a.indices, a.indices_int32, a.data, n, row_scale, d, cur,
      normalize, propagate_normalized, alpha, accum);
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
