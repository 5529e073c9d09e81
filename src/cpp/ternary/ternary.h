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

// Packed formats. i2: the 2-bit layout above. t5 (1.6 bits per weight, 5 ternary digits per byte):
//   W [n, k] -> uint8 [n, kp / 5], kp = k rounded up to a multiple of kBlockT5 (320); padding code 1.
//   Block b of a row (weights b*320 .. b*320+319) is 64 bytes; byte j (0..63) holds the codes c_t
//   of the 5 weights b*320 + 64 t + j (t = 0..4) as v = sum_t c_t 3^(4-t) (digit 0 most
//   significant), stored as q = ceil(v * 256 / 243) (llama.cpp TQ1_0's byte encoding). Then
//   r_t = q 3^t mod 256 is a base-3 fraction and digit t = (3 r_t) >> 8, r_(t+1) = 3 r_t mod 256.
//   So a 64-byte load gives, per digit t, the codes of 64 consecutive weights (b*320 + 64t ...),
//   aligned with 64 consecutive int8 activations, as in i2. Decoding (ternary_t5.h):
//     AVX-512 VNNI: no per-digit extraction at all. Since 256 c_t = 3 r_t - r_(t+1) per byte,
//       sum_j c_t(j) x_j = (3 sum_j r_t(j) x_j - sum_j r_(t+1)(j) x_j) / 256, two vpdpbusd on the
//       fraction bytes (u8) with the same activations; r_(t+1) = r_t + r_t + r_t is two byte adds.
//     AVX2: per digit, vpmaddubsw by (3, 0) / (0, 3) gives 3 r in 16-bit lanes; bits 8-9 are the
//       digits of the low / high byte (one shift, and, or), then the i2 path's vpmaddubsw.
enum class Format : int { i2 = 0, t5 = 1 };
constexpr int64_t kBlockT5 = 320;  // weights per t5 block (64 bytes)
inline int64_t padded_k_t5(int64_t k) { return (k + kBlockT5 - 1) / kBlockT5 * kBlockT5; }
inline int64_t padded_k_fmt(Format f, int64_t k) { return f == Format::t5 ? padded_k_t5(k) : padded_k(k); }
// Bytes per packed row.
inline int64_t row_bytes(Format f, int64_t kp) { return f == Format::t5 ? kp / 5 : kp / 4; }

struct Weights {
  const uint8_t* packed = nullptr;  // [n, row_bytes(format, kp)], layout above
  int64_t n = 0;                    // output features
  int64_t k = 0;                    // input features
  int64_t kp = 0;                   // padded_k_fmt(format, k)
  const float* scale = nullptr;     // gamma: [1] (per tensor) or [n] (per row)
  bool per_row = false;
  Format format = Format::i2;
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
// xq is [m, kp] int8 with zeros in the padding columns; x_scale[i] = s_i. kp: padded_k(k) or
// padded_k_t5(k) (the weights' format).
// A NaN in x is the caller's to reject (the Python layer does).
void quantize_activations(const void* x, DType dtype, int64_t m, int64_t k, int64_t kp, float eps, int8_t* xq,
                          float* x_scale, ScaleRule rule = ScaleRule::divide);

// t5 -> i2 (one row each call): src [row_bytes(t5, padded_k_t5(k))] -> dst [padded_k(k) / 4].
void transcode_t5_to_i2_row(const uint8_t* src, int64_t k, uint8_t* dst);

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
// Its name: isa_name(kernel_isa(requested)), or a sub-variant that runs for that ISA and starts with
// its name ("dotprod_i8mm": the dotprod ISA on an ARM64 CPU with FEAT_I8MM; "avx2_vnni": the avx2
// kernels with vpdpbusd on ymm, on an x86-64 CPU with AVX-VNNI where kernel_isa gives avx2).
const char* kernel_variant_name(Isa requested);

}  // namespace fastemb::ternary
