// Centroid aggregation on CUDA: forward (sum / mean / amax / amin, 'pre' / 'post' normalization,
// leave-one-out) and backward, mirroring the CPU kernels (src/cpp/centroid/centroid_kernels.h)
// and the NumPy reference. The per-element rules come from centroid/centroid_math.h, shared with
// the CPU code.
//
// Paths
//   forward, sum/mean, labels, not deterministic, no leave-one-out: "scatter" -- blocks over
//     (row tile, column tile), each thread walks its tile's rows in order for one column and merges
//     runs of equal labels in a register before one atomicAdd per run (sorted labels: a few atomics
//     per tile; random labels: one per element, as index_add_). Then "finalize" (mean division,
//     'post', conversion to the output dtype).
//   everything else (offsets given, deterministic=True, amax/amin, leave-one-out): "segment" --
//     CSR segments (user offsets, or a stable device sort of (label, row) with CUB radix sort:
//     rows of a group stay in increasing row order), one block per (group, column tile), threads
//     coalesced over columns; blockDim.y row slices each reduce a contiguous run of the group's rows
//     in row order, and the slices are combined in slice order. The block shape depends only on
//     (n, k, d), so results are the same bits run to run. With one row slice (small groups) a
//     sum/mean/amax/amin without normalization gives the CPU kernels' exact bits.
//   backward: row-parallel gather (one warp per row), no atomics: always deterministic. Group-level
//     terms (post projections, c . g, the leave-one-out sums T and U) come from small pre-passes.
// Temporaries: cudaMallocAsync / cudaFreeAsync on the caller's stream (no host synchronization).
// Indexing is int64 throughout; grids are capped and kernels loop (grid-stride) over the rest.
// Labels outside [0, k) (validated by the Python layer) are skipped: never read or written out of
// bounds; their grad_x rows / grad_w entries are written as 0, their leave-one-out rows untouched.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda_util.cuh"
#include "centroid/centroid.h"
#include "centroid/centroid_math.h"
#include "centroid_cuda.cuh"
#include "common/float16.h"

namespace fastemb::centroid::cuda {
namespace {

using cuda_util::ceil_div;
using cuda_util::check_cuda;
using cuda_util::check_launch;
using cuda_util::DeviceBuffer;
using cuda_util::fail;
using cuda_util::grid_for;
using cuda_util::kMaxGrid;

constexpr int kWarp = 32;
constexpr int kBlock = 256;                   // threads per block, every kernel
constexpr int kMaxSlices = kBlock / kWarp;    // row slices of a segment block (TX >= 32)
constexpr int64_t kScatterRows = 64;          // rows per scatter tile

// ---- host helpers -------------------------------------------------------------------------------







// ---- device helpers -----------------------------------------------------------------------------

__device__ __forceinline__ float sqrt_a(float v) { return sqrtf(v); }
__device__ __forceinline__ double sqrt_a(double v) { return sqrt(v); }

// Butterfly sum: every lane ends with the same bits (a + b == b + a), fixed order.
template <class A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int off = kWarp / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

template <class T, class A>
__device__ __forceinline__ A load(const T* p, int64_t i) {
  return to_acc(p[i], A());
}

__device__ __forceinline__ float tiny_a(float) { return 1.17549435e-38f; }   // FLT_MIN
__device__ __forceinline__ double tiny_a(double) { return 2.2250738585072014e-308; }  // DBL_MIN
__device__ __forceinline__ float huge_a(float) { return 3.40282347e+38f; }   // FLT_MAX
__device__ __forceinline__ double huge_a(double) { return 1.7976931348623157e+308; }  // DBL_MAX

// ||v|| of a row of d values (value(j) gives element j in A), by the whole warp (every lane gets
// the result). Like the CPU's norm_fixed: when the sum of squares overflows or underflows A, it is
// redone on v / max|v| (BLAS nrm2 style), so large or tiny but finite rows still normalize.
template <class A, class F>
__device__ A warp_norm(int64_t d, int lane, F value) {
  A s = A(0);
  for (int64_t j = lane; j < d; j += kWarp) {
    const A v = value(j);
    s = madd(s, v, v);
  }
  s = warp_sum(s);
  if (s >= tiny_a(A()) && s <= huge_a(A())) return sqrt_a(s);
  A peak = A(0);
  for (int64_t j = lane; j < d; j += kWarp) {
    const A v = value(j);
    const A mag = v < A(0) ? -v : v;
    if (mag > peak) peak = mag;
  }
  for (int off = kWarp / 2; off > 0; off >>= 1) {
    const A other = __shfl_xor_sync(0xffffffffu, peak, off);
    if (other > peak) peak = other;
  }
  if (!(peak > A(0)) || !(peak <= huge_a(A())) || s != s) return sqrt_a(s);  // 0, inf or nan
  A t = A(0);
  for (int64_t j = lane; j < d; j += kWarp) {
    const A v = value(j) / peak;
    t = madd(t, v, v);
  }
  return peak * sqrt_a(warp_sum(t));
}

// Group of a row: from labels (out of range -> -1) or from a CSR pointer (binary search).
struct RowGroups {
  const void* labels;
  bool labels_int32;
  const int64_t* offsets;
  int64_t k, n;

