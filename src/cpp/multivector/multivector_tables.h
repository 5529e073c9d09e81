// Host-side construction of a MUVERA call's count-sketch tables (multivector_math.h rules), shared by the
// CPU dispatcher and the CUDA entry points. Plain C++ (std::vector): not for the per-ISA kernel files.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "multivector/multivector.h"
#include "multivector/multivector_math.h"

namespace fastemb::multivector {

// (column << 1) | negative for count-sketch entries [0, count) of a stream, into `width` columns.
inline std::vector<int32_t> sketch_table(uint64_t seed, int stream, int64_t count, int64_t width) {
  std::vector<int32_t> out(static_cast<size_t>(count));
  const uint64_t key = stream_key(seed, stream);
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t u = graph::entry_bits(key, static_cast<uint64_t>(i));
    out[static_cast<size_t>(i)] =
        static_cast<int32_t>((sketch_column(u, static_cast<uint64_t>(width)) << 1) | (sketch_negative(u) ? 1u : 0u));
  }
  return out;
}

// The inner sketch grouped by column: for repetition r and column o, `len` entries (j << 1) | negative at
// [(r * d_proj + o) * len, ...), the coordinates j of column o in increasing order, padded with j = dim
// (a zero row). Returns the entries; *len_out = len (the longest column of any repetition).
inline std::vector<int32_t> inner_sketch_lists(const FdeSpec& s, int64_t dim, int64_t* len_out) {
  const int64_t dp = s.d_proj, R = s.repetitions;
  const std::vector<int32_t> inner = sketch_table(s.seed, kStreamInner, R * dim, dp);
  std::vector<int64_t> count(static_cast<size_t>(R * dp), 0);
  int64_t len = 1;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < dim; ++j) {
      int64_t& c = count[static_cast<size_t>(r * dp + (inner[static_cast<size_t>(r * dim + j)] >> 1))];
      len = std::max(len, ++c);
    }
  std::vector<int32_t> entries(static_cast<size_t>(R * dp * len), static_cast<int32_t>(dim << 1));
  std::fill(count.begin(), count.end(), 0);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < dim; ++j) {
      const int32_t e = inner[static_cast<size_t>(r * dim + j)];
      const int64_t o = r * dp + (e >> 1);
      entries[static_cast<size_t>(o * len + count[static_cast<size_t>(o)]++)] = static_cast<int32_t>((j << 1) | (e & 1));
    }
  *len_out = len;
  return entries;
}

// The final sketch grouped by column (CSR): column o's entries (i << 1) | negative, i increasing, at
// [starts[o], starts[o + 1]) of the returned list. (The CPU kernels walk the flat table in i order instead.)
inline std::vector<int64_t> final_sketch_lists(const std::vector<int32_t>& flat, int64_t final_dim,
                                               std::vector<int64_t>* starts) {
  starts->assign(static_cast<size_t>(final_dim + 1), 0);
  for (int32_t e : flat) ++(*starts)[static_cast<size_t>((e >> 1) + 1)];
  for (int64_t o = 0; o < final_dim; ++o) (*starts)[static_cast<size_t>(o + 1)] += (*starts)[static_cast<size_t>(o)];
  std::vector<int64_t> cursor(starts->begin(), starts->end() - 1), lists(flat.size());
  for (size_t i = 0; i < flat.size(); ++i)
    lists[static_cast<size_t>(cursor[static_cast<size_t>(flat[i] >> 1)]++)] = static_cast<int64_t>((i << 1) | (flat[i] & 1));
  return lists;
}

}  // namespace fastemb::multivector
