// Argument checks shared by the CPU dispatcher and the CUDA entry points (host code only), so
// both raise the same std::invalid_argument messages.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "binary/binary.h"

namespace fastemb::binary {

inline void validate_problem(const Problem& p) {
  auto fail = [](const std::string& msg) { throw std::invalid_argument(msg); };
  if (p.bits < 1 || p.bits > 4) fail("bits must be in 1..4, got " + std::to_string(p.bits));
  if (p.nq < 0 || p.nd < 0) fail("q/d: negative number of rows");
  if (p.nbytes < 1) fail("nbytes must be >= 1, got " + std::to_string(p.nbytes));
  if (p.dim <= 8 * (p.nbytes - 1) || p.dim > 8 * p.nbytes)
    fail("dim=" + std::to_string(p.dim) + " does not match nbytes=" + std::to_string(p.nbytes) +
         " (need 8 * (nbytes - 1) < dim <= 8 * nbytes)");
  if (p.mode != Mode::hamming && p.mode != Mode::sdc) fail("mode: unknown code");
  const int64_t L = (int64_t(1) << p.bits) - 1;
  // |S| <= dim * L^2 and Hamming <= bits * dim must fit int32 (dim <= 2^31 / 225 ~ 9.5M dims).
  const int64_t bound = p.mode == Mode::sdc ? p.dim * L * L : p.dim * p.bits;
  if (p.dim > (int64_t(1) << 40) || bound > INT32_MAX) fail("dim too large: scores would overflow int32");
  if (p.nq > 0 && p.q == nullptr) fail("q: null data");
  if (p.nd > 0 && p.d == nullptr) fail("d: null data");
}

// binarize's shape and pointer checks (scale values are checked by the CPU dispatcher and, for
// device memory, by the Python layer).
inline void validate_binarize(const BinarizeProblem& p, const void* out) {
  auto fail = [](const std::string& msg) { throw std::invalid_argument(msg); };
  if (p.bits < 1 || p.bits > 4) fail("bits must be in 1..4, got " + std::to_string(p.bits));
  if (p.dtype < 0 || p.dtype > 3) fail("x: unknown dtype code " + std::to_string(p.dtype));
  if (p.n < 0 || p.m < 0) fail("x: negative shape");
  if (p.ld < p.m) fail("x: row stride " + std::to_string(p.ld) + " is smaller than the row length " + std::to_string(p.m));
  if (p.scale_stride != 0 && p.scale_stride != 1) fail("scale: stride must be 0 or 1");
  if (p.n == 0 || p.m == 0) return;
  if (p.x == nullptr) fail("x: null data");
  if (out == nullptr) fail("out: null");
}

}  // namespace fastemb::binary