  __device__ int64_t operator()(int64_t row) const {
    if (labels) {
      const int64_t g = labels_int32 ? int64_t(static_cast<const int32_t*>(labels)[row])
                                     : static_cast<const int64_t*>(labels)[row];
      return (g >= 0 && g < k) ? g : -1;
    }
    int64_t lo = 0, hi = k;  // first g in [0, k) with offsets[g] > row
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (offsets[mid] <= row) lo = mid + 1;
      else hi = mid;
    }
    const int64_t g = lo - 1;
    if (g < 0) return -1;
    int64_t r0 = offsets[g], r1 = offsets[g + 1];
    r0 = r0 < 0 ? 0 : (r0 > n ? n : r0);
    r1 = r1 < r0 ? r0 : (r1 > n ? n : r1);
    return (row >= r0 && row < r1) ? g : -1;
  }
};

// CSR segments: rows of group g are row(j) for j in [offsets[g], offsets[g+1]) (clamped to [0, n]).
struct Seg {
  const int64_t* offsets;
  const int64_t* perm;  // or null (identity)
  int64_t n;

  __device__ void range(int64_t g, int64_t& r0, int64_t& r1) const {
    r0 = offsets[g];
    r1 = offsets[g + 1];
    r0 = r0 < 0 ? 0 : (r0 > n ? n : r0);
    r1 = r1 < r0 ? r0 : (r1 > n ? n : r1);
  }
  __device__ int64_t row(int64_t j) const { return perm ? perm[j] : j; }
};

// The contiguous run of a segment's rows handled by row slice `slice` of `slices`.
__device__ __forceinline__ void slice_range(int64_t r0, int64_t r1, int slice, int slices, int64_t& a0, int64_t& a1) {
  const int64_t len = (r1 - r0 + slices - 1) / slices;
  a0 = r0 + slice * len;
  a1 = a0 + len;
  if (a0 > r1) a0 = r1;
  if (a1 > r1) a1 = r1;
}

// ---- forward kernels ----------------------------------------------------------------------------

// rn[i] = max(||x_i||, eps); one warp per row.
template <class T, class A>
__global__ void __launch_bounds__(kBlock) row_norms_kernel(const T* x, int64_t n, int64_t d, A eps, A* rn) {
  const int lane = threadIdx.x % kWarp;
  const int64_t wpb = blockDim.x / kWarp, stride = int64_t(gridDim.x) * wpb;
  for (int64_t row = int64_t(blockIdx.x) * wpb + threadIdx.x / kWarp; row < n; row += stride) {
    const T* xr = x + row * d;
    const A norm = warp_norm<A>(d, lane, [&](int64_t j) { return load<T, A>(xr, j); });
    if (lane == 0) rn[row] = clamp_norm(norm, eps);
  }
}

// Unsorted labels, sum/mean: acc[g, c] += w_i x_ic with one atomic per run of equal labels.
// Block = one column tile (blockDim.x columns) of one tile of kScatterRows rows. Lane 0 of column
// tile 0 also accumulates counts and weight sums.
template <class T, class A>
__global__ void __launch_bounds__(kBlock)
    scatter_add_kernel(const T* x, int64_t n, int64_t d, RowGroups rg, const A* weights, const A* rn,
                       int64_t col_tiles, A* acc, int64_t* counts, A* wsum) {
  const int64_t row_tiles = (n + kScatterRows - 1) / kScatterRows;
  const int64_t total = row_tiles * col_tiles;
  for (int64_t t = blockIdx.x; t < total; t += gridDim.x) {
    const int64_t rt = t / col_tiles, ct = t % col_tiles;
    const int64_t c = ct * blockDim.x + threadIdx.x;
    const bool has_col = c < d;
    const bool lead = ct == 0 && threadIdx.x == 0;
    const int64_t r0 = rt * kScatterRows;
    const int64_t r1 = r0 + kScatterRows < n ? r0 + kScatterRows : n;
    int64_t cur = -1, run_n = 0;
    A run = A(0), run_w = A(0);
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t g = rg(row);
      if (g != cur) {
        if (cur >= 0) {
          if (has_col) atomicAdd(acc + cur * d + c, run);
          if (lead) {
            atomicAdd(reinterpret_cast<unsigned long long*>(counts + cur), static_cast<unsigned long long>(run_n));
            atomicAdd(wsum + cur, run_w);
          }
        }
        cur = g;
        run = A(0);
        run_w = A(0);
        run_n = 0;
      }
      if (g < 0) continue;
      const A w = weights ? weights[row] : A(1);
      if (has_col) run = madd(run, rn ? w / rn[row] : w, load<T, A>(x, row * d + c));
      if (lead) {
        run_w += w;
        ++run_n;
      }
    }
    if (cur >= 0) {
      if (has_col) atomicAdd(acc + cur * d + c, run);
      if (lead) {
        atomicAdd(reinterpret_cast<unsigned long long*>(counts + cur), static_cast<unsigned long long>(run_n));
        atomicAdd(wsum + cur, run_w);
      }
    }
  }
}

