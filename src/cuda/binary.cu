// SDC binary codes on CUDA: Hamming / SDC score matrices and SDC top-k, giving the CPU kernels'
// (src/cpp/binary/binary_kernels.h) and the NumPy reference's results exactly.
//
// Scoring (score_tile_kernel): a block of 16 x 16 threads owns a tile of 64 queries x 64 docs; each
// thread computes 4 x 4 pairs (queries ty + 16 r, docs tx + 16 c). The rows' planes are walked in
// chunks of kChunkWords 64-bit words per row (kChunkWords / bits words of every plane), staged in
// shared memory word-major (s[plane * WC + w][row], so the 16 docs a half-warp reads are
// consecutive words and the query word is a broadcast). Words are loaded with one 8-byte load when
// the address is aligned, else byte by byte, and never past a plane's last byte; the last word of a
// plane is masked (binary_math.h), so padding bits never count. Math: the xor form of
// binary_math.h, one uint32 accumulator per pair: acc += popc(q_i ^ d_k) << (2u - i - k) over all
// plane pairs (sdc: S = dim L^2 - 2 acc; bits = 1 gives dim - 2 H) or over i == k (hamming: acc).
// Exact integers, identical to the CPU's AND form.
//
// Top-k (chunked two-pass, bounded memory): queries in chunks of qc, docs in chunks of dc with
// qc * dc <= kScoreBudget (qc first, from a minimum doc chunk max(65536, 4 kk); dc then takes the
// rest of the budget, so one query scores up to kScoreBudget docs per chunk). For each (query
// chunk, doc chunk) the score kernel writes a [qc, dc] scratch matrix, then select_kernel merges it
// with each query's running top-kk list, kept in the output arrays themselves (kk = min(k, nd);
// after docs [0, d1) the list holds min(kk, d1) entries sorted by (score desc, id asc)).
// One merge (select_block, one 256-thread block): candidates are the list followed by the new
// entries, so among equal scores position order = id order (list ids < chunk ids, the sorted list
// has equal scores in id order); an exact radix select (4 passes of 8 bits over the
// order-preserving uint32 of the score, shared-memory histograms with integer atomics) finds the
// threshold score T and how many candidates equal to T to take; an order-preserving compaction
// (cub::BlockScan) takes every candidate above T and the first ones equal to T (the lowest ids); a
// bitonic sort of the kept entries (in dynamic shared memory, or a per-block global scratch when
// they do not fit) puts them in (score desc, id asc) order, written back over the list.
// Few queries (qn < 2 SMs, seg_plan): one block per query would leave the GPU idle, so the chunk's
// select is split: Kind::segments, G blocks per query, each takes a contiguous segment of L docs
// (in id order) and writes its exact top-min(kk, len) sorted into a scratch [qn, G * cL]
// (cL = min(kk, L); only the last segment can be shorter, so the lists lie back to back with no
// gaps); then Kind::merge, one block per query, merges the list + those G lists (ids read from the
// scratch; segment order = id order, so the tie rule holds). Every doc of the chunk's top-kk is in
// its segment's top-kk, so the result is the same. Otherwise Kind::chunk: list + chunk, ids d0 + j.
// The result is the unique top-k under (score desc, id asc), so it is deterministic and equals the
// CPU's. Rows are first filled with (INT32_MIN, -1), so k > nd and nd == 0 come out padded.
//
// Temporaries: cudaMallocAsync / cudaFreeAsync on the caller's stream. Indexing is int64; grids are
// capped and kernels loop over the rest.
#include <cuda_runtime.h>

#include <cfloat>
#include <climits>
#include <cstdint>
#include <cub/block/block_scan.cuh>
#include <stdexcept>
#include <string>

#include "cuda_util.cuh"
#include "binary/binary.h"
#include "binary/binary_validate.h"
#include "binary/binary_math.h"
#include "binary/binarize_math.h"
#include "common/float16.h"
#include "binary_cuda.cuh"

