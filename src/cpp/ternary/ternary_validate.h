// Argument checks shared by the CPU dispatcher and the CUDA entry points (host code only), so
// both raise the same std::invalid_argument messages (pybind11 turns them into ValueError).
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "ternary/ternary.h"

namespace fastemb::ternary {

// |acc| <= 128 * 2 * k (codes are 0..2, 3 at most for corrupt data) must fit int32.
constexpr int64_t kMaxK = int64_t(1) << 22;

[[noreturn]] inline void fail_arg(const std::string& msg) { throw std::invalid_argument(msg); }

inline void validate_shape(int64_t m, int64_t k, int64_t kp, Format fmt = Format::i2) {
  if (m < 0) fail_arg("m must be >= 0, got " + std::to_string(m));
  if (k < 0) fail_arg("k must be >= 0, got " + std::to_string(k));
  if (k > kMaxK) fail_arg("k must be <= " + std::to_string(kMaxK) + " (int32 accumulators), got " + std::to_string(k));
  if (kp != padded_k_fmt(fmt, k))
    fail_arg(std::string("kp must be ") + (fmt == Format::t5 ? "padded_k_t5(k) = " : "padded_k(k) = ") +
             std::to_string(padded_k_fmt(fmt, k)) + " for k = " + std::to_string(k) + ", got " + std::to_string(kp) +
             " (k or format mismatch between the activations and the packed weights?)");
}

inline void validate_format(int fmt) {
  if (fmt != static_cast<int>(Format::i2) && fmt != static_cast<int>(Format::t5))
    fail_arg("format: unknown code " + std::to_string(fmt) + " (0 i2, 1 t5)");
}

inline void validate_weights(const Weights& w) {
  validate_format(static_cast<int>(w.format));
  if (w.n < 0) fail_arg("n must be >= 0, got " + std::to_string(w.n));
  validate_shape(0, w.k, w.kp, w.format);
  if (w.n > 0 && w.kp > 0 && w.packed == nullptr) fail_arg("packed: null data");
  if (w.n > 0 && w.scale == nullptr) fail_arg("scale: null data");
}

inline void validate_scale_rule(int rule) {
  if (rule != static_cast<int>(ScaleRule::divide) && rule != static_cast<int>(ScaleRule::reciprocal))
    fail_arg("scale_rule: unknown code " + std::to_string(rule) + " (0 divide, 1 reciprocal)");
}

inline void validate_quantize(const void* x, int dtype, int64_t m, int64_t k, int64_t kp, float eps, const int8_t* xq,
                              const float* x_scale, int rule = 0) {
  validate_shape(m, k, kp, kp == padded_k_t5(k) && kp != padded_k(k) ? Format::t5 : Format::i2);
  validate_scale_rule(rule);
  if (dtype < 0 || dtype > 3) fail_arg("dtype: unknown code " + std::to_string(dtype) + " (0 f32, 1 f64, 2 f16, 3 bf16)");
  if (!(eps > 0.0f) || !std::isfinite(eps)) fail_arg("eps must be a positive finite number, got " + std::to_string(eps));
  if (m > 0 && k > 0 && x == nullptr) fail_arg("x: null data");
  if (m > 0 && kp > 0 && xq == nullptr) fail_arg("xq: null data");
  if (m > 0 && x_scale == nullptr) fail_arg("x_scale: null data");
}

inline void validate_int8(const int8_t* xq, const float* x_scale, int64_t m, const Weights& w, const float* out) {
  validate_weights(w);
  validate_shape(m, w.k, w.kp, w.format);
  if (m > 0 && w.kp > 0 && xq == nullptr) fail_arg("xq: null data");
  if (m > 0 && x_scale == nullptr) fail_arg("x_scale: null data");
  if (m > 0 && w.n > 0 && out == nullptr) fail_arg("out: null data");
}

inline void validate_float(const float* x, int64_t m, const Weights& w, const float* out) {
  validate_weights(w);
  validate_shape(m, w.k, w.kp, w.format);
  if (m > 0 && w.k > 0 && x == nullptr) fail_arg("x: null data");
  if (m > 0 && w.n > 0 && out == nullptr) fail_arg("out: null data");
}

}  // namespace fastemb::ternary