// out[r] = raw[r] / div[r] (when div: mean), then 'post': out_norm[r] = ||.||, out[r] /= max(||.||, eps);
// stored in the output dtype. One warp per row. raw may alias out (T == A): each element is read
// and then written by the same lane.
template <class T, class A>
__global__ void __launch_bounds__(kBlock)
    finalize_rows_kernel(const A* raw, const A* div, bool post, A eps, int64_t rows, int64_t d, T* out, A* out_norm) {
  const int lane = threadIdx.x % kWarp;
  const int64_t wpb = blockDim.x / kWarp, stride = int64_t(gridDim.x) * wpb;
  for (int64_t r = int64_t(blockIdx.x) * wpb + threadIdx.x / kWarp; r < rows; r += stride) {
    const A* src = raw + r * d;
    const A dv = div ? div[r] : A(1);
    A denom = A(1);
    if (post) {
      const A norm = warp_norm<A>(d, lane, [&](int64_t j) { return div ? safe_div(src[j], dv) : src[j]; });
      if (lane == 0) out_norm[r] = norm;
      denom = clamp_norm(norm, eps);
    }
    for (int64_t j = lane; j < d; j += kWarp) {
      A v = div ? safe_div(src[j], dv) : src[j];
      if (post) v = v / denom;
      from_acc(v, out + r * d + j);
    }
  }
}

// Segment sum / mean (and leave-one-out). Block (TX columns, TY row slices) per (group, column
// tile). Writes O (the output dtype, or the accumulation type when 'post' follows).
template <class T, class A, class O>
__global__ void __launch_bounds__(kBlock)
    segment_sum_kernel(const T* x, int64_t d, Seg seg, int64_t k, const A* weights, const A* rn, bool mean, bool loo,
                       int64_t col_tiles, O* out, int64_t* counts, A* wsum) {
  __shared__ A s_acc[kBlock];
  __shared__ A s_w[kMaxSlices];
  const int tx = threadIdx.x, ty = threadIdx.y, TX = blockDim.x, TY = blockDim.y;
  const int64_t total = k * col_tiles;
  for (int64_t t = blockIdx.x; t < total; t += gridDim.x) {
    const int64_t g = t / col_tiles, ct = t % col_tiles;
    const int64_t c = ct * TX + tx;
    const bool has_col = c < d;
    int64_t r0, r1, a0, a1;
    seg.range(g, r0, r1);
    slice_range(r0, r1, ty, TY, a0, a1);
    A acc = A(0), wpart = A(0);
    for (int64_t j = a0; j < a1; ++j) {
      const int64_t row = seg.row(j);
      const A w = weights ? weights[row] : A(1);
      wpart += w;
      if (has_col) acc = madd(acc, rn ? w / rn[row] : w, load<T, A>(x, row * d + c));
    }
    s_acc[ty * TX + tx] = acc;
    if (tx == 0) s_w[ty] = wpart;
    __syncthreads();
    A S = s_acc[tx], W = s_w[0];
    for (int y = 1; y < TY; ++y) {
      S += s_acc[y * TX + tx];
      W += s_w[y];
    }
    __syncthreads();  // shared memory is reused by the next tile
    const int64_t cnt = r1 - r0;
    if (tx == 0 && ty == 0 && ct == 0) {
      counts[g] = cnt;
      wsum[g] = W;
    }
    if (!has_col) continue;
    if (!loo) {
      if (ty == 0) from_acc(mean ? safe_div(S, W) : S, out + g * d + c);
      continue;
    }
    for (int64_t j = a0; j < a1; ++j) {
      const int64_t row = seg.row(j);
      const A w = weights ? weights[row] : A(1);
      const A own = mul_rn(rn ? w / rn[row] : w, load<T, A>(x, row * d + c));
      from_acc(loo_value(S, own, W - w, cnt == 1, mean), out + row * d + c);
    }
  }
}

// Segment amax / amin with the row of the extreme (ties: lowest row; NaN wins and stays).
template <class T, class A, class O>
__global__ void __launch_bounds__(kBlock)
    segment_extreme_kernel(const T* x, int64_t d, Seg seg, int64_t k, const A* rn, bool is_max, int64_t col_tiles,
                           O* out, int64_t* counts, A* wsum, int64_t* arg) {
  __shared__ A s_best[kBlock];
  __shared__ int64_t s_arg[kBlock];
  const int tx = threadIdx.x, ty = threadIdx.y, TX = blockDim.x, TY = blockDim.y;
  const int64_t total = k * col_tiles;
  for (int64_t t = blockIdx.x; t < total; t += gridDim.x) {
    const int64_t g = t / col_tiles, ct = t % col_tiles;
    const int64_t c = ct * TX + tx;
    const bool has_col = c < d;
    int64_t r0, r1, a0, a1;
    seg.range(g, r0, r1);
    slice_range(r0, r1, ty, TY, a0, a1);
    A best = A(0);
    int64_t barg = -1;
    if (has_col) {
      for (int64_t j = a0; j < a1; ++j) {
        const int64_t row = seg.row(j);
        const A xv = load<T, A>(x, row * d + c);
        const A v = rn ? xv / rn[row] : xv;
        if (barg < 0 || extreme_replaces(best, v, is_max)) {
          best = v;
          barg = row;
        }
      }
    }
    s_best[ty * TX + tx] = best;
    s_arg[ty * TX + tx] = barg;
    __syncthreads();
    if (ty == 0) {
      for (int y = 1; y < TY; ++y) {  // slices hold increasing rows: combine in slice order
        const int64_t a = s_arg[y * TX + tx];
        if (a >= 0 && (barg < 0 || extreme_replaces(best, s_best[y * TX + tx], is_max))) {
          best = s_best[y * TX + tx];
          barg = a;
        }
      }
      if (has_col) {
        from_acc(best, out + g * d + c);
        arg[g * d + c] = barg;
      }
      if (tx == 0 && ct == 0) {
        counts[g] = r1 - r0;
        wsum[g] = static_cast<A>(r1 - r0);
      }
    }
    __syncthreads();
  }
}