namespace fastemb::binary::cuda {
namespace {

using cuda_util::ceil_div;
using cuda_util::check_cuda;
using cuda_util::check_launch;
using cuda_util::DeviceBuffer;
using cuda_util::fail;

constexpr int kTileX = 16, kTileY = 16;        // score block: 16 x 16 threads
constexpr int kReg = 4;                        // pairs per thread: kReg queries x kReg docs
constexpr int kTileQ = kTileY * kReg;          // 64 queries per tile
constexpr int kTileD = kTileX * kReg;          // 64 docs per tile
constexpr int kScoreThreads = kTileX * kTileY;  // 256
constexpr int kChunkWords = 32;                // staged 64-bit words per row per chunk (all planes)
constexpr int kPitch = kTileQ + 1;             // shared row pitch in words (fewer store conflicts)
static_assert(kTileQ == kTileD, "one staging pitch for both tiles");
constexpr int kSelectThreads = 256;
constexpr int64_t kMaxGridX = int64_t(1) << 20;
constexpr int64_t kMaxGridY = 65535;
constexpr int64_t kScoreBudget = int64_t(1) << 25;  // top-k scratch scores per chunk (128 MiB)
constexpr int64_t kMinDocChunk = 65536;
constexpr int64_t kMaxGlobalSelectBlocks = 1024;   // blocks when the sort staging lives in global memory
constexpr int64_t kGlobalStageBudget = int64_t(256) << 20;  // bytes of that global staging

// ---- host helpers -------------------------------------------------------------------------------




__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }


// ---- scoring ------------------------------------------------------------------------------------

struct Geo {
  int64_t nbytes;     // bytes per plane
  int64_t words;      // 64-bit words per plane
  int64_t tail;       // bytes of the last word (1..8)
  uint64_t last_mask;
  int64_t row_bytes;  // bits * nbytes
  int64_t dim;
};

// Word w of a plane: 8-byte load when aligned, else bytes; never past the plane; padding masked.
__device__ __forceinline__ uint64_t load_word(const uint8_t* plane, int64_t w, const Geo& g) {
  const uint8_t* p = plane + 8 * w;
  const int n = w + 1 < g.words ? 8 : static_cast<int>(g.tail);
  uint64_t v = 0;
  if (n == 8 && (reinterpret_cast<uintptr_t>(p) & 7u) == 0) {
    v = __ldg(reinterpret_cast<const unsigned long long*>(p));
  } else {
    for (int t = 0; t < n; ++t) v |= static_cast<uint64_t>(__ldg(p + t)) << (8 * t);
  }
  return w + 1 < g.words ? v : (v & g.last_mask);
}

// Stages words [w0, w0 + nw) of every plane of rows [0, nrows) of `rows` into s[plane*WC + w][row]
// (zero for missing rows and for w >= nw).
template <int BITS, int WC>
__device__ __forceinline__ void stage(const uint8_t* rows, int64_t nrows, int64_t w0, int nw, const Geo& g,
                                      uint64_t (*s)[kPitch]) {
  constexpr int CW = BITS * WC;
  for (int e = threadIdx.y * kTileX + threadIdx.x; e < kTileQ * CW; e += kScoreThreads) {
    const int row = e / CW, cw = e % CW, plane = cw / WC, w = cw % WC;
    uint64_t v = 0;
    if (row < nrows && w < nw) v = load_word(rows + row * g.row_bytes + plane * g.nbytes, w0 + w, g);
    s[cw][row] = v;
  }
}

// out[i * ld + j] = score(query i, doc j) for i < nq, j < nd (q, d, out already offset).
template <int BITS, bool HAMMING>
__global__ void __launch_bounds__(kScoreThreads)
    score_tile_kernel(const uint8_t* __restrict__ q, int64_t nq, const uint8_t* __restrict__ d, int64_t nd, Geo g,
                      int32_t* __restrict__ out, int64_t ld) {
  constexpr int WC = kChunkWords / BITS;  // words of each plane per chunk
  constexpr int CW = BITS * WC;
  __shared__ uint64_t sq[CW][kPitch];
  __shared__ uint64_t sd[CW][kPitch];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t nqt = ceil_div(nq, kTileQ), ndt = ceil_div(nd, kTileD);
  for (int64_t qt = blockIdx.y; qt < nqt; qt += gridDim.y) {
    for (int64_t dt = blockIdx.x; dt < ndt; dt += gridDim.x) {
      const int64_t q0 = qt * kTileQ, d0 = dt * kTileD;
      const int64_t nqr = min64(kTileQ, nq - q0), ndr = min64(kTileD, nd - d0);
      uint32_t acc[kReg][kReg];
#pragma unroll
      for (int r = 0; r < kReg; ++r)
#pragma unroll
        for (int c = 0; c < kReg; ++c) acc[r][c] = 0;
      for (int64_t w0 = 0; w0 < g.words; w0 += WC) {
        const int nw = static_cast<int>(min64(WC, g.words - w0));
        __syncthreads();  // the previous chunk (or tile) is consumed
        stage<BITS, WC>(q + q0 * g.row_bytes, nqr, w0, nw, g, sq);
        stage<BITS, WC>(d + d0 * g.row_bytes, ndr, w0, nw, g, sd);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < BITS; ++i) {
#pragma unroll
          for (int k = 0; k < BITS; ++k) {
            if (HAMMING && k != i) continue;
            const int sh = HAMMING ? 0 : 2 * (BITS - 1) - i - k;
            for (int w = 0; w < nw; ++w) {
              uint64_t qv[kReg], dv[kReg];
#pragma unroll
              for (int r = 0; r < kReg; ++r) qv[r] = sq[i * WC + w][ty + kTileY * r];
#pragma unroll
              for (int c = 0; c < kReg; ++c) dv[c] = sd[k * WC + w][tx + kTileX * c];
#pragma unroll
              for (int r = 0; r < kReg; ++r)
#pragma unroll
                for (int c = 0; c < kReg; ++c) acc[r][c] += static_cast<uint32_t>(__popcll(qv[r] ^ dv[c])) << sh;
            }
          }
        }
      }
#pragma unroll
      for (int r = 0; r < kReg; ++r) {
        const int64_t qi = ty + kTileY * r;
        if (qi >= nqr) continue;
#pragma unroll
        for (int c = 0; c < kReg; ++c) {
          const int64_t dj = tx + kTileX * c;
          if (dj >= ndr) continue;
          const int64_t s = HAMMING ? int64_t(acc[r][c]) : sdc_from_xor(g.dim, BITS, int64_t(acc[r][c]));
          out[(q0 + qi) * ld + d0 + dj] = static_cast<int32_t>(s);
        }
      }
    }
  }
}

