// Host entry points of the CUDA ternary kernels (ternary.cu), called by bindings_ternary.cpp.
// Plain C++ declarations only (no device code), so the host C++ compiler can include it.
// All pointers are device addresses on the current device; work is queued on `stream` (no host
// synchronization). Same rules and layout as the CPU (ternary/ternary.h): the int8 path gives the
// CPU's int32 sums and float32 outputs bit for bit; the float path agrees within float rounding.
// Throws std::invalid_argument for bad arguments and std::runtime_error for CUDA errors.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "ternary/ternary.h"

namespace fastemb::ternary::cuda {

// x [m, k] of dtype code 0 f32, 1 f64, 2 f16, 3 bf16 -> xq int8 [m, kp] (zero padding), x_scale [m]; the scale by
// `rule` (ternary.h ScaleRule), the CPU's bits.
void quantize_activations(const void* x, DType dtype, int64_t m, int64_t k, int64_t kp, float eps, int8_t* xq,
                          float* x_scale, cudaStream_t stream, ScaleRule rule = ScaleRule::divide);
// m <= kDp4aMaxRows: decode + dp4a (one warp per output column, up to 8 activation rows per pass);
// otherwise decode + int8 tensor cores (WMMA 16x16x16, 64 x 64 output tiles).
void matmul_int8(const int8_t* xq, const float* x_scale, int64_t m, const Weights& w, const float* bias, float* out,
                 int32_t* acc, cudaStream_t stream);
// x: float32 [m, k] only.
void matmul_float(const float* x, int64_t m, const Weights& w, const float* bias, float* out, cudaStream_t stream);

constexpr int64_t kDp4aMaxRows = 8;

}  // namespace fastemb::ternary::cuda