// ---- CSR construction (stable) ------------------------------------------------------------------

__global__ void __launch_bounds__(kBlock) make_keys_kernel(RowGroups rg, int64_t n, uint64_t* keys, int64_t* rows) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t g = rg(i);
    keys[i] = static_cast<uint64_t>(g >= 0 ? g : rg.k);  // out of range: sorted past the last group
    rows[i] = i;
  }
}

// offsets[g] = first position of key >= g in the sorted keys, g in [0, k].
__global__ void __launch_bounds__(kBlock) offsets_kernel(const uint64_t* sorted, int64_t n, int64_t k, int64_t* offsets) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g <= k; g += stride) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (sorted[mid] < static_cast<uint64_t>(g)) lo = mid + 1;
      else hi = mid;
    }
    offsets[g] = lo;
  }
}

// CSR view of the problem: the caller's offsets, or a stable sort of the labels (radix sort on
// (label, row) keeps rows of a group in increasing order).
struct Csr {
  DeviceBuffer offsets_buf, perm_buf;
  Seg seg{};
};

void build_csr(const Problem& p, cudaStream_t stream, Csr& csr) {
  csr.seg.n = p.n;
  if (p.offsets) {
    csr.seg.offsets = p.offsets;
    csr.seg.perm = nullptr;
    return;
  }
  int64_t* offsets = csr.offsets_buf.alloc_n<int64_t>(p.k + 1, stream);
  csr.seg.offsets = offsets;
  if (p.n == 0) {
    check_cuda(cudaMemsetAsync(offsets, 0, sizeof(int64_t) * static_cast<size_t>(p.k + 1), stream), "cudaMemsetAsync");
    csr.seg.perm = nullptr;
    return;
  }
  int64_t* perm = csr.perm_buf.alloc_n<int64_t>(p.n, stream);
  csr.seg.perm = perm;
  DeviceBuffer keys_in, keys_out, rows_in, temp;
  uint64_t* kin = keys_in.alloc_n<uint64_t>(p.n, stream);
  uint64_t* kout = keys_out.alloc_n<uint64_t>(p.n, stream);
  int64_t* rin = rows_in.alloc_n<int64_t>(p.n, stream);
  const RowGroups rg{p.labels, p.labels_int32, nullptr, p.k, p.n};
  make_keys_kernel<<<grid_for(ceil_div(p.n, kBlock)), kBlock, 0, stream>>>(rg, p.n, kin, rin);
  check_launch("make_keys_kernel");
  int end_bit = 0;  // bits of k (the largest key)
  while (end_bit < 64 && (static_cast<uint64_t>(p.k) >> end_bit) != 0) ++end_bit;
  if (end_bit == 0) end_bit = 1;
  size_t temp_bytes = 0;
  check_cuda(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, kin, kout, rin, perm, p.n, 0, end_bit, stream),
             "cub::DeviceRadixSort::SortPairs (size)");
  void* tmp = temp.alloc(temp_bytes, stream);
  check_cuda(cub::DeviceRadixSort::SortPairs(tmp, temp_bytes, kin, kout, rin, perm, p.n, 0, end_bit, stream),
             "cub::DeviceRadixSort::SortPairs");
  offsets_kernel<<<grid_for(ceil_div(p.k + 1, kBlock)), kBlock, 0, stream>>>(kout, p.n, p.k, offsets);
  check_launch("offsets_kernel");
}

// Block shape of the segment kernels: TX columns (32/64/128, coalesced), TY row slices (about 8+
// rows each, up to kBlock threads). Depends on (n, k, d) only: same shape, same bits.
struct SegShape {
  dim3 block;
  int64_t col_tiles;
  unsigned grid;
};

SegShape seg_shape(int64_t n, int64_t k, int64_t d) {
  const int tx = d <= 32 ? 32 : (d <= 64 ? 64 : 128);
  const int64_t avg = k > 0 ? n / k : 0;
  int ty = 1;
  while (tx * ty * 2 <= kBlock && int64_t(ty) * 8 < avg) ty *= 2;
  SegShape s;
  s.block = dim3(static_cast<unsigned>(tx), static_cast<unsigned>(ty), 1);
  s.col_tiles = d > 0 ? ceil_div(d, tx) : 1;
  s.grid = grid_for(k * s.col_tiles);
  return s;
}

unsigned warp_rows_grid(int64_t rows) { return grid_for(ceil_div(rows, kBlock / kWarp)); }

// ---- backward kernels ---------------------------------------------------------------------------

