// Validation, work split, random tables and run-time ISA dispatch for the multi-vector kernels.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/memory.h"
#include "common/thread_pool.h"
#include "multivector/multivector.h"
#include "multivector/multivector_internal.h"
#include "multivector/multivector_math.h"
#include "multivector/multivector_tables.h"
#include "multivector/multivector_validate.h"

namespace fastemb::multivector {
namespace {

struct IsaKernels {
  void (*maxsim)(const TokenSets&, const TokenSets&, const BlockPlan&, float*);
  void (*maxsim_topk)(const TokenSets&, const TokenSets&, const BlockPlan&, int64_t, int64_t, float*, int64_t*);
  void (*muvera_fde)(const FdeSpec&, const TokenSets&, const int64_t*, int64_t, const FdeTables&, float*);
};

IsaKernels kernels_for(Isa isa) {
  if (!isa_supported(isa)) fail(std::string("isa '") + isa_name(isa) + "' is not supported by this CPU");
  switch (isa) {
#if defined(FASTEMB_X86)
    case Isa::avx512: return {avx512::maxsim, avx512::maxsim_topk, avx512::muvera_fde};
    case Isa::avx2: return {avx2::maxsim, avx2::maxsim_topk, avx2::muvera_fde};
#endif
#if defined(FASTEMB_ARM64)
    case Isa::dotprod:  // no dotprod variant: float kernels gain nothing from sdot
    case Isa::neon: return {neon::maxsim, neon::maxsim_topk, neon::muvera_fde};
#endif
    default: return {serial::maxsim, serial::maxsim_topk, serial::muvera_fde};
  }
}

// Cuts sets [0, n) into consecutive groups of cost (tokens + 1 per set) >= budget (the last may be smaller).
std::vector<int64_t> cut_sets(const TokenSets& t, int64_t budget) {
  std::vector<int64_t> cuts{0};
  int64_t cost = 0;
  for (int64_t s = 0; s < t.n; ++s) {
    cost += t.end[s] - t.begin[s] + 1;
    if (cost >= budget && s + 1 < t.n) {
      cuts.push_back(s + 1);
      cost = 0;
    }
  }
  if (t.n > 0) cuts.push_back(t.n);
  return cuts;
}

// Query blocks of ~1024 tokens (their packed panels stream once per document chunk); document chunks
// of ~256 KB (kept in L2 while every panel of the block sweeps them).
constexpr int64_t kQueryBlockTokens = 1024;
constexpr int64_t kDocChunkBytes = 256 << 10;

struct Plan {
  std::vector<int64_t> qblocks, dchunks;
  BlockPlan view;
};

Plan make_plan(const TokenSets& q, const TokenSets& d) {
  Plan p;
  p.qblocks = cut_sets(q, kQueryBlockTokens);
  p.dchunks = cut_sets(d, std::max<int64_t>(16, kDocChunkBytes / (d.dim * 4)));
  p.view = BlockPlan{p.qblocks.data(), static_cast<int64_t>(p.qblocks.size()) - 1, p.dchunks.data(),
                     static_cast<int64_t>(p.dchunks.size()) - 1};
  return p;
}

}  // namespace


void maxsim_isa(Isa isa, const TokenSets& q, const TokenSets& d, float* out) {
  check_pair(q, d);
  const IsaKernels kern = kernels_for(isa);
  if (q.n == 0 || d.n == 0) return;
  if (out == nullptr) fail("out: null pointer");
  const Plan p = make_plan(q, d);
  kern.maxsim(q, d, p.view, out);
}

void maxsim_topk_isa(Isa isa, const TokenSets& q, const TokenSets& d, int64_t k, float* scores, int64_t* ids) {
  check_pair(q, d);
  if (k < 1) fail("k must be >= 1, got " + std::to_string(k));
  const IsaKernels kern = kernels_for(isa);
  if (q.n == 0) return;
  if (scores == nullptr || ids == nullptr) fail("scores/ids: null pointer");
  if (d.n == 0) {
    std::fill(scores, scores + q.n * k, -INFINITY);
    std::fill(ids, ids + q.n * k, int64_t(-1));
    return;
  }
  const Plan p = make_plan(q, d);
  // Stripes of document chunks scanned by separate tasks, merged below. The result is the same for
  // every stripe count (the order score desc, id asc is total), which only sets the parallelism and
  // the candidate memory (stripes * q.n * k).
  const int64_t stripes = std::min<int64_t>(p.view.ndc, std::max<int64_t>(1, 2 * get_num_threads()));
  std::vector<float> cand_s(static_cast<size_t>(stripes * q.n * k));
  std::vector<int64_t> cand_id(static_cast<size_t>(stripes * q.n * k));
  kern.maxsim_topk(q, d, p.view, stripes, k, cand_s.data(), cand_id.data());
  auto merge = [&](int64_t qs) {
    std::vector<int64_t> idx;
    idx.reserve(static_cast<size_t>(stripes * k));
    for (int64_t st = 0; st < stripes; ++st)
      for (int64_t j = 0; j < k; ++j) idx.push_back((st * q.n + qs) * k + j);
    auto before = [&](int64_t a, int64_t b) {
      const int64_t ia = cand_id[a], ib = cand_id[b];
      if ((ia < 0) != (ib < 0)) return ib < 0;  // padding last
      if (ia < 0) return false;
      const float sa = cand_s[a], sb = cand_s[b];
      return sa > sb || (sa == sb && ia < ib);
    };
    const size_t keep = static_cast<size_t>(std::min<int64_t>(k, static_cast<int64_t>(idx.size())));
    std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), before);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t c = idx[static_cast<size_t>(j)];
      const bool pad = cand_id[c] < 0;
      scores[qs * k + j] = pad ? -INFINITY : cand_s[c];
      ids[qs * k + j] = pad ? -1 : cand_id[c];
    }
  };
  parallel_for(q.n, merge);
}

void muvera_fde_isa(Isa isa, const FdeSpec& s, const TokenSets& x, float* out) {
  check_sets("x", x);
  check_spec(s, x.dim);
  const IsaKernels kern = kernels_for(isa);
  if (x.n == 0) return;
  if (out == nullptr) fail("out: null pointer");
  std::vector<int32_t> inner_entries, final_tab;
  FdeTables tb;
  if (s.d_proj > 0) {
    inner_entries = inner_sketch_lists(s, x.dim, &tb.inner_len);
    tb.inner_entries = inner_entries.data();
  }
  if (s.final_dim > 0) {
    final_tab = sketch_table(s.seed, kStreamFinal, fde_raw_dim(s, x.dim), s.final_dim);
    tb.final_tab = final_tab.data();
  }
  advise_huge_pages(out, static_cast<size_t>(x.n * fde_dim(s, x.dim)) * sizeof(float));
  // Tasks of ~2048 tokens (sets whole): each output row is computed by one task.
  const std::vector<int64_t> chunks = cut_sets(x, 2048);
  kern.muvera_fde(s, x, chunks.data(), static_cast<int64_t>(chunks.size()) - 1, tb, out);
}

void maxsim(const TokenSets& q, const TokenSets& d, float* out) { maxsim_isa(active_isa(), q, d, out); }
void maxsim_topk(const TokenSets& q, const TokenSets& d, int64_t k, float* scores, int64_t* ids) {
  maxsim_topk_isa(active_isa(), q, d, k, scores, ids);
}
void muvera_fde(const FdeSpec& s, const TokenSets& x, float* out) { muvera_fde_isa(active_isa(), s, x, out); }

}  // namespace fastemb::multivector
