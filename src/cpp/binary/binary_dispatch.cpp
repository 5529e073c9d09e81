// Validation, work splitting, top-k merging and run-time ISA dispatch for the binary-code kernels.
#include <algorithm>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "binary/binary.h"
#include "binary/binary_validate.h"
#include "common/thread_pool.h"

namespace fastemb::binary {

#define FASTEMB_DECLARE_ISA(ns)                                                                                 \
  namespace ns {                                                                                                \
  void score_block(const Problem& p, int64_t q0, int64_t q1, int64_t d0, int64_t d1, int32_t* out, int64_t ld); \
  void topk_block(const Problem& p, int64_t q0, int64_t q1, int64_t d0, int64_t d1, int64_t k, int32_t* hs,    \
                  int64_t* hi, int64_t* hn);                                                                    \
  bool binarize_rows(const BinarizeProblem& p, int64_t r0, int64_t r1, uint8_t* out);                           \
  }
FASTEMB_DECLARE_ISA(serial)
#if defined(FASTEMB_X86)
FASTEMB_DECLARE_ISA(avx2)
FASTEMB_DECLARE_ISA(avx512)
#endif
#if defined(FASTEMB_ARM64)
FASTEMB_DECLARE_ISA(neon)
FASTEMB_DECLARE_ISA(dotprod)
#endif

namespace {

struct IsaKernels {
  void (*score_block)(const Problem&, int64_t, int64_t, int64_t, int64_t, int32_t*, int64_t);
  void (*topk_block)(const Problem&, int64_t, int64_t, int64_t, int64_t, int64_t, int32_t*, int64_t*, int64_t*);
  bool (*binarize_rows)(const BinarizeProblem&, int64_t, int64_t, uint8_t*);
};

IsaKernels kernels_for(Isa requested) {
  if (!isa_supported(requested))
    throw std::invalid_argument(std::string("isa '") + isa_name(requested) + "' is not supported by this CPU");
  switch (kernel_isa(requested)) {
#if defined(FASTEMB_X86)
    case Isa::avx512: return {avx512::score_block, avx512::topk_block, avx512::binarize_rows};
    case Isa::avx2: return {avx2::score_block, avx2::topk_block, avx2::binarize_rows};
#endif
#if defined(FASTEMB_ARM64)
    case Isa::dotprod: return {dotprod::score_block, dotprod::topk_block, dotprod::binarize_rows};
    case Isa::neon: return {neon::score_block, neon::topk_block, neon::binarize_rows};
#endif
    default: return {serial::score_block, serial::topk_block, serial::binarize_rows};
  }
}

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

constexpr int64_t kScoreQueryBlock = 32;
constexpr int64_t kScoreDocBlock = 256 * kTile;
constexpr int64_t kTopkQueryBlock = 64;
constexpr int64_t kMinDocsPerPart = 64 * kTile;
constexpr int64_t kHeapBudgetBytes = int64_t(256) << 20;

}  // namespace

Isa kernel_isa(Isa requested) {
  if (requested == Isa::avx512 && !cpu_features().avx512vpopcntdq) return isa_supported(Isa::avx2) ? Isa::avx2 : Isa::serial;
  return requested;
}

void scores_isa(Isa isa, const Problem& p, int32_t* out) {
  validate_problem(p);
  const IsaKernels kern = kernels_for(isa);
  if (p.nq == 0 || p.nd == 0) return;
  if (out == nullptr) fail("out: null");
  const int64_t nqb = (p.nq + kScoreQueryBlock - 1) / kScoreQueryBlock;
  const int64_t ndb = (p.nd + kScoreDocBlock - 1) / kScoreDocBlock;
  // Tasks are (query block, doc block) tiles; each writes only its own part of out.
  parallel_for(nqb * ndb, [&](int64_t t) {
    const int64_t qb = t / ndb, db = t % ndb;
    const int64_t q0 = qb * kScoreQueryBlock, q1 = std::min(p.nq, q0 + kScoreQueryBlock);
    const int64_t d0 = db * kScoreDocBlock, d1 = std::min(p.nd, d0 + kScoreDocBlock);
    kern.score_block(p, q0, q1, d0, d1, out + q0 * p.nd + d0, p.nd);
  });
}

void topk_isa(Isa isa, const Problem& p, int64_t k, int32_t* scores, int64_t* ids) {
  validate_problem(p);
  if (k < 1) fail("k must be >= 1, got " + std::to_string(k));
  const IsaKernels kern = kernels_for(isa);
  if (p.nq == 0) return;
  if (scores == nullptr || ids == nullptr) fail("scores/ids: null");
  // Padding for k > nd (and the whole row when nd == 0).
  std::fill(scores, scores + p.nq * k, INT32_MIN);
  std::fill(ids, ids + p.nq * k, int64_t(-1));
  if (p.nd == 0) return;
  const int64_t kk = std::min(k, p.nd);

  // The corpus range is split into `parts` contiguous, tile-aligned ranges (threads scan different
  // ranges of the same query block); each part keeps its own heaps, merged below. The merged
  // result is the unique top-k under (score desc, id asc), so it does not depend on `parts`.
  const int64_t threads = get_num_threads();
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, p.nd / kMinDocsPerPart));
  const int64_t part_len = ((p.nd + parts - 1) / parts + kTile - 1) / kTile * kTile;
  // Query block: bounded by the heap memory (parts * qb * kk entries of 12 bytes).
  const int64_t qb_cap = std::max<int64_t>(1, kHeapBudgetBytes / (parts * kk * 12));
  const int64_t qblock = std::min<int64_t>({kTopkQueryBlock, qb_cap, p.nq});
  // With fewer parts than threads, query sub-blocks give the other threads work.
  const int64_t qsplit = std::max<int64_t>(1, std::min<int64_t>(qblock, (threads + parts - 1) / parts));
  const int64_t qsub = (qblock + qsplit - 1) / qsplit;

  std::vector<int32_t> hs(static_cast<size_t>(parts * qblock * kk));
  std::vector<int64_t> hi(static_cast<size_t>(parts * qblock * kk));
  std::vector<int64_t> hn(static_cast<size_t>(parts * qblock));

  for (int64_t q0 = 0; q0 < p.nq; q0 += qblock) {
    const int64_t q1 = std::min(p.nq, q0 + qblock);
    std::fill(hn.begin(), hn.end(), 0);
    parallel_for(parts * qsplit, [&](int64_t t) {
      const int64_t part = t / qsplit, sub = t % qsplit;
      const int64_t a = q0 + sub * qsub, b = std::min(q1, a + qsub);
      const int64_t d0 = part * part_len, d1 = std::min(p.nd, d0 + part_len);
      if (a >= b || d0 >= d1) return;
      const int64_t off = part * qblock + (a - q0);
      kern.topk_block(p, a, b, d0, d1, kk, hs.data() + off * kk, hi.data() + off * kk, hn.data() + off);
    });
    // Merge: per query, the parts' heaps sorted by (score desc, id asc), first kk kept.
    parallel_for(q1 - q0, [&](int64_t i) {
      std::vector<std::pair<int32_t, int64_t>> cand;
      cand.reserve(static_cast<size_t>(parts * kk));
      for (int64_t part = 0; part < parts; ++part) {
        const int64_t off = part * qblock + i;
        for (int64_t e = 0; e < hn[off]; ++e) cand.emplace_back(hs[off * kk + e], hi[off * kk + e]);
      }
      auto better = [](const std::pair<int32_t, int64_t>& x, const std::pair<int32_t, int64_t>& y) {
        return x.first > y.first || (x.first == y.first && x.second < y.second);
      };
      const int64_t take = std::min<int64_t>(kk, static_cast<int64_t>(cand.size()));
      std::partial_sort(cand.begin(), cand.begin() + take, cand.end(), better);
      int32_t* os = scores + (q0 + i) * k;
      int64_t* oi = ids + (q0 + i) * k;
      for (int64_t e = 0; e < take; ++e) {
        os[e] = cand[static_cast<size_t>(e)].first;
        oi[e] = cand[static_cast<size_t>(e)].second;
      }
    });
  }
}