template <class T, class A>
struct BwdParams {
  const T* x;
  const T* gout;
  const T* out;
  const A* out_norm;  // [rows], 'post'
  const A* weights;   // [n] or null
  const A* wsum;      // [k]
  const int64_t* arg;  // [k, d], amax/amin
  const A* proj;      // [rows] out . grad_out ('post')
  const A* dotq;      // mean + grad_w: [k] c . g' (not loo) or [n] o_i . Q_i (loo)
  const A* tsum;      // loo: [k, d] T = group sum of Q
  const A* usum;      // loo + mean + grad_w: [k] U = group sum of o . Q
  RowGroups rg;
  Seg seg;  // loo only (group sizes, row order)
  int64_t n, d, k;
  A eps;
  bool pre, post, mean, loo, extreme;
  T* grad_x;
  A* grad_w;
};

// Gradient w.r.t. the centroid before 'post' at element idx of an output row.
template <class T, class A>
__device__ __forceinline__ A unpost_at(const BwdParams<T, A>& a, int64_t idx, A proj, A norm) {
  const A g = load<T, A>(a.gout, idx);
  return a.post ? normalize_grad(g, load<T, A>(a.out, idx), proj, norm, a.eps) : g;
}

// Leave-one-out: the denominator B_i and whether o_i is a real (non-constant) output.
template <class T, class A>
__device__ __forceinline__ bool loo_row(const BwdParams<T, A>& a, int64_t g, int64_t row, A& denom) {
  int64_t r0, r1;
  a.seg.range(g, r0, r1);
  const A w = a.weights ? a.weights[row] : A(1);
  denom = a.mean ? a.wsum[g] - w : A(1);
  return r1 - r0 > 1 && denom != A(0);
}

// Per output row r (a group, or a row under loo): proj[r] = out_r . grad_out_r ('post'), and
// dotq[r] = unnormalized(out_r) . g'_r (divided by B_r under loo; 0 where o_r is constant).
template <class T, class A>
__global__ void __launch_bounds__(kBlock) backward_prep_kernel(BwdParams<T, A> a, int64_t rows, A* proj, A* dotq) {
  const int lane = threadIdx.x % kWarp;
  const int64_t d = a.d;
  const int64_t wpb = blockDim.x / kWarp, stride = int64_t(gridDim.x) * wpb;
  for (int64_t r = int64_t(blockIdx.x) * wpb + threadIdx.x / kWarp; r < rows; r += stride) {
    A pr = A(0), norm = A(0);
    if (a.post) {
      norm = a.out_norm[r];
      A s = A(0);
      for (int64_t j = lane; j < d; j += kWarp) s = madd(s, load<T, A>(a.out, r * d + j), load<T, A>(a.gout, r * d + j));
      pr = warp_sum(s);
      if (lane == 0) proj[r] = pr;
    }
    if (!dotq) continue;
    bool valid = true;
    A denom = A(1);
    if (a.loo) {
      const int64_t g = a.rg(r);
      valid = g >= 0 && loo_row(a, g, r, denom);
    }
    A s = A(0);
    if (valid) {
      const A scale = a.post ? clamp_norm(norm, a.eps) : A(1);
      for (int64_t j = lane; j < d; j += kWarp) {
        A q = unpost_at(a, r * d + j, pr, norm);
        if (a.loo && a.mean) q = q / denom;
        s = madd(s, load<T, A>(a.out, r * d + j) * scale, q);
      }
    }
    s = warp_sum(s);
    if (lane == 0) dotq[r] = s;
  }
}

// Leave-one-out: T[g, c] = sum of Q_i[c] over the group's rows, U[g] = sum of o_i . Q_i (row order,
// contiguous row slices combined in order). Same block layout as the forward segment kernels.
template <class T, class A>
__global__ void __launch_bounds__(kBlock) loo_sums_kernel(BwdParams<T, A> a, int64_t col_tiles, A* tsum, A* usum) {
  __shared__ A s_t[kBlock];
  __shared__ A s_u[kMaxSlices];
  const int tx = threadIdx.x, ty = threadIdx.y, TX = blockDim.x, TY = blockDim.y;
  const int64_t d = a.d, total = a.k * col_tiles;
  for (int64_t t = blockIdx.x; t < total; t += gridDim.x) {
    const int64_t g = t / col_tiles, ct = t % col_tiles;
    const int64_t c = ct * TX + tx;
    const bool has_col = c < d;
    int64_t r0, r1, a0, a1;
    a.seg.range(g, r0, r1);
    slice_range(r0, r1, ty, TY, a0, a1);
    A acc = A(0), u = A(0);
    for (int64_t j = a0; j < a1; ++j) {
      const int64_t row = a.seg.row(j);
      A denom;
      if (!loo_row(a, g, row, denom)) continue;
      if (has_col) {
        const A q = unpost_at(a, row * d + c, a.post ? a.proj[row] : A(0), a.post ? a.out_norm[row] : A(0));
        acc += a.mean ? q / denom : q;
      }
      if (a.dotq && tx == 0) u += a.dotq[row];
    }
    s_t[ty * TX + tx] = acc;
    if (tx == 0) s_u[ty] = u;
    __syncthreads();
    if (ty == 0) {
      A tot = s_t[tx], utot = s_u[0];
      for (int y = 1; y < TY; ++y) {
        tot += s_t[y * TX + tx];
        utot += s_u[y];
      }
      if (has_col) tsum[g * d + c] = tot;
      if (usum && tx == 0 && ct == 0) usum[g] = utot;
    }
    __syncthreads();
  }
}