Geo make_geo(const Problem& p) {
  Geo g;
  g.nbytes = p.nbytes;
  g.words = (p.nbytes + 7) / 8;
  g.tail = p.nbytes - 8 * (g.words - 1);
  g.last_mask = last_word_mask(p.nbytes, p.dim);
  g.row_bytes = p.bits * p.nbytes;
  g.dim = p.dim;
  return g;
}

template <int BITS, bool HAMMING>
void launch_scores_t(const uint8_t* q, int64_t nq, const uint8_t* d, int64_t nd, const Geo& g, int32_t* out,
                     int64_t ld, cudaStream_t stream) {
  const dim3 block(kTileX, kTileY);
  const dim3 grid(static_cast<unsigned>(min64(ceil_div(nd, kTileD), kMaxGridX)),
                  static_cast<unsigned>(min64(ceil_div(nq, kTileQ), kMaxGridY)));
  score_tile_kernel<BITS, HAMMING><<<grid, block, 0, stream>>>(q, nq, d, nd, g, out, ld);
  check_launch("binary score_tile_kernel");
}

// Scores of queries q[0, nq) x docs d[0, nd) into out (row stride ld); nq, nd >= 1.
void launch_scores(const Problem& p, bool hamming, const uint8_t* q, int64_t nq, const uint8_t* d, int64_t nd,
                   int32_t* out, int64_t ld, cudaStream_t stream) {
  const Geo g = make_geo(p);
  switch (p.bits * 2 + (hamming ? 1 : 0)) {
    case 2: return launch_scores_t<1, false>(q, nq, d, nd, g, out, ld, stream);
    case 3: return launch_scores_t<1, true>(q, nq, d, nd, g, out, ld, stream);
    case 4: return launch_scores_t<2, false>(q, nq, d, nd, g, out, ld, stream);
    case 5: return launch_scores_t<2, true>(q, nq, d, nd, g, out, ld, stream);
    case 6: return launch_scores_t<3, false>(q, nq, d, nd, g, out, ld, stream);
    case 7: return launch_scores_t<3, true>(q, nq, d, nd, g, out, ld, stream);
    case 8: return launch_scores_t<4, false>(q, nq, d, nd, g, out, ld, stream);
    default: return launch_scores_t<4, true>(q, nq, d, nd, g, out, ld, stream);
  }
}

// ---- top-k --------------------------------------------------------------------------------------

__global__ void fill_pad_kernel(int32_t* __restrict__ s, int64_t* __restrict__ ids, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    s[i] = INT32_MIN;
    ids[i] = -1;
  }
}

// Order-preserving map int32 -> uint32 (larger score, larger key).
__device__ __forceinline__ uint32_t score_key(int32_t s) { return static_cast<uint32_t>(s) ^ 0x80000000u; }

// a before b in the result order: score desc, id asc.
__device__ __forceinline__ bool better(int32_t sa, int64_t ia, int32_t sb, int64_t ib) {
  return sa > sb || (sa == sb && ia < ib);
}

// The candidates of one merge, in position order: c0 entries of a sorted list (ls, li), then the
// rest: scores ts with ids ti (IDS_GIVEN) or ids id0, id0 + 1, ... (a chunk or a segment of it).
template <bool IDS_GIVEN>
struct Cands {
  const int32_t* ls;
  const int64_t* li;
  int64_t c0;
  const int32_t* ts;
  const int64_t* ti;
  int64_t id0;
  __device__ __forceinline__ int32_t score(int64_t e) const { return e < c0 ? ls[e] : ts[e - c0]; }
  __device__ __forceinline__ int64_t id(int64_t e) const {
    if (e < c0) return li[e];
    return IDS_GIVEN ? ti[e - c0] : id0 + (e - c0);
  }
};