bool binarize_isa(Isa isa, const BinarizeProblem& p, uint8_t* out) {
  validate_binarize(p, out);
  const IsaKernels kern = kernels_for(isa);
  if (p.n == 0 || p.m == 0) return true;
  if (p.scale != nullptr) {
    const int64_t count = p.scale_stride ? p.n : 1;
    for (int64_t r = 0; r < count; ++r)
      if (!(p.scale[r] > 0) || !(p.scale[r] <= 1.7976931348623157e308)) fail("scale must be positive and finite");
  }
  // Tasks of whole rows, about 256 KiB of float32 input each; each writes only its own rows.
  const int64_t rows = std::max<int64_t>(1, (int64_t(1) << 16) / p.m);
  const int64_t tasks = (p.n + rows - 1) / rows;
  std::vector<uint8_t> ok(static_cast<size_t>(tasks), 1);
  parallel_for(tasks, [&](int64_t t) {
    const int64_t r0 = t * rows, r1 = std::min(p.n, r0 + rows);
    ok[static_cast<size_t>(t)] = kern.binarize_rows(p, r0, r1, out) ? 1 : 0;
  });
  for (uint8_t v : ok)
    if (!v) return false;
  return true;
}

bool binarize(const BinarizeProblem& p, uint8_t* out) { return binarize_isa(active_isa(), p, out); }

void scores(const Problem& p, int32_t* out) { scores_isa(active_isa(), p, out); }
void topk(const Problem& p, int64_t k, int32_t* s, int64_t* ids) { topk_isa(active_isa(), p, k, s, ids); }

}  // namespace fastemb::binary