// One warp per row i of x: grad_x[i] and grad_w[i] (see centroid_kernels.h backward_* for the math).
template <class T, class A>
__global__ void __launch_bounds__(kBlock) backward_rows_kernel(BwdParams<T, A> a) {
  const int lane = threadIdx.x % kWarp;
  const int64_t d = a.d;
  const int64_t wpb = blockDim.x / kWarp, stride = int64_t(gridDim.x) * wpb;
  for (int64_t i = int64_t(blockIdx.x) * wpb + threadIdx.x / kWarp; i < a.n; i += stride) {
    const int64_t g = a.rg(i);
    if (g < 0) {  // label out of range: no gradient
      if (a.grad_x)
        for (int64_t j = lane; j < d; j += kWarp) from_acc(A(0), a.grad_x + i * d + j);
      if (a.grad_w && lane == 0) a.grad_w[i] = A(0);
      continue;
    }
    const T* xr = a.x + i * d;
    const A w = a.weights ? a.weights[i] : A(1);
    A rn = A(1);
    if (a.pre) {
      rn = clamp_norm(warp_norm<A>(d, lane, [&](int64_t j) { return load<T, A>(xr, j); }), a.eps);
    }
    const int64_t src = a.loo ? i : g;  // row of grad_out / out feeding this row
    const A pr = a.post ? a.proj[src] : A(0);
    const A norm = a.post ? a.out_norm[src] : A(0);
    A scale = A(0), denom = A(1);
    bool valid = false;
    if (a.loo) {
      valid = loo_row(a, g, i, denom);
      scale = w;
    } else if (!a.extreme) {
      scale = a.mean ? safe_div(w, a.wsum[g]) : w;
    }
    // D_j: g'_j (group gradient before 'post'), or T_j - Q_ij under loo.
    auto dir = [&](int64_t j) -> A {
      if (a.loo) {
        A q = A(0);
        if (valid) {
          q = unpost_at(a, i * d + j, pr, norm);
          if (a.mean) q = q / denom;
        }
        return a.tsum[g * d + j] - q;
      }
      return unpost_at(a, g * d + j, pr, norm);
    };
    // Gradient w.r.t. the (normalized) row: scale * D_j, or D_j where this row holds the extreme.
    auto dxh_of = [&](int64_t j, A dv) -> A {
      if (a.extreme) return a.arg[g * d + j] == i ? dv : A(0);
      return scale * dv;
    };
    const bool want_w = a.grad_w != nullptr;
    const bool want_pre = a.pre && a.grad_x != nullptr;
    A xd = A(0), pdot = A(0);
    if (want_w || want_pre) {
      for (int64_t j = lane; j < d; j += kWarp) {
        const A xv = load<T, A>(xr, j);
        const A dv = dir(j);
        if (want_w) xd = madd(xd, xv, dv);
        if (want_pre) pdot = madd(pdot, xv / rn, dxh_of(j, dv));
      }
      xd = warp_sum(xd);
      pdot = warp_sum(pdot);
    }
    if (want_w && lane == 0) {
      const A xg = a.pre ? xd / rn : xd;
      A gw;
      if (!a.loo) {
        gw = a.mean ? safe_div(xg - a.dotq[g], a.wsum[g]) : xg;
      } else {
        gw = xg;
        if (a.mean) gw = gw - a.usum[g] + (valid ? a.dotq[i] : A(0));
      }
      a.grad_w[i] = gw;
    }
    if (a.grad_x) {
      for (int64_t j = lane; j < d; j += kWarp) {
        A v = dxh_of(j, dir(j));
        if (a.pre) v = normalize_grad(v, load<T, A>(xr, j) / rn, pdot, rn, a.eps);
        from_acc(v, a.grad_x + i * d + j);
      }
    }
  }
}

// ---- host orchestration -------------------------------------------------------------------------

void validate(const Problem& p) {
  if (p.dtype < DType::f32 || p.dtype > DType::bf16) fail("x: unknown dtype code");
  if (p.reduce < Reduce::sum || p.reduce > Reduce::amin) fail("reduce: unknown code");
  if (p.n < 0 || p.d < 0) fail("x: negative shape");
  if (p.k < 0) fail("num_groups must be >= 0, got " + std::to_string(p.k));
  if ((p.labels == nullptr) == (p.offsets == nullptr)) fail("index/offsets: give exactly one of them");
  if (p.n > 0 && p.d > 0 && p.x == nullptr) fail("x: null data");
  if (!(p.eps > 0.0) || p.eps > 1e300) fail("eps must be a positive finite number");
  if (p.normalize < 0 || p.normalize > 3) fail("normalize: unknown mode");
  const bool extreme = p.reduce == Reduce::amax || p.reduce == Reduce::amin;
  if (extreme && p.weights) fail("weights: not supported with reduce='amax'/'amin'");
  if (extreme && p.leave_one_out) fail("leave_one_out: supported with reduce='sum'/'mean' only");
}

template <class T, class A>
void row_norms(const Problem& p, A* rn, cudaStream_t stream) {
  if (p.n == 0) return;
  row_norms_kernel<T, A><<<warp_rows_grid(p.n), kBlock, 0, stream>>>(static_cast<const T*>(p.x), p.n, p.d,
                                                                      static_cast<A>(p.eps), rn);
  check_launch("row_norms_kernel");
}