using SelectScan = cub::BlockScan<int, kSelectThreads>;

struct SelectShared {
  typename SelectScan::TempStorage scan_tmp;
  int hist[256];
  int64_t sel_need;
  uint32_t sel_bin;
};

// One block: the c1 best of the n candidates (score desc, id asc; ties among equal scores go by
// position, so position order must be id order among equal scores), written sorted to out_s/out_i
// (which may be the list the candidates start with). st_s/st_i: staging of at least
// next_pow2(c1) entries. 1 <= c1 <= n.
template <class C>
__device__ void select_block(const C& c, int64_t n, int64_t c1, int32_t* out_s, int64_t* out_i, int32_t* st_s,
                             int64_t* st_i, SelectShared& sh) {
  const int tid = threadIdx.x;
  // Threshold key T and how many candidates equal to T to keep (all when n <= c1).
  uint32_t T = 0;
  int64_t need_eq = n;  // unused bound when everything is kept
  const bool keep_all = n <= c1;
  if (!keep_all) {
    uint32_t prefix = 0, mask = 0;
    int64_t need = c1;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = tid; b < 256; b += kSelectThreads) sh.hist[b] = 0;
      __syncthreads();
      for (int64_t e = tid; e < n; e += kSelectThreads) {
        const uint32_t u = score_key(c.score(e));
        if ((u & mask) == prefix) atomicAdd(&sh.hist[(u >> shift) & 255u], 1);
      }
      __syncthreads();
      if (tid == 0) {
        int64_t above = 0;
        int b = 255;
        for (; b > 0; --b) {
          if (above + sh.hist[b] >= need) break;
          above += sh.hist[b];
        }
        sh.sel_bin = static_cast<uint32_t>(b);
        sh.sel_need = need - above;
      }
      __syncthreads();
      prefix |= sh.sel_bin << shift;
      mask |= 255u << shift;
      need = sh.sel_need;
      __syncthreads();  // sel_* and hist are rewritten by the next pass
    }
    T = prefix;
    need_eq = need;
  }

  // Order-preserving compaction into the staging area.
  int64_t eq_before = 0, sel_before = 0;
  for (int64_t base = 0; base < n; base += kSelectThreads) {
    const int64_t e = base + tid;
    int32_t s = 0;
    int64_t id = 0;
    int gt = 0, eq = 0;
    if (e < n) {
      s = c.score(e);
      id = c.id(e);
      const uint32_t u = score_key(s);
      gt = keep_all || u > T;
      eq = !keep_all && u == T;
    }
    int eq_rank = 0, eq_total = 0;
    SelectScan(sh.scan_tmp).ExclusiveSum(eq, eq_rank, eq_total);
    __syncthreads();
    const int sel = gt || (eq && eq_before + eq_rank < need_eq);
    int slot = 0, sel_total = 0;
    SelectScan(sh.scan_tmp).ExclusiveSum(sel, slot, sel_total);
    __syncthreads();
    if (sel) {
      st_s[sel_before + slot] = s;
      st_i[sel_before + slot] = id;
    }
    eq_before += eq_total;
    sel_before += sel_total;
    // All c1 entries taken: later candidates are below T or equal ones past the quota. The
    // totals are block aggregates (the same in every thread), so the block leaves together.
    if (sel_before >= c1) break;
  }
  int64_t P = 1;  // sort size: power of two >= c1 (the same in every thread)
  while (P < c1) P <<= 1;
  for (int64_t j = c1 + tid; j < P; j += kSelectThreads) {
    st_s[j] = INT32_MIN;
    st_i[j] = INT64_MAX;
  }
  __syncthreads();

  // Bitonic sort of P entries, best first.
  for (int64_t size = 2; size <= P; size <<= 1) {
    for (int64_t stride = size >> 1; stride > 0; stride >>= 1) {
      for (int64_t t = tid; t < (P >> 1); t += kSelectThreads) {
        const int64_t i = 2 * t - (t & (stride - 1));
        const int64_t j = i + stride;
        const bool up = (i & size) == 0;
        const int32_t si = st_s[i], sj = st_s[j];
        const int64_t ii = st_i[i], ij = st_i[j];
        if (better(sj, ij, si, ii) == up) {
          st_s[i] = sj;
          st_i[i] = ij;
          st_s[j] = si;
          st_i[j] = ii;
        }
      }
      __syncthreads();
    }
  }
  for (int64_t j = tid; j < c1; j += kSelectThreads) {
    out_s[j] = st_s[j];
    out_i[j] = st_i[j];
  }
  __syncthreads();  // staging (and the list) are reused by the block's next item
}

