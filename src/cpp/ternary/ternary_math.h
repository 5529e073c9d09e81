// Per-element math of the ternary family, shared by the CPU kernels (every ISA variant: the serial
// one uses every helper here, the SIMD ones the scalar tails and the epilogue) and the CUDA kernels
// (src/cuda/ternary.cu), so the rules are written once and tested on the CPU.
// `static inline` + FASTEMB_HD: each translation unit (one per ISA, and the .cu) keeps its own copy.
//
// Rules (python/fastemb/_reference/ternary.py):
//   code of weight col in a packed row:  byte (col / 256) * 64 + col % 64, bits 2 * ((col / 64) % 4)
//   activation scale:  a = max(amax, eps), then by ScaleRule (ternary.h):
//                        divide:     s = 127.0f / a                  (float32 division, one rounding)
//                        reciprocal: s = (1.0f / a) * 127.0f         (two roundings: torch's `127 / t`, i.e.
//                                                                     transformers' BitNet; 1 ulp off on ~25% of a)
//   activation code:   clamp(rint(x * s), -128, 127)                 (float32 multiply, half to even)
//   int8 output:       float(acc) * (gamma / s) + bias               (each op rounded, no FMA)
#pragma once
#include <cmath>
#include <cstdint>

#include "common/float16.h"
#include "common/rounding.h"

namespace fastemb::ternary {

// Float ops rounded one at a time (common/rounding.h): the CUDA twin gives the same bits.
using fastemb::add_rn;
using fastemb::div_rn;
using fastemb::mul_rn;

// ---- packed layout --------------------------------------------------------------------------
static inline FASTEMB_HD int64_t code_byte(int64_t col) { return (col >> 8) * 64 + (col & 63); }
static inline FASTEMB_HD int code_shift(int64_t col) { return static_cast<int>((col >> 6) & 3) * 2; }
// Code (0, 1, 2; 3 is not produced by pack) of weight `col` of a packed row.
static inline FASTEMB_HD int code_at(const uint8_t* row, int64_t col) {
  return (row[code_byte(col)] >> code_shift(col)) & 3;
}

// A little-endian 32-bit word at byte t (t % 4 == 0) of a 64-byte block b holds, at bits 2s, the
// codes of the 4 consecutive weights b*256 + 64s + t .. +3 (one per byte).
static inline FASTEMB_HD uint32_t word_codes(uint32_t word, int s) { return (word >> (2 * s)) & 0x03030303u; }
// The same 4 weights as signed bytes c - 1 (-1, 0, 1; code 3 gives 2, as the reference's unpack):
// (c | 0x80) - 1 never borrows across bytes, and ^ 0x80 restores the sign.
static inline FASTEMB_HD uint32_t word_weights(uint32_t word, int s) {
  return ((word_codes(word, s) | 0x80808080u) - 0x01010101u) ^ 0x80808080u;
}
// sum of the 4 signed-byte products (what dp4a computes).
static inline FASTEMB_HD int32_t dot4_s8(uint32_t a, uint32_t b) {
  int32_t s = 0;
  for (int e = 0; e < 4; ++e)
    s += static_cast<int32_t>(static_cast<int8_t>((a >> (8 * e)) & 0xffu)) *
         static_cast<int32_t>(static_cast<int8_t>((b >> (8 * e)) & 0xffu));
  return s;
}

// ---- t5 layout (ternary.h): 5 codes per byte, base-3 fraction ------------------------------
// 3^t for t = 0..4.
static inline FASTEMB_HD uint32_t t5_pow3(int t) { return t == 0 ? 1u : t == 1 ? 3u : t == 2 ? 9u : t == 3 ? 27u : 81u; }
// Digit t (0 most significant) of a t5 byte: (3 (q 3^t mod 256)) >> 8, in 0..2 for every byte.
static inline FASTEMB_HD int t5_digit(uint32_t q, int t) { return static_cast<int>((((q * t5_pow3(t)) & 0xffu) * 3u) >> 8); }
// Code (0..2) of weight `col` of a t5 row.
static inline FASTEMB_HD int t5_code_at(const uint8_t* row, int64_t col) {
  const int64_t b = col / 320, w = col - b * 320;
  return t5_digit(row[b * 64 + (w & 63)], static_cast<int>(w >> 6));
}

// ---- activation quantization ----------------------------------------------------------------
// rule: ScaleRule as int (0 divide, 1 reciprocal); validated before any kernel runs.
static inline FASTEMB_HD float activation_scale(float amax, float eps, int rule) {
  const float a = amax > eps ? amax : eps;
  return rule == 1 ? mul_rn(div_rn(1.0f, a), 127.0f) : div_rn(127.0f, a);
}

static inline FASTEMB_HD int8_t quantize_value(float x, float s) {
  float v = rintf(mul_rn(x, s));  // half to even under the default rounding mode (host and device)
  if (!(v >= -128.0f)) v = -128.0f;  // also catches NaN (the Python layer rejects NaN first)
  if (v > 127.0f) v = 127.0f;
  return static_cast<int8_t>(static_cast<int>(v));
}

// Element i of an activation row of dtype code dt (0 f32, 1 f64, 2 f16, 3 bf16) as float32
// (f64 rounded to nearest even, as NumPy's astype).
static inline FASTEMB_HD float load_activation(const void* x, int dt, int64_t i) {
  switch (dt) {
    case 1: return static_cast<float>(static_cast<const double*>(x)[i]);
    case 2: return half_bits_to_float(static_cast<const uint16_t*>(x)[i]);
    case 3: return bf16_bits_to_float(static_cast<const uint16_t*>(x)[i]);
    default: return static_cast<const float*>(x)[i];
  }
}

// ---- epilogues ------------------------------------------------------------------------------
// out = float(acc) * (gamma / s_x) [+ bias]
static inline FASTEMB_HD float int8_output(int32_t acc, float gamma, float x_scale, const float* bias, int64_t j) {
  const float r = mul_rn(static_cast<float>(acc), div_rn(gamma, x_scale));
  return bias ? add_rn(r, bias[j]) : r;
}
// float path: out = gamma * dot [+ bias]
static inline FASTEMB_HD float float_output(float dot, float gamma, const float* bias, int64_t j) {
  const float r = mul_rn(gamma, dot);
  return bias ? add_rn(r, bias[j]) : r;
}

}  // namespace fastemb::ternary