template <class T, class A>
void finalize(const A* raw, const A* div, bool post, const Problem& p, int64_t rows, T* out, A* out_norm,
              cudaStream_t stream) {
  if (rows == 0) return;
  finalize_rows_kernel<T, A><<<warp_rows_grid(rows), kBlock, 0, stream>>>(raw, div, post, static_cast<A>(p.eps), rows,
                                                                           p.d, out, out_norm);
  check_launch("finalize_rows_kernel");
}

template <class T, class A, class O>
void launch_segment(const Problem& p, const Seg& seg, const A* rn, O* dst, const ForwardOutputs& o, cudaStream_t stream) {
  const SegShape s = seg_shape(p.n, p.k, p.d);
  if (p.k == 0) return;
  const T* x = static_cast<const T*>(p.x);
  A* wsum = static_cast<A*>(o.wsum);
  if (p.reduce == Reduce::sum || p.reduce == Reduce::mean) {
    segment_sum_kernel<T, A, O><<<s.grid, s.block, 0, stream>>>(x, p.d, seg, p.k, static_cast<const A*>(p.weights), rn,
                                                                p.reduce == Reduce::mean, p.leave_one_out, s.col_tiles,
                                                                dst, o.counts, wsum);
    check_launch("segment_sum_kernel");
  } else {
    segment_extreme_kernel<T, A, O><<<s.grid, s.block, 0, stream>>>(x, p.d, seg, p.k, rn, p.reduce == Reduce::amax,
                                                                    s.col_tiles, dst, o.counts, wsum, o.arg);
    check_launch("segment_extreme_kernel");
  }
}

template <class T, class A>
void forward_typed(const Problem& p, const ForwardOutputs& o, bool deterministic, cudaStream_t stream) {
  const bool pre = (p.normalize & kNormalizePre) != 0, post = (p.normalize & kNormalizePost) != 0;
  const bool sum_like = p.reduce == Reduce::sum || p.reduce == Reduce::mean;
  const int64_t rows = p.leave_one_out ? p.n : p.k;
  T* out = static_cast<T*>(o.out);
  A* out_norm = static_cast<A*>(o.out_norm);
  A* wsum = static_cast<A*>(o.wsum);

  DeviceBuffer rn_buf, raw_buf;
  A* rn = nullptr;
  if (pre && p.n > 0) {
    rn = rn_buf.alloc_n<A>(p.n, stream);
    row_norms<T, A>(p, rn, stream);
  }

  if (sum_like && !p.leave_one_out && !deterministic && p.labels) {
    // Fast path: run-merged atomics into an accumulation-type buffer, then finalize.
    A* acc;
    if constexpr (std::is_same_v<T, A>) acc = out;
    else acc = raw_buf.alloc_n<A>(p.k * p.d, stream);
    check_cuda(cudaMemsetAsync(acc, 0, sizeof(A) * static_cast<size_t>(p.k * p.d), stream), "cudaMemsetAsync");
    check_cuda(cudaMemsetAsync(o.counts, 0, sizeof(int64_t) * static_cast<size_t>(p.k), stream), "cudaMemsetAsync");
    check_cuda(cudaMemsetAsync(wsum, 0, sizeof(A) * static_cast<size_t>(p.k), stream), "cudaMemsetAsync");
    if (p.n > 0) {
      const int tx = p.d <= 32 ? 32 : (p.d <= 64 ? 64 : 128);
      const int64_t col_tiles = p.d > 0 ? ceil_div(p.d, tx) : 1;
      const int64_t blocks = ceil_div(p.n, kScatterRows) * col_tiles;
      const RowGroups rg{p.labels, p.labels_int32, nullptr, p.k, p.n};
      scatter_add_kernel<T, A><<<grid_for(blocks), tx, 0, stream>>>(static_cast<const T*>(p.x), p.n, p.d, rg,
                                                                    static_cast<const A*>(p.weights), rn, col_tiles,
                                                                    acc, o.counts, wsum);
      check_launch("scatter_add_kernel");
    }
    finalize<T, A>(acc, p.reduce == Reduce::mean ? wsum : nullptr, post, p, p.k, out, out_norm, stream);
    return;
  }

  Csr csr;
  build_csr(p, stream, csr);
  if (post) {
    // Reduce into the accumulation type, then normalize rows and convert.
    A* raw;
    if constexpr (std::is_same_v<T, A>) raw = out;
    else raw = raw_buf.alloc_n<A>(rows * p.d, stream);
    launch_segment<T, A, A>(p, csr.seg, rn, raw, o, stream);
    finalize<T, A>(raw, nullptr, true, p, rows, out, out_norm, stream);
  } else {
    launch_segment<T, A, T>(p, csr.seg, rn, out, o, stream);
  }
}