// What a select_kernel launch merges:
//   chunk:    per query, the running list + the whole doc chunk (one block per query).
//   segments: per (query, segment g), segment g of the chunk (docs d0 + [g L, min(m, (g+1) L))) alone,
//             its c_g = min(kk, segment length) best written to seg[query, g cL .. g cL + c_g).
//   merge:    per query, the running list + the segment lists seg[query, 0 .. nc).
enum class Kind { chunk, segments, merge };

struct SelectArgs {
  int32_t* best_s;       // output rows [nq, k]: the running lists (row q0 + qi)
  int64_t* best_i;
  int64_t k;             // row stride of best_*
  int64_t kk;            // min(k, nd)
  int64_t q0, qcount;    // query chunk
  int64_t c0;            // entries in each list before this doc chunk: min(kk, d0)
  const int32_t* chunk;  // [qcount, ldc] scores of docs [d0, d0 + m)
  int64_t ldc, m, d0;
  int64_t G, L, cL;      // segments: G segments of L docs (the last one 1..L), lists of cL = min(kk, L)
  int32_t* seg_s;        // [qcount, G * cL] segment lists, each sorted; row = G lists back to back
  int64_t* seg_i;
  int64_t P;             // staging capacity: power of two >= kk
  int32_t* g_s;          // global staging [gridDim.x, P] when staging is not in shared memory
  int64_t* g_i;
};

template <Kind KIND>
__global__ void __launch_bounds__(kSelectThreads) select_kernel(SelectArgs a) {
  __shared__ SelectShared sh;
  extern __shared__ int64_t dyn[];  // P ids then P scores (shared staging), when g_s is null
  int64_t* st_i;
  int32_t* st_s;
  if (a.g_s) {
    st_i = a.g_i + int64_t(blockIdx.x) * a.P;
    st_s = a.g_s + int64_t(blockIdx.x) * a.P;
  } else {
    st_i = dyn;
    st_s = reinterpret_cast<int32_t*>(dyn + a.P);
  }
  const int64_t lds = a.G * a.cL;  // row stride of seg_*
  const int64_t items = KIND == Kind::segments ? a.qcount * a.G : a.qcount;
  for (int64_t it = blockIdx.x; it < items; it += gridDim.x) {
    if constexpr (KIND == Kind::segments) {
      const int64_t qi = it / a.G, g = it % a.G;
      const int64_t s0 = g * a.L, len = min64(a.L, a.m - s0);
      const Cands<false> c{nullptr, nullptr, 0, a.chunk + qi * a.ldc + s0, nullptr, a.d0 + s0};
      select_block(c, len, min64(a.kk, len), a.seg_s + qi * lds + g * a.cL, a.seg_i + qi * lds + g * a.cL, st_s,
                   st_i, sh);
    } else {
      int32_t* ls = a.best_s + (a.q0 + it) * a.k;
      int64_t* li = a.best_i + (a.q0 + it) * a.k;
      const int64_t c1 = min64(a.kk, a.c0 + a.m);
      if constexpr (KIND == Kind::chunk) {
        const Cands<false> c{ls, li, a.c0, a.chunk + it * a.ldc, nullptr, a.d0};
        select_block(c, a.c0 + a.m, c1, ls, li, st_s, st_i, sh);
      } else {
        // Segment lists in segment order, each sorted: among equal scores, position order = id order.
        const int64_t nc = (a.G - 1) * a.cL + min64(a.kk, a.m - (a.G - 1) * a.L);
        const Cands<true> c{ls, li, a.c0, a.seg_s + it * lds, a.seg_i + it * lds, 0};
        select_block(c, a.c0 + nc, c1, ls, li, st_s, st_i, sh);
      }
    }
  }
}

// Segments for one (query chunk, doc chunk): G = 1 means one block per query (Kind::chunk).
struct SegPlan {
  int64_t G, L, cL;
};

// Multi-block select when the queries alone do not fill the GPU: G blocks per query so that
// qn * G >= 2 SMs, but G <= sqrt(m / kk) (stage 1 reads m / G per block, stage 2 G kk + kk: the
// sum is smallest near G = sqrt(m / kk), where segments are >= sqrt(m kk) >= kk docs long) and
// segments of at least kMinSegment docs. Fewer than 2 segments: the one-block path.
constexpr int64_t kMinSegment = 2048;
SegPlan seg_plan(int64_t qn, int64_t m, int64_t kk, int64_t sms) {
  const SegPlan one{1, m, min64(kk, m)};
  if (qn >= 2 * sms) return one;
  int64_t g = min64(ceil_div(2 * sms, qn), m / kMinSegment);
  int64_t r = 1;  // min(g, floor(sqrt(m / kk)))
  while (r < g && (r + 1) * (r + 1) <= m / kk) ++r;
  g = r;
  if (g < 2) return one;
  const int64_t L = ceil_div(m, g);
  return SegPlan{ceil_div(m, L), L, min64(kk, L)};  // every segment non-empty
}

