// Ternary (1.58-bit) matmul: y = x W^T with W in {-1, 0, +1} times a scale, weights packed at
// 2 bits. Plain C++ (no Python headers); callers own every buffer. Math: shared/specs/ternary.md;
// the NumPy reference with the same rules is python/fastemb/_reference/ternary.py.
//
// Packed layout ("I2", shared by the CPU and CUDA kernels and by fastemb.TernaryWeight):
//   W [n, k] -> uint8 [n, kp / 4], kp = k rounded up to a multiple of kBlock (256).
//   Code c = w + 1 in {0, 1, 2}; padding weights (k <= col < kp) have code 1 (w = 0).
//   Block b of a row (weights b*256 .. b*256+255) is 64 bytes; byte j (0..63) of the block holds
//   the weights b*256 + 64*s + j at bits 2s..2s+1 (s = 0..3, s = 0 in the low bits).
//   So one 64-byte load, shifted right by 2s and masked with 3, gives the codes of 64 consecutive
//   weights (b*256 + 64s ...), aligned with 64 consecutive int8 activations; a 32-byte load of
//   bytes 0..31 / 32..63 gives 4 vectors of 32 consecutive codes the same way.
//   With unsigned codes, u8 x s8 dot instructions apply directly:
//   sum_k w_k x_k = sum_k c_k x_k - sum_k x_k.
//
// Scales: gamma (the weight scale, as stored by absmean / absmedian quantization) is either one
// float for the tensor or one per output row; s_x (per activation row) = 127 / max(max|x|, eps)
// (or (1 / max(max|x|, eps)) * 127 with ScaleRule::reciprocal).
#pragma once
#include <cstdint>

#include "common/cpu_features.h"

namespace fastemb::ternary {

constexpr int64_t kBlock = 256;  // weights per packed block (64 bytes)

inline int64_t padded_k(int64_t k) { return (k + kBlock - 1) / kBlock * kBlock; }

struct Weights {
  const uint8_t* packed = nullptr;  // [n, kp / 4], layout above
  int64_t n = 0;                    // output features
  int64_t k = 0;                    // input features
  int64_t kp = 0;                   // padded_k(k)
  const float* scale = nullptr;     // gamma: [1] (per tensor) or [n] (per row)
  bool per_row = false;
};

// Activation dtype codes (same as fastemb._backend.DTYPE_CODES).
enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

// How the per-row activation scale is computed from a = max(max|x|, eps), in float32:
//   divide     s = 127 / a           (one rounding; fastemb's default)
//   reciprocal s = (1 / a) * 127     (two roundings: what torch's `127 / tensor` computes, and so
//                                      transformers' BitNet activation_quant; differs by 1 ulp on ~25% of a)
enum class ScaleRule : int { divide = 0, reciprocal = 1 };

// Per-row absmax quantization (BitNet b1.58): for row i of x [m, k] (any float dtype, converted to
// float32 first), s_i = the scale of max(max_j |x_ij|, eps) by `rule` and
// xq_ij = clamp(nearbyint(x_ij * s_i), -128, 127) (round half to even, float32 multiply).
// xq is [m, kp] int8 with zeros in the padding columns; x_scale[i] = s_i.
// A NaN in x is the caller's to reject (the Python layer does).
void quantize_activations(const void* x, DType dtype, int64_t m, int64_t k, int64_t kp, float eps, int8_t* xq,
                          float* x_scale, ScaleRule rule = ScaleRule::divide);

// Integer path: acc_ij = sum_c xq_ic * w_jc (exact, int32), then
//   out_ij = float(acc_ij) * (gamma_j / x_scale_i) + bias_j     (float32, each op rounded: no FMA)
// gamma_j = scale[per_row ? j : 0]; bias may be null (then no add). acc (optional, [m, n]) receives
// the int32 sums (tests compare them bit for bit with the reference). xq: [m, kp] as produced by
// quantize_activations. out: [m, n] float32.
void matmul_int8(const int8_t* xq, const float* x_scale, int64_t m, const Weights& w, const float* bias, float* out,
                 int32_t* acc);

// Float path: out_ij = gamma_j * sum_c x_ic * w_jc + bias_j with x float32 [m, k] (no activation
// quantization). The summation order is the kernel's own: equal to the reference within float
// rounding (tests use a tolerance), and the same bits for every thread count.
void matmul_float(const float* x, int64_t m, const Weights& w, const float* bias, float* out);

// The same with an explicit ISA variant (tests run every variant the CPU has).
void quantize_activations_isa(Isa isa, const void* x, DType dtype, int64_t m, int64_t k, int64_t kp, float eps,
                              int8_t* xq, float* x_scale, ScaleRule rule = ScaleRule::divide);
void matmul_int8_isa(Isa isa, const int8_t* xq, const float* x_scale, int64_t m, const Weights& w, const float* bias,
                     float* out, int32_t* acc);
void matmul_float_isa(Isa isa, const float* x, int64_t m, const Weights& w, const float* bias, float* out);

// The variant that runs for a requested ISA (avx512 needs AVX512-VNNI, else avx2 runs).
Isa kernel_isa(Isa requested);

}  // namespace fastemb::ternary