template <class T, class A>
void backward_typed(const Problem& p, const BackwardInputs& in, const BackwardOutputs& o, cudaStream_t stream) {
  const bool pre = (p.normalize & kNormalizePre) != 0, post = (p.normalize & kNormalizePost) != 0;
  const bool extreme = p.reduce == Reduce::amax || p.reduce == Reduce::amin;
  const bool mean = p.reduce == Reduce::mean;
  const int64_t rows = p.leave_one_out ? p.n : p.k;
  A* grad_w = extreme ? nullptr : static_cast<A*>(o.grad_w);  // amax/amin: no weights, no grad_w
  if (o.grad_x == nullptr && grad_w == nullptr) return;
  if (p.n == 0) return;

  BwdParams<T, A> a{};
  a.x = static_cast<const T*>(p.x);
  a.gout = static_cast<const T*>(in.grad_out);
  a.out = static_cast<const T*>(in.out);
  a.out_norm = static_cast<const A*>(in.out_norm);
  a.weights = static_cast<const A*>(p.weights);
  a.wsum = static_cast<const A*>(in.wsum);
  a.arg = in.arg;
  a.rg = RowGroups{p.labels, p.labels_int32, p.offsets, p.k, p.n};
  a.n = p.n;
  a.d = p.d;
  a.k = p.k;
  a.eps = static_cast<A>(p.eps);
  a.pre = pre;
  a.post = post;
  a.mean = mean;
  a.loo = p.leave_one_out;
  a.extreme = extreme;
  a.grad_x = static_cast<T*>(o.grad_x);
  a.grad_w = grad_w;

  Csr csr;
  if (p.leave_one_out) {
    build_csr(p, stream, csr);
    a.seg = csr.seg;
  }
  DeviceBuffer proj_buf, dotq_buf, tsum_buf, usum_buf;
  A* proj = post && rows > 0 ? proj_buf.alloc_n<A>(rows, stream) : nullptr;
  A* dotq = mean && grad_w && rows > 0 ? dotq_buf.alloc_n<A>(rows, stream) : nullptr;
  if (proj || dotq) {
    backward_prep_kernel<T, A><<<warp_rows_grid(rows), kBlock, 0, stream>>>(a, rows, proj, dotq);
    check_launch("backward_prep_kernel");
  }
  a.proj = proj;
  a.dotq = dotq;
  if (p.leave_one_out && p.k > 0) {
    A* tsum = tsum_buf.alloc_n<A>(p.k * p.d, stream);
    A* usum = dotq ? usum_buf.alloc_n<A>(p.k, stream) : nullptr;
    const SegShape s = seg_shape(p.n, p.k, p.d);
    loo_sums_kernel<T, A><<<s.grid, s.block, 0, stream>>>(a, s.col_tiles, tsum, usum);
    check_launch("loo_sums_kernel");
    a.tsum = tsum;
    a.usum = usum;
  }
  backward_rows_kernel<T, A><<<warp_rows_grid(p.n), kBlock, 0, stream>>>(a);
  check_launch("backward_rows_kernel");
}

}  // namespace

void forward(const Problem& p, const ForwardOutputs& o, bool deterministic, cudaStream_t stream) {
  validate(p);
  const int64_t rows = p.leave_one_out ? p.n : p.k;
  const bool extreme = p.reduce == Reduce::amax || p.reduce == Reduce::amin;
  if (p.k == 0) return;  // no groups: nothing to write (every leave-one-out label is out of range)
  if (o.counts == nullptr) fail("counts: null output");
  if (o.wsum == nullptr) fail("wsum: null output");
  if (rows > 0 && p.d > 0 && o.out == nullptr) fail("out: null output");
  if (extreme && p.d > 0 && o.arg == nullptr) fail("arg: required for amax/amin");
  if ((p.normalize & kNormalizePost) && rows > 0 && o.out_norm == nullptr) fail("out_norm: required for 'post'");
  if (p.n > 0 && p.labels == nullptr && p.offsets == nullptr) fail("index/offsets: null");
  switch (p.dtype) {
    case DType::f32: return forward_typed<float, float>(p, o, deterministic, stream);
    case DType::f64: return forward_typed<double, double>(p, o, deterministic, stream);
    case DType::f16: return forward_typed<half_t, float>(p, o, deterministic, stream);
    case DType::bf16: return forward_typed<bf16_t, float>(p, o, deterministic, stream);
  }
}

void backward(const Problem& p, const BackwardInputs& in, const BackwardOutputs& o, bool deterministic,
              cudaStream_t stream) {
  (void)deterministic;  // the backward has no atomics: always run-to-run identical
  validate(p);
  const bool extreme = p.reduce == Reduce::amax || p.reduce == Reduce::amin;
  const int64_t rows = p.leave_one_out ? p.n : p.k;
  if (extreme && p.k > 0 && p.d > 0 && in.arg == nullptr) fail("arg: required for amax/amin backward");
  if ((p.normalize & kNormalizePost) && rows > 0 && in.out_norm == nullptr) fail("out_norm: required for 'post' backward");
  if (!extreme && in.wsum == nullptr) fail("wsum: required for sum/mean backward");
  if (rows > 0 && p.d > 0 && (in.grad_out == nullptr || in.out == nullptr)) fail("grad_out/out: null input");
  switch (p.dtype) {
    case DType::f32: return backward_typed<float, float>(p, in, o, stream);
    case DType::f64: return backward_typed<double, double>(p, in, o, stream);
    case DType::f16: return backward_typed<half_t, float>(p, in, o, stream);
    case DType::bf16: return backward_typed<bf16_t, float>(p, in, o, stream);
  }
}

}  // namespace fastemb::centroid::cuda