int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

}  // namespace

void scores(const Problem& p, int32_t* out, cudaStream_t stream) {
  validate_problem(p);
  if (p.nq == 0 || p.nd == 0) return;
  if (out == nullptr) fail("out: null");
  launch_scores(p, p.mode == Mode::hamming, p.q, p.nq, p.d, p.nd, out, p.nd, stream);
}

void topk(const Problem& p_in, int64_t k, int32_t* scores, int64_t* ids, cudaStream_t stream) {
  Problem p = p_in;
  p.mode = Mode::sdc;
  validate_problem(p);
  if (k < 1) fail("k must be >= 1, got " + std::to_string(k));
  if (p.nq == 0) return;
  if (scores == nullptr || ids == nullptr) fail("scores/ids: null");
  if (p.nq > INT64_MAX / k) fail("nq * k overflows");

  // Padding first: rows keep (INT32_MIN, -1) past min(k, nd) entries.
  {
    const int64_t total = p.nq * k;
    const unsigned blocks = static_cast<unsigned>(min64(ceil_div(total, 256), kMaxGridX));
    fill_pad_kernel<<<blocks, 256, 0, stream>>>(scores, ids, total);
    check_launch("binary fill_pad_kernel");
  }
  if (p.nd == 0) return;
  const int64_t kk = min64(k, p.nd);

  // Chunks: qc queries, at most kScoreBudget / dc_min of them (dc_min = max(kMinDocChunk, 4 kk),
  // so a merge re-reads the list at most ~1/4 of the new data), then docs in chunks of dc, as many
  // as the budget leaves: few queries get long chunks (nq = 1: up to kScoreBudget docs at once),
  // whose select is split over many blocks (seg_plan). qc * dc <= kScoreBudget unless 4 kk alone
  // exceeds it (then qc = 1).
  const int64_t dc_min = max64(kMinDocChunk, 4 * kk);
  const int64_t qc = min64(p.nq, max64(1, kScoreBudget / dc_min));
  const int64_t dc = min64(p.nd, max64(dc_min, kScoreBudget / qc));
  DeviceBuffer chunk_buf;
  int32_t* chunk = chunk_buf.alloc_n<int32_t>(qc * dc, stream);

  int device = 0, optin = 0, sms = 1;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
             "cudaDeviceGetAttribute");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");

  // Plans of the (at most 2 x 2) distinct chunk shapes: segment-list scratch and work items to size.
  const int64_t q_last = p.nq - (p.nq - 1) / qc * qc, d_last = p.nd - (p.nd - 1) / dc * dc;
  int64_t seg_cap = 0, max_items = qc;
  for (const int64_t qn : {qc, q_last}) {
    for (const int64_t m : {dc, d_last}) {
      const SegPlan sp = seg_plan(qn, m, kk, sms);
      if (sp.G > 1) {
        seg_cap = max64(seg_cap, qn * sp.G * sp.cL);
        max_items = max64(max_items, qn * sp.G);
      }
    }
  }
  DeviceBuffer ss_buf, si_buf;
  int32_t* seg_s = nullptr;
  int64_t* seg_i = nullptr;
  if (seg_cap > 0) {
    seg_s = ss_buf.alloc_n<int32_t>(seg_cap, stream);
    seg_i = si_buf.alloc_n<int64_t>(seg_cap, stream);
  }

  // Staging for the sort: dynamic shared memory when it fits, else per-block global scratch.
  const int64_t P = next_pow2(kk);
  const int64_t stage_bytes = P * int64_t(sizeof(int64_t) + sizeof(int32_t));
  int64_t static_smem = 0;
  for (const void* f : {reinterpret_cast<const void*>(select_kernel<Kind::chunk>),
                        reinterpret_cast<const void*>(select_kernel<Kind::segments>),
                        reinterpret_cast<const void*>(select_kernel<Kind::merge>)}) {
    cudaFuncAttributes attr{};
    check_cuda(cudaFuncGetAttributes(&attr, f), "cudaFuncGetAttributes");
    static_smem = max64(static_smem, static_cast<int64_t>(attr.sharedSizeBytes));
  }
  const bool shared_stage = stage_bytes + static_smem <= optin;
  const int64_t blocks = shared_stage ? kMaxGridX
                                      : max64(1, min64(min64(max_items, kMaxGlobalSelectBlocks),
                                                       kGlobalStageBudget / stage_bytes));
  DeviceBuffer gs_buf, gi_buf;
  int32_t* g_s = nullptr;
  int64_t* g_i = nullptr;
  size_t dyn_bytes = 0;
  if (shared_stage) {
    dyn_bytes = static_cast<size_t>(stage_bytes);
    // The largest allowed size, not this call's: a smaller value set by a concurrent call (another
    // host thread, another stream) could then never make this call's launch fail.
    for (const void* f : {reinterpret_cast<const void*>(select_kernel<Kind::chunk>),
                          reinterpret_cast<const void*>(select_kernel<Kind::segments>),
                          reinterpret_cast<const void*>(select_kernel<Kind::merge>)}) {
      check_cuda(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(optin - static_smem)),
                 "cudaFuncSetAttribute");
    }
  } else {
    g_s = gs_buf.alloc_n<int32_t>(blocks * P, stream);
    g_i = gi_buf.alloc_n<int64_t>(blocks * P, stream);
  }
  auto grid = [&](int64_t items) { return static_cast<unsigned>(min64(items, blocks)); };

  for (int64_t q0 = 0; q0 < p.nq; q0 += qc) {
    const int64_t qn = min64(qc, p.nq - q0);
    for (int64_t d0 = 0; d0 < p.nd; d0 += dc) {
      const int64_t m = min64(dc, p.nd - d0);
      launch_scores(p, false, p.q + q0 * p.bits * p.nbytes, qn, p.d + d0 * p.bits * p.nbytes, m, chunk, m, stream);
      const SegPlan sp = seg_plan(qn, m, kk, sms);
      SelectArgs a;
      a.best_s = scores;
      a.best_i = ids;
      a.k = k;
      a.kk = kk;
      a.q0 = q0;
      a.qcount = qn;
      a.c0 = min64(kk, d0);
      a.chunk = chunk;
      a.ldc = m;
      a.m = m;
      a.d0 = d0;
      a.G = sp.G;
      a.L = sp.L;
      a.cL = sp.cL;
      a.seg_s = seg_s;
      a.seg_i = seg_i;
      a.P = P;
      a.g_s = g_s;
      a.g_i = g_i;
      if (sp.G == 1) {
        select_kernel<Kind::chunk><<<grid(qn), kSelectThreads, dyn_bytes, stream>>>(a);
        check_launch("binary select_kernel");
      } else {
        select_kernel<Kind::segments><<<grid(qn * sp.G), kSelectThreads, dyn_bytes, stream>>>(a);
        check_launch("binary select_kernel (segments)");
        select_kernel<Kind::merge><<<grid(qn), kSelectThreads, dyn_bytes, stream>>>(a);
        check_launch("binary select_kernel (merge)");
      }
    }
  }
}

