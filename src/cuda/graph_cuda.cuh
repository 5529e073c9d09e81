// Host entry points of the CUDA graph kernels (graph.cu), called by src/cuda/bindings_graph.cpp.
// Plain C++ declarations (no device code). Every pointer is a device address on the current device;
// work is queued on `stream`. CSR arguments come with nnz, the length of indices (and of data when not
// null). The compute entry points do not validate the CSR's values (no stream sync): they check the
// arguments on the host and clamp every row's edge range into [0, nnz], skipping column indices outside
// [0, cols), so no CSR content can make them read out of bounds (an invalid CSR gives an unspecified
// result). validate_csr is the full check (indptr[0] == 0, nondecreasing, indptr[rows] == nnz, indices
// in [0, cols)): one stream sync, std::invalid_argument naming the argument. CUDA errors raise
// std::runtime_error. Same rules and same bits as the CPU kernels (graph.h) on a valid CSR.
#pragma once

#include <cuda_runtime.h>

#include "graph/graph.h"

namespace fastemb::graph::cuda {

void random_rows(const RandomSpec& r, int64_t row0, int64_t rows, const float* row_scale, float* out, cudaStream_t stream);
void project_dense(const RandomSpec& r, const float* x, int64_t rows, int64_t n_in, float* out, cudaStream_t stream);
void validate_csr(const Csr& a, int64_t nnz, cudaStream_t stream);
void project_csr(const RandomSpec& r, const Csr& x, int64_t nnz, float* out, cudaStream_t stream);
void propagate(const Csr& a, int64_t nnz, const float* row_scale, const float* prev, int64_t d, float* cur,
               bool normalize, bool propagate_normalized, float alpha, float* accum, cudaStream_t stream);
// graph.h propagate_random: prev = diag(init_scale) R, R regenerated per entry on the device.
void propagate_random(const RandomSpec& r, const float* init_scale, const Csr& a, int64_t nnz, const float* row_scale,
                      float* cur, bool normalize, bool propagate_normalized, float alpha, float* accum,
                      cudaStream_t stream);
void accumulate(const float* x, int64_t rows, int64_t d, bool normalize, float alpha, float* accum, cudaStream_t stream);
// mean / std: [d] float64 device outputs.
void standardize_columns(float* x, int64_t rows, int64_t d, double* mean, double* std, cudaStream_t stream);

}  // namespace fastemb::graph::cuda
