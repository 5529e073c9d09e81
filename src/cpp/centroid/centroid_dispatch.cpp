// Validation, grouping (segments) and run-time ISA dispatch for the centroid kernels.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "centroid/centroid.h"
#include "common/memory.h"
#include "common/thread_pool.h"

namespace fastemb::centroid {

#define FASTEMB_DECLARE_ISA(ns)                                                                     \
  namespace ns {                                                                                    \
  void row_norms(const Problem& p, void* out);                                                      \
  void forward(const Problem& p, const ForwardOutputs& o, const Segments& s, const void* rn);        \
  void backward(const Problem& p, const BackwardInputs& in, const BackwardOutputs& o, const Segments& s, \
                const void* rn);                                                                    \
  }
FASTEMB_DECLARE_ISA(serial)
#if defined(FASTEMB_X86)
FASTEMB_DECLARE_ISA(avx2)
FASTEMB_DECLARE_ISA(avx512)
#endif
#if defined(FASTEMB_ARM64)
FASTEMB_DECLARE_ISA(neon)
#endif

namespace {

struct IsaKernels {
  void (*row_norms)(const Problem&, void*);
  void (*forward)(const Problem&, const ForwardOutputs&, const Segments&, const void*);
  void (*backward)(const Problem&, const BackwardInputs&, const BackwardOutputs&, const Segments&, const void*);
};

IsaKernels kernels_for(Isa isa) {
  if (!isa_supported(isa)) throw std::invalid_argument(std::string("isa '") + isa_name(isa) + "' is not supported by this CPU");
  switch (isa) {
#if defined(FASTEMB_X86)
    case Isa::avx512: return {avx512::row_norms, avx512::forward, avx512::backward};
    case Isa::avx2: return {avx2::row_norms, avx2::forward, avx2::backward};
#endif
#if defined(FASTEMB_ARM64)
    case Isa::dotprod:  // no dotprod variant: the shared kernels gain nothing from sdot
    case Isa::neon: return {neon::row_norms, neon::forward, neon::backward};
#endif
    default: return {serial::row_norms, serial::forward, serial::backward};
  }
}

size_t dtype_size(DType t) { return t == DType::f64 ? 8 : t == DType::f32 ? 4 : 2; }

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

void validate(const Problem& p) {
  if (p.n < 0 || p.d < 0) fail("x: negative shape");
  if (p.k < 0) fail("num_groups must be >= 0, got " + std::to_string(p.k));
  // offsets always has k + 1 >= 1 entries; labels may be a null address only when there are no rows
  // (an empty torch tensor has data_ptr 0).
  if (p.labels != nullptr && p.offsets != nullptr) fail("index/offsets: give exactly one of them");
  if (p.labels == nullptr && p.offsets == nullptr && p.n > 0) fail("index/offsets: give one of them (index is null for a non-empty x)");
  if (p.n > 0 && p.d > 0 && p.x == nullptr) fail("x: null data");
  if (!(p.eps > 0.0)) fail("eps must be a positive finite number");
  if (p.normalize < 0 || p.normalize > 3) fail("normalize: unknown mode");
  const bool extreme = p.reduce == Reduce::amax || p.reduce == Reduce::amin;
  if (extreme && p.weights) fail("weights: not supported with reduce='amax'/'amin'");
  if (extreme && p.leave_one_out) fail("leave_one_out: supported with reduce='sum'/'mean' only");
}

// Builds the CSR grouping. Labels are checked here (every one read once): out-of-range labels
// raise instead of writing out of bounds.
struct OwnedSegments {
  std::vector<int64_t> offsets, perm, chunks;
  bool labels_unsorted = false;
  Segments view;
};

// Very many groups: a one-pass counting sort scatters every row id to one of K cursors, and once
// the K * 8 bytes of cursors pass the L2 every row costs a cache miss on its cursor. Then the
// permutation is built in two cache-friendly radix passes: (A) a stable partition of the row ids
// by label block (label >> shift, at most kRadixMaxBlocks blocks, so its write streams stay in
// L1/L2), then (B) within each block, in parallel, a stable counting sort by the label's low bits
// into the block's slice of perm (2^shift cursors and that slice stay in L2). Both passes are
// stable, so perm is the same permutation as the one-pass sort (rows of each group in increasing
// order) and the results keep the same bits. Scratch: n row ids (int32 while n < 2^31, else
// int64) plus n uint32 low labels, freed before the kernels run (at most 12 bytes per row,
// besides perm's 8).
// Threshold measured at 1M rows x 128 fp32 on a 2-core Zen 4 (1 MB L2, 32 MB L3), forward
// median ms, loaded machine: K = 100k (800 KB of cursors) one-pass 125, two-pass 180;
// K = 1M (8 MB) one-pass 311-423, two-pass 181-403. So: two passes only past 2^17 groups (1 MB).
constexpr int64_t kRadixMinGroups = int64_t(1) << 17;
constexpr int64_t kRadixMinRows = 65536;
constexpr int64_t kRadixMaxBlocks = 256;

// 0: use the one-pass counting sort; else the block shift (groups per block = 2^shift).
int radix_block_shift(const Problem& p) {
  if (p.k <= kRadixMinGroups || p.n < kRadixMinRows) return 0;
  int shift = 1;
  while (((p.k - 1) >> shift) + 1 > kRadixMaxBlocks) ++shift;
  return shift <= 32 ? shift : 0;  // low labels are stored as uint32
}

template <class R, class L>
void build_perm_two_pass(const Problem& p, const L* labels, OwnedSegments& seg, int shift) {
  const int64_t n = p.n, k = p.k;
  const int64_t blocks = ((k - 1) >> shift) + 1;
  const uint64_t low_mask = (uint64_t(1) << shift) - 1;
  // Block b holds groups [b << shift, (b + 1) << shift): its rows start at offsets[b << shift].
  std::vector<int64_t> cursor(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) cursor[b] = seg.offsets[b << shift];
  std::unique_ptr<R[]> rows(new R[static_cast<size_t>(n)]);  // no zero fill: every slot is written
  std::unique_ptr<uint32_t[]> low(new uint32_t[static_cast<size_t>(n)]);
  for (int64_t i = 0; i < n; ++i) {  // pass A: labels were range-checked by the counting pass
    const uint64_t g = static_cast<uint64_t>(labels[i]);
    const int64_t at = cursor[g >> shift]++;
    rows[at] = static_cast<R>(i);
    low[at] = static_cast<uint32_t>(g & low_mask);
  }
  int64_t* perm = seg.perm.data();
  const int64_t* offsets = seg.offsets.data();
  parallel_for(blocks, [&](int64_t b) {  // pass B: one block per task, writes only its slice
    const int64_t g0 = b << shift, g1 = std::min<int64_t>(k, (b + 1) << shift);
    std::vector<int64_t> cur(offsets + g0, offsets + g1);
    for (int64_t j = offsets[g0]; j < offsets[g1]; ++j) perm[cur[low[j]]++] = static_cast<int64_t>(rows[j]);
  });
}

template <class L>
void group_labels(const Problem& p, const L* labels, OwnedSegments& seg, bool need_perm) {
  seg.offsets.assign(static_cast<size_t>(p.k) + 1, 0);
  int64_t* counts = seg.offsets.data() + 1;
  bool sorted = true;
  int64_t prev = 0;
  for (int64_t i = 0; i < p.n; ++i) {
    const int64_t g = static_cast<int64_t>(labels[i]);
    if (g < 0 || g >= p.k) {
      fail("index: label " + std::to_string(g) + " at position " + std::to_string(i) + " is out of range [0, num_groups=" +
           std::to_string(p.k) + ")");
    }
    sorted = sorted && g >= prev;
    prev = g;
    ++counts[g];
  }
  for (int64_t g = 0; g < p.k; ++g) seg.offsets[g + 1] += seg.offsets[g];
  if (sorted) return;
  seg.labels_unsorted = true;
  if (!need_perm) return;
  seg.perm.resize(static_cast<size_t>(p.n));
  const int shift = radix_block_shift(p);
  if (shift > 0) {
    if (p.n <= INT32_MAX)
      build_perm_two_pass<int32_t>(p, labels, seg, shift);
    else
      build_perm_two_pass<int64_t>(p, labels, seg, shift);
    return;
  }
  // Stable counting sort: rows of each group stay in increasing order.
  std::vector<int64_t> cursor(seg.offsets.begin(), seg.offsets.end() - 1);
  for (int64_t i = 0; i < p.n; ++i) seg.perm[cursor[static_cast<size_t>(labels[i])]++] = i;
}

void check_offsets(const Problem& p) {
  if (p.offsets[0] != 0) fail("offsets: must start at 0, got " + std::to_string(p.offsets[0]));
  for (int64_t g = 0; g < p.k; ++g) {
    if (p.offsets[g + 1] < p.offsets[g]) fail("offsets: must be non-decreasing (offsets[" + std::to_string(g + 1) + "] < offsets[" + std::to_string(g) + "])");
  }
  if (p.offsets[p.k] != p.n) fail("offsets: must end at the number of rows " + std::to_string(p.n) + ", got " + std::to_string(p.offsets[p.k]));
}

// Unsorted labels take the blocked path (stream x, per-block partial sums) for sum/mean when the
// K x D accumulators fit in L2 and there are enough rows to amortize the partials.
constexpr int64_t kBlockedMaxAccBytes = 4 << 20;
constexpr int64_t kBlockRows = 16384;

bool wants_blocked(const Problem& p) {
  const int64_t acc_bytes = p.k * p.d * (acc_is_double(p.dtype) ? 8 : 4);
  return (p.reduce == Reduce::sum || p.reduce == Reduce::mean) && acc_bytes <= kBlockedMaxAccBytes &&
         p.n >= 4 * kBlockRows && p.n >= 16 * p.k;
}

enum class Pass { forward, backward };

// Backward of sum/mean without leave-one-out walks unsorted labels in row order (no perm).
bool wants_rows_backward(const Problem& p) {
  return (p.reduce == Reduce::sum || p.reduce == Reduce::mean) && !p.leave_one_out && p.labels != nullptr;
}

OwnedSegments make_segments(const Problem& p, Pass pass) {
  OwnedSegments seg;
  bool allow_col_blocks = pass == Pass::forward;
  const bool blocked_candidate = pass == Pass::forward ? wants_blocked(p) : wants_rows_backward(p);
  if (p.offsets) {
    check_offsets(p);
  } else if (p.labels_int32) {
    group_labels(p, static_cast<const int32_t*>(p.labels), seg, !blocked_candidate);
  } else {
    group_labels(p, static_cast<const int64_t*>(p.labels), seg, !blocked_candidate);
  }
  Segments& s = seg.view;
  if (blocked_candidate && seg.labels_unsorted && pass == Pass::backward) {
    s.block_rows = 4096;
  } else if (blocked_candidate && seg.labels_unsorted) {
    // Partials of all blocks stay within ~8 MB (a fresh buffer costs page faults), 4 to 64
    // blocks, never fewer than kBlockRows rows per block. Depends on the shape only, never on the
    // thread count, so the summation order (and the bits) is fixed.
    const int64_t acc_bytes = std::max<int64_t>(1, p.k * p.d * (acc_is_double(p.dtype) ? 8 : 4));
    const int64_t max_blocks = std::min<int64_t>(64, std::max<int64_t>(4, (int64_t(8) << 20) / acc_bytes));
    s.block_rows = std::max<int64_t>(kBlockRows, (p.n + max_blocks - 1) / max_blocks);
    allow_col_blocks = false;
  }
  s.offsets = p.offsets ? p.offsets : seg.offsets.data();
  s.perm = seg.perm.empty() ? nullptr : seg.perm.data();

  // Parallel tasks: contiguous group ranges of about equal cost (rows + 1 per group).
  const int threads = get_num_threads();
  const int64_t target_tasks = threads > 1 ? int64_t(threads) * 8 : 1;
  const int64_t total_cost = p.n + p.k;
  const int64_t per_task = std::max<int64_t>(1, (total_cost + target_tasks - 1) / target_tasks);
  seg.chunks.push_back(0);
  int64_t cost = 0;
  for (int64_t g = 0; g < p.k; ++g) {
    cost += s.offsets[g + 1] - s.offsets[g] + 1;
    if (cost >= per_task && g + 1 < p.k) {
      seg.chunks.push_back(g + 1);
      cost = 0;
    }
  }
  seg.chunks.push_back(p.k);
  if (p.k == 0) seg.chunks.assign(1, 0);
  s.chunks = seg.chunks.data();
  s.num_chunks = static_cast<int64_t>(seg.chunks.size()) - 1;

  // Few groups: also split the columns (blocks of 16 values), so every thread has work. 'post'
  // needs whole rows, so it keeps one block.
  s.col_blocks = 1;
  s.col_block_width = p.d;
  if (allow_col_blocks && threads > 1 && s.num_chunks < 2 * threads && p.d >= 32 && !(p.normalize & kNormalizePost)) {
    const int64_t want = std::min<int64_t>((p.d + 15) / 16, (4 * threads + s.num_chunks - 1) / std::max<int64_t>(s.num_chunks, 1));
    const int64_t width = ((p.d + want - 1) / want + 15) / 16 * 16;
    s.col_block_width = width;
    s.col_blocks = (p.d + width - 1) / width;
  }
  return seg;
}

std::vector<unsigned char> maybe_row_norms(const IsaKernels& kern, const Problem& p) {
  std::vector<unsigned char> buf;
  if (p.normalize & kNormalizePre) {
    buf.resize(static_cast<size_t>(p.n) * (acc_is_double(p.dtype) ? 8 : 4) + 8);
    kern.row_norms(p, buf.data());
  }
  return buf;
}

}  // namespace

void forward_isa(Isa isa, const Problem& p, const ForwardOutputs& o) {
  validate(p);
  const IsaKernels kern = kernels_for(isa);
  OwnedSegments seg = make_segments(p, Pass::forward);
  if (p.k == 0 && !p.leave_one_out) return;
  const std::vector<unsigned char> rn = maybe_row_norms(kern, p);
  advise_huge_pages(o.out, static_cast<size_t>(p.leave_one_out ? p.n : p.k) * p.d * dtype_size(p.dtype));
  kern.forward(p, o, seg.view, rn.empty() ? nullptr : rn.data());
}

void backward_isa(Isa isa, const Problem& p, const BackwardInputs& in, const BackwardOutputs& o) {
  validate(p);
  const int64_t out_rows = p.leave_one_out ? p.n : p.k;
  if ((p.reduce == Reduce::amax || p.reduce == Reduce::amin) && in.arg == nullptr && p.k * p.d > 0)
    fail("arg: required for amax/amin backward");
  if ((p.normalize & kNormalizePost) && in.out_norm == nullptr && out_rows > 0)
    fail("out_norm: required for 'post' backward");
  const IsaKernels kern = kernels_for(isa);
  OwnedSegments seg = make_segments(p, Pass::backward);
  const std::vector<unsigned char> rn = maybe_row_norms(kern, p);
  advise_huge_pages(o.grad_x, static_cast<size_t>(p.n) * p.d * dtype_size(p.dtype));
  kern.backward(p, in, o, seg.view, rn.empty() ? nullptr : rn.data());
}

void forward(const Problem& p, const ForwardOutputs& o) { forward_isa(active_isa(), p, o); }
void backward(const Problem& p, const BackwardInputs& in, const BackwardOutputs& o) { backward_isa(active_isa(), p, in, o); }

}  // namespace fastemb::centroid