// ---- binarize -----------------------------------------------------------------------------------
// Two kernels, the CPU's math (binary/binarize_math.h, shared __host__ __device__):
//   bz_threshold_kernel: one thread per row: s (NumPy's pairwise sum of |x| in float64, walked with
//     an explicit stack: no device recursion) when bits > 1 and no scale, then the row's L
//     thresholds (stored as double; the float32 ones are exact in double).
//   bz_encode_kernel: one thread per (row, output byte): 8 elements, each compared with the L
//     thresholds in the input's precision; C = the number passed; plane i gets bit u - i of C.
namespace {

template <class T> struct BzCmpT { using type = float; };
template <> struct BzCmpT<double> { using type = double; };

__device__ __forceinline__ float bz_load(const float* x, int64_t i) { return x[i]; }
__device__ __forceinline__ double bz_load(const double* x, int64_t i) { return x[i]; }
__device__ __forceinline__ float bz_load(const half_t* x, int64_t i) { return half_bits_to_float(x[i].bits); }
__device__ __forceinline__ float bz_load(const bf16_t* x, int64_t i) { return bf16_bits_to_float(x[i].bits); }

template <class T>
__device__ double bz_leaf_dev(const T* a, int64_t n) {
  if (n < 8) {
    double res = 0.;
    for (int64_t i = 0; i < n; ++i) res += fabs(static_cast<double>(bz_load(a, i)));
    return res;
  }
  const int64_t n8 = n - n % 8;
  double r[8];
  for (int j = 0; j < 8; ++j) r[j] = fabs(static_cast<double>(bz_load(a, j)));
  for (int64_t i = 8; i < n8; i += 8)
    for (int j = 0; j < 8; ++j) r[j] = __dadd_rn(r[j], fabs(static_cast<double>(bz_load(a, i + j))));
  double res = __dadd_rn(__dadd_rn(__dadd_rn(r[0], r[1]), __dadd_rn(r[2], r[3])),
                         __dadd_rn(__dadd_rn(r[4], r[5]), __dadd_rn(r[6], r[7])));
  for (int64_t i = n8; i < n; ++i) res = __dadd_rn(res, fabs(static_cast<double>(bz_load(a, i))));
  return res;
}

template <class T>
__device__ double bz_pairwise_dev(const T* a, int64_t n) {
  struct Frame { int64_t lo, len; int stage; };
  Frame st[64];
  double val[64];
  int sp = 0, vp = 0;
  st[sp++] = {0, n, 0};
  while (sp > 0) {
    Frame& f = st[sp - 1];
    if (f.len <= 128) {
      val[vp++] = bz_leaf_dev(a + f.lo, f.len);
      --sp;
      continue;
    }
    int64_t n2 = f.len / 2;
    n2 -= n2 % 8;
    if (f.stage == 0) {
      f.stage = 1;
      st[sp++] = {f.lo, n2, 0};
    } else if (f.stage == 1) {
      f.stage = 2;
      st[sp++] = {f.lo + n2, f.len - n2, 0};
    } else {
      const double right = val[--vp];
      const double left = val[--vp];
      val[vp++] = __dadd_rn(left, right);
      --sp;
    }
  }
  return val[0];
}

template <class T>
__global__ void bz_threshold_kernel(BinarizeProblem p, double* thr) {
  using C = typename BzCmpT<T>::type;
  const int L = (1 << p.bits) - 1;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < p.n; r += int64_t(gridDim.x) * blockDim.x) {
    double s = 1.0;
    if (p.bits > 1) {
      if (p.scale != nullptr) {
        s = p.scale[r * p.scale_stride];
      } else {
        s = __ddiv_rn(bz_pairwise_dev(static_cast<const T*>(p.x) + r * p.ld, p.m), static_cast<double>(p.m));
        if (!(s > 0)) s = 1.0;
      }
    }
    C t[15];
    if constexpr (sizeof(C) == 4)
      row_thresholds_f32(p.bits, s, p.gt, t);
    else
      row_thresholds_f64(p.bits, s, p.gt, t);
    for (int k = 0; k < L; ++k) thr[r * 15 + k] = static_cast<double>(t[k]);
  }
}

