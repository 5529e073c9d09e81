// Argument checks shared by the CPU dispatcher and the CUDA entry points of the graph family (host
// code only), so both raise the same std::invalid_argument messages (ValueError in Python).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "graph/graph.h"

namespace fastemb::graph {

inline void check_spec(const RandomSpec& r) {
  if (r.d < 1) throw std::invalid_argument("d must be >= 1, got " + std::to_string(r.d));
  if (r.d >= (int64_t(1) << 30)) throw std::invalid_argument("d must be < 2^30, got " + std::to_string(r.d));
  if (r.threshold > (uint64_t(1) << 53))
    throw std::invalid_argument("threshold must be <= 2^53 (threshold = floor(2^53 / s), s >= 1)");
}

inline void check_rows(int64_t rows, const char* name) {
  if (rows < 0) throw std::invalid_argument(std::string(name) + " must be >= 0, got " + std::to_string(rows));
}

inline void check_ptr(const void* p, bool needed, const char* name) {
  if (needed && p == nullptr) throw std::invalid_argument(std::string(name) + ": null pointer");
}

// [p, p + bytes) and [q, q + bytes2) overlap?
inline bool overlaps(const void* p, int64_t bytes, const void* q, int64_t bytes2) {
  if (!p || !q || bytes <= 0 || bytes2 <= 0) return false;
  const auto a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(q);
  return a < b + static_cast<uintptr_t>(bytes2) && b < a + static_cast<uintptr_t>(bytes);
}

// The buffers of one propagate step over adjacency a [N, N]: square a, prev [N, d] (null allowed when
// the step has no prev matrix: propagate_random), cur [N, d], accum [N, d] or null, no two overlapping.
inline void check_step_buffers(const Csr& a, int64_t d, const float* prev, bool needs_prev, const float* cur,
                               const float* accum) {
  if (a.rows != a.cols)
    throw std::invalid_argument("indptr/indices: the adjacency must be square, got " + std::to_string(a.rows) + " x " +
                                std::to_string(a.cols));
  const int64_t n = a.rows, bytes = n * d * 4;
  if (needs_prev) check_ptr(prev, n > 0, "prev");
  check_ptr(cur, n > 0, "cur");
  if (overlaps(prev, bytes, cur, bytes)) throw std::invalid_argument("cur: must not overlap prev");
  if (overlaps(accum, bytes, cur, bytes)) throw std::invalid_argument("accum: must not overlap cur");
  if (overlaps(accum, bytes, prev, bytes)) throw std::invalid_argument("accum: must not overlap prev");
}

}  // namespace fastemb::graph
