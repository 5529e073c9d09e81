// Argument checks of the multi-vector family, shared by the CPU dispatcher and (later) the CUDA entry
// points (host code only), so both raise the same std::invalid_argument messages (ValueError in Python).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "multivector/multivector.h"

namespace fastemb::multivector {

[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// Every set is a row range of x: 0 <= begin <= end <= rows, at most 2^31 - 1 rows.
inline void check_sets(const char* name, const TokenSets& t) {
  const std::string n(name);
  if (t.dim < 1) fail(n + ": the token dimension must be >= 1, got " + std::to_string(t.dim));
  if (t.rows < 0 || t.n < 0) fail(n + ": negative shape");
  if (t.rows > 0 && t.x == nullptr) fail(n + ": null data");
  if (t.n > 0 && (t.begin == nullptr || t.end == nullptr)) fail(n + ": null set bounds");
  for (int64_t s = 0; s < t.n; ++s) {
    const int64_t b = t.begin[s], e = t.end[s];
    if (b < 0 || e < b || e > t.rows)
      fail(n + ": set " + std::to_string(s) + " spans rows [" + std::to_string(b) + ", " + std::to_string(e) +
           ") outside [0, " + std::to_string(t.rows) + "] or reversed");
    if (e - b > INT32_MAX) fail(n + ": set " + std::to_string(s) + " has more than 2^31 - 1 tokens");
  }
}

inline void check_pair(const TokenSets& q, const TokenSets& d) {
  check_sets("q", q);
  check_sets("d", d);
  if (q.dim != d.dim)
    fail("d: token dimension " + std::to_string(d.dim) + " does not match q's " + std::to_string(q.dim));
}

inline void check_spec(const FdeSpec& s, int64_t dim) {
  if (s.repetitions < 1) fail("repetitions must be >= 1, got " + std::to_string(s.repetitions));
  if (s.k_sim < 0 || s.k_sim > kMaxKSim)
    fail("k_sim must be in [0, " + std::to_string(kMaxKSim) + "], got " + std::to_string(s.k_sim));
  if (s.d_proj < 0 || s.d_proj >= (int64_t(1) << 30)) fail("d_proj must be in [0, 2^30), got " + std::to_string(s.d_proj));
  if (s.final_dim < 0 || s.final_dim >= (int64_t(1) << 30))
    fail("final_dim must be in [0, 2^30), got " + std::to_string(s.final_dim));
  if (s.fill_empty && !s.document) fail("fill_empty: only documents fill empty buckets");
  const int64_t p = s.d_proj > 0 ? s.d_proj : dim;
  // R * 2^k * p < 2^40 (and R * k_sim < 2^31 hyperplanes): far past any useful size, no overflow.
  if (s.repetitions >= (int64_t(1) << 24) || p >= (int64_t(1) << 30) ||
      (static_cast<double>(s.repetitions) * static_cast<double>(int64_t(1) << s.k_sim) * static_cast<double>(p)) >=
          static_cast<double>(int64_t(1) << 40))
    fail("repetitions * 2^k_sim * block dim is too large (>= 2^40)");
}

}  // namespace fastemb::multivector