template <class T>
__global__ void bz_encode_kernel(BinarizeProblem p, const double* thr, uint8_t* out, int32_t* bad) {
  using C = typename BzCmpT<T>::type;
  const int L = (1 << p.bits) - 1;
  const int64_t nbytes = (p.m + 7) / 8;
  const int64_t total = p.n * nbytes;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / nbytes, b = t % nbytes;
    const T* row = static_cast<const T*>(p.x) + r * p.ld;
    C th[15];
    for (int k = 0; k < L; ++k) th[k] = static_cast<C>(thr[r * 15 + k]);
    unsigned planes[4] = {0u, 0u, 0u, 0u};
    bool finite = true;
    for (int e = 0; e < 8; ++e) {
      const int64_t j = 8 * b + e;
      if (j >= p.m) break;
      const C v = bz_load(row, j);
      finite = finite && fabs(static_cast<double>(v)) <= DBL_MAX;
      int c = 0;
      for (int k = 0; k < L; ++k) c += v >= th[k] ? 1 : 0;
      for (int i = 0; i < p.bits; ++i) planes[i] |= static_cast<unsigned>((c >> (p.bits - 1 - i)) & 1) << (7 - e);
    }
    if (!finite) atomicOr(bad, 1);
    uint8_t* o = out + r * p.bits * nbytes + b;
    for (int i = 0; i < p.bits; ++i) o[i * nbytes] = static_cast<uint8_t>(planes[i]);
  }
}

template <class T>
void bz_launch(const BinarizeProblem& p, uint8_t* out, int32_t* bad, cudaStream_t stream) {
  DeviceBuffer thr_buf;
  double* thr = thr_buf.alloc_n<double>(p.n * 15, stream);
  const unsigned rows_blocks = static_cast<unsigned>(min64(ceil_div(p.n, 128), kMaxGridX));
  bz_threshold_kernel<T><<<rows_blocks, 128, 0, stream>>>(p, thr);
  check_launch("bz_threshold_kernel");
  const int64_t total = p.n * ((p.m + 7) / 8);
  const unsigned blocks = static_cast<unsigned>(min64(ceil_div(total, 256), kMaxGridX));
  bz_encode_kernel<T><<<blocks, 256, 0, stream>>>(p, thr, out, bad);
  check_launch("bz_encode_kernel");
}

}  // namespace

void binarize(const BinarizeProblem& p, uint8_t* out, int32_t* bad, cudaStream_t stream) {
  validate_binarize(p, out);
  if (p.n == 0 || p.m == 0) return;
  if (bad == nullptr) fail("bad: null");
  switch (p.dtype) {
    case 0: bz_launch<float>(p, out, bad, stream); break;
    case 1: bz_launch<double>(p, out, bad, stream); break;
    case 2: bz_launch<half_t>(p, out, bad, stream); break;
    default: bz_launch<bf16_t>(p, out, bad, stream); break;
  }
}

}  // namespace fastemb::binary::cuda
