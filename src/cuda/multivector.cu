// CUDA kernels of the multi-vector family, mirroring the CPU kernels (src/cpp/multivector/multivector.h)
// bit for bit. Per-element math from multivector/multivector_math.h and common/rounding.h (shared with
// the CPU): the SimHash signs and sketch entries of the counter-based generator, add_rn / div_rn, max_rn;
// dot products are __fmaf_rn chains over the dimensions in increasing order (the CPU's fma chains).
//
//   maxsim:      one block per (query set, document set) pair (grid-stride). The document set goes
//                through shared memory in tiles of rows; thread t owns query token i0 + t and keeps its
//                running max (rows in order); the maxima are summed in row order by thread 0.
//   muvera_fde:  one block per token set (grid-stride), scratch per block in global memory: the SimHash
//                bucket ids (one thread per (token, repetition), hyperplane signs from a table built
//                once per call), then per repetition the bucket counts and the fill token (one thread
//                per bucket, scanning the tokens in row order), the bucket sums (one thread per (bucket,
//                coordinate), tokens in row order), the inner count sketch (one thread per (bucket,
//                column), the padded column lists of the CPU), the division, and the final count sketch
//                (one thread per output column, its entries in increasing order).
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_util.cuh"
#include "multivector/multivector.h"
#include "multivector/multivector_math.h"
#include "multivector/multivector_tables.h"
#include "multivector/multivector_validate.h"
#include "multivector_cuda.cuh"

namespace fastemb::multivector::cuda {
namespace {

using cuda_util::ceil_div;
using cuda_util::check_cuda;
using cuda_util::check_launch;
using cuda_util::DeviceBuffer;
using cuda_util::grid_for;

constexpr int kBlock = 128;
constexpr int64_t kTileFloats = 8192;  // 32 KB of document rows in shared memory per maxsim block

__device__ __forceinline__ int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

struct Sets {
  const float* x;
  const int64_t* begin;
  const int64_t* end;
  int64_t rows, n;
};

__device__ __forceinline__ void set_bounds(const Sets& s, int64_t i, int64_t* b, int64_t* e) {
  *b = clamp64(s.begin[i], 0, s.rows);
  *e = clamp64(s.end[i], *b, s.rows);
}

// ---- MaxSim ------------------------------------------------------------------------------------------

__global__ void __launch_bounds__(kBlock) maxsim_kernel(Sets q, Sets d, int64_t dim, int64_t tile_rows, float* out) {
  extern __shared__ float smem[];  // [tile_rows * dim] document rows, then [kBlock] maxima
  float* tile = smem;
  float* maxima = smem + tile_rows * dim;
  const int tid = threadIdx.x;
  const int64_t pairs = q.n * d.n;
  for (int64_t pair = blockIdx.x; pair < pairs; pair += gridDim.x) {
    const int64_t qs = pair / d.n, ds = pair % d.n;
    int64_t qb, qe, db, de;
    set_bounds(q, qs, &qb, &qe);
    set_bounds(d, ds, &db, &de);
    float sum = 0.f;  // thread 0
    if (qe > qb && de > db) {
      for (int64_t i0 = qb; i0 < qe; i0 += kBlock) {
        const int64_t i = i0 + tid;
        const float* qi = q.x + (i < qe ? i : qb) * dim;
        float m = -__int_as_float(0x7f800000);  // -inf
        for (int64_t j0 = db; j0 < de; j0 += tile_rows) {
          const int64_t rows = (de - j0) < tile_rows ? (de - j0) : tile_rows;
          __syncthreads();
          for (int64_t e = tid; e < rows * dim; e += kBlock) tile[e] = d.x[j0 * dim + e];
          __syncthreads();
          if (i < qe)
            for (int64_t r = 0; r < rows; ++r) {
              float acc = 0.f;
              for (int64_t k = 0; k < dim; ++k) acc = __fmaf_rn(qi[k], tile[r * dim + k], acc);
              m = max_rn(m, acc);
            }
        }
        maxima[tid] = m;
        __syncthreads();
        if (tid == 0) {
          const int64_t cnt = (qe - i0) < kBlock ? (qe - i0) : kBlock;
          for (int64_t t = 0; t < cnt; ++t) sum = add_rn(sum, maxima[t]);
        }
        __syncthreads();
      }
    }
    if (tid == 0) out[pair] = sum;
  }
}

// ---- MUVERA ------------------------------------------------------------------------------------------

__global__ void simhash_table_kernel(uint64_t key, int64_t hyperplanes, int64_t dim, float* g) {
  const int64_t total = hyperplanes * dim;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x)
    g[e] = simhash_sign(key, static_cast<uint64_t>(e / dim), static_cast<uint64_t>(dim), static_cast<uint64_t>(e % dim));
}

struct FdeArgs {
  Sets x;
  int64_t dim, repetitions, nb, p, out_dim, raw_dim, max_tokens;
  int k_sim;
  bool document, fill;
  const float* g;             // [R * k_sim][dim] SimHash signs
  const int32_t* inner;       // [R][p][inner_len] padded column lists, or null
  int64_t inner_len;
  const int64_t* final_start; // [final_dim + 1], or null
  const int64_t* final_list;  // (i << 1) | negative per column, i increasing
  int64_t final_dim;
  // per-block scratch
  uint32_t* ids;   // [max_tokens * R]
  int32_t* cnt;    // [nb]
  int32_t* fill_t; // [nb]
  float* s;        // [nb * (dim + 1)]
  float* raw;      // [raw_dim] (final sketch only)
  float* out;
};

__global__ void __launch_bounds__(kBlock) fde_kernel(FdeArgs a) {
  const int tid = threadIdx.x;
  const int64_t dim = a.dim, R = a.repetitions, nb = a.nb, p = a.p, sd = dim + 1;
  uint32_t* ids = a.ids + blockIdx.x * a.max_tokens * R;
  int32_t* cnt = a.cnt + blockIdx.x * nb;
  int32_t* fill_t = a.fill_t + blockIdx.x * nb;
  float* s = a.s + blockIdx.x * nb * sd;
  float* raw = a.final_dim > 0 ? a.raw + blockIdx.x * a.raw_dim : nullptr;
  for (int64_t set = blockIdx.x; set < a.x.n; set += gridDim.x) {
    int64_t b0, e0;
    set_bounds(a.x, set, &b0, &e0);
    const int64_t n = (e0 - b0) < a.max_tokens ? (e0 - b0) : a.max_tokens;
    const float* xs = a.x.x + b0 * dim;
    float* fde = raw ? raw : a.out + set * a.out_dim;
    // SimHash bucket ids: z = fma chain over the dimensions with +-1 signs; bit b = z > 0.
    for (int64_t e = tid; e < n * R; e += kBlock) {
      const int64_t t = e / R, r = e % R;
      uint32_t id = 0;
      for (int b = 0; b < a.k_sim; ++b) {
        const float* g = a.g + (r * a.k_sim + b) * dim;
        float z = 0.f;
        for (int64_t j = 0; j < dim; ++j) z = __fmaf_rn(xs[t * dim + j], g[j], z);
        id |= (z > 0.f ? 1u : 0u) << b;
      }
      ids[r * n + t] = id;
    }
    __syncthreads();
    for (int64_t r = 0; r < R; ++r) {
      const uint32_t* idr = ids + r * n;
      float* block = fde + r * nb * p;
      for (int64_t b = tid; b < nb; b += kBlock) {
        int32_t c = 0;
        for (int64_t t = 0; t < n; ++t) c += idr[t] == static_cast<uint32_t>(b) ? 1 : 0;
        int32_t best_t = -1;
        if (c == 0 && a.fill && n > 0) {  // the nearest token in Hamming distance of the ids, ties: the first
          int best_d = 64;
          for (int64_t t = 0; t < n; ++t) {
            const int dist = popcount32(idr[t] ^ static_cast<uint32_t>(b));
            if (dist < best_d) {
              best_d = dist;
              best_t = static_cast<int32_t>(t);
            }
          }
        }
        cnt[b] = c;
        fill_t[b] = best_t;
        s[b * sd + dim] = 0.f;  // the zero row of the padded sketch lists
      }
      __syncthreads();
      // Bucket sums, tokens in row order (the fill token alone in an empty bucket).
      for (int64_t e = tid; e < nb * dim; e += kBlock) {
        const int64_t b = e / dim, j = e % dim;
        const int32_t c = cnt[b], f = fill_t[b];
        float acc = 0.f;
        if (c > 0) {
          for (int64_t t = 0; t < n; ++t)
            if (idr[t] == static_cast<uint32_t>(b)) acc = add_rn(acc, xs[t * dim + j]);
        } else if (f >= 0) {
          acc = add_rn(acc, xs[int64_t(f) * dim + j]);
        }
        const float cf = c > 0 ? static_cast<float>(c) : 1.f;
        if (p == dim && a.inner == nullptr) {
          block[b * dim + j] = (a.document && (c > 0 || f >= 0)) ? div_rn(acc, cf) : acc;
        } else {
          s[b * sd + j] = acc;
        }
      }
      __syncthreads();
      if (a.inner != nullptr) {
        for (int64_t e = tid; e < nb * p; e += kBlock) {
          const int64_t b = e / p, o = e % p;
          const int32_t* list = a.inner + (r * p + o) * a.inner_len;
          float acc = 0.f;
          for (int64_t m = 0; m < a.inner_len; ++m) {
            const int32_t en = list[m];
            const float v = s[b * sd + (en >> 1)];
            acc = add_rn(acc, (en & 1) ? -v : v);
          }
          if (a.document) acc = div_rn(acc, cnt[b] > 0 ? static_cast<float>(cnt[b]) : 1.f);
          block[b * p + o] = acc;
        }
        __syncthreads();
      }
    }
    if (raw) {
      __syncthreads();
      for (int64_t o = tid; o < a.final_dim; o += kBlock) {
        float acc = 0.f;
        for (int64_t m = a.final_start[o]; m < a.final_start[o + 1]; ++m) {
          const int64_t en = a.final_list[m];
          const float v = raw[en >> 1];
          acc = add_rn(acc, (en & 1) ? -v : v);
        }
        a.out[set * a.out_dim + o] = acc;
      }
    }
    __syncthreads();
  }
}

void check_device_sets(const char* name, const TokenSets& t) {
  const std::string n(name);
  if (t.dim < 1) fail(n + ": the token dimension must be >= 1, got " + std::to_string(t.dim));
  if (t.rows < 0 || t.n < 0) fail(n + ": negative shape");
  if (t.rows > 0 && t.x == nullptr) fail(n + ": null data");
  if (t.n > 0 && (t.begin == nullptr || t.end == nullptr)) fail(n + ": null set bounds");
}

template <class T>
T* upload(DeviceBuffer& buf, const std::vector<T>& v, cudaStream_t stream) {
  T* p = buf.alloc_n<T>(static_cast<int64_t>(v.size()), stream);
  if (!v.empty())
    check_cuda(cudaMemcpyAsync(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
  return p;
}

}  // namespace

void maxsim(const TokenSets& q, const TokenSets& d, float* out, cudaStream_t stream) {
  check_device_sets("q", q);
  check_device_sets("d", d);
  if (q.dim != d.dim) fail("d: token dimension " + std::to_string(d.dim) + " does not match q's " + std::to_string(q.dim));
  if (q.n == 0 || d.n == 0) return;
  if (out == nullptr) fail("out: null pointer");
  const int64_t dim = q.dim;
  const int64_t tile_rows = dim <= kTileFloats ? kTileFloats / dim : 1;
  const size_t smem = static_cast<size_t>(tile_rows * dim + kBlock) * sizeof(float);
  if (smem > 48 * 1024) {
    check_cuda(cudaFuncSetAttribute(maxsim_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
               "cudaFuncSetAttribute (dim too large for shared memory?)");
  }
  const Sets qs{q.x, q.begin, q.end, q.rows, q.n}, ds{d.x, d.begin, d.end, d.rows, d.n};
  maxsim_kernel<<<grid_for(q.n * d.n), kBlock, smem, stream>>>(qs, ds, dim, tile_rows, out);
  check_launch("maxsim_kernel");
}

void muvera_fde(const FdeSpec& s, const TokenSets& x, int64_t max_tokens, float* out, cudaStream_t stream) {
  check_device_sets("x", x);
  check_spec(s, x.dim);
  if (max_tokens < 0) fail("max_tokens must be >= 0, got " + std::to_string(max_tokens));
  if (x.n == 0) return;
  if (out == nullptr) fail("out: null pointer");
  const int64_t dim = x.dim, R = s.repetitions, nb = int64_t(1) << s.k_sim;
  const int64_t hyperplanes = R * s.k_sim;
  FdeArgs a{};
  a.x = Sets{x.x, x.begin, x.end, x.rows, x.n};
  a.dim = dim;
  a.repetitions = R;
  a.nb = nb;
  a.p = fde_block_dim(s, dim);
  a.out_dim = fde_dim(s, dim);
  a.raw_dim = fde_raw_dim(s, dim);
  a.max_tokens = max_tokens;
  a.k_sim = s.k_sim;
  a.document = s.document;
  a.fill = s.document && s.fill_empty && s.k_sim > 0;
  a.final_dim = s.final_dim;
  DeviceBuffer g_buf, inner_buf, start_buf, list_buf, ids_buf, cnt_buf, fill_buf, s_buf, raw_buf;
  float* g = g_buf.alloc_n<float>(hyperplanes * dim, stream);
  if (hyperplanes > 0) {
    simhash_table_kernel<<<grid_for(ceil_div(hyperplanes * dim, 256)), 256, 0, stream>>>(
        stream_key(s.seed, kStreamSimHash), hyperplanes, dim, g);
    check_launch("simhash_table_kernel");
  }
  a.g = g;
  if (s.d_proj > 0) {
    a.inner = upload(inner_buf, inner_sketch_lists(s, dim, &a.inner_len), stream);
  }
  if (s.final_dim > 0) {
    std::vector<int64_t> starts;
    const std::vector<int64_t> lists =
        final_sketch_lists(sketch_table(s.seed, kStreamFinal, a.raw_dim, s.final_dim), s.final_dim, &starts);
    a.final_start = upload(start_buf, starts, stream);
    a.final_list = upload(list_buf, lists, stream);
  }
  // Blocks: at most 1024, and per-block scratch within ~256 MB.
  const int64_t per_block = (max_tokens * R + 2 * nb) * 4 + nb * (dim + 1) * 4 + (s.final_dim > 0 ? a.raw_dim * 4 : 0);
  int64_t blocks = x.n < 1024 ? x.n : 1024;
  const int64_t budget = int64_t(256) << 20;
  if (blocks * per_block > budget) blocks = budget / per_block > 0 ? budget / per_block : 1;
  a.ids = ids_buf.alloc_n<uint32_t>(blocks * max_tokens * R, stream);
  a.cnt = cnt_buf.alloc_n<int32_t>(blocks * nb, stream);
  a.fill_t = fill_buf.alloc_n<int32_t>(blocks * nb, stream);
  a.s = s_buf.alloc_n<float>(blocks * nb * (dim + 1), stream);
  a.raw = s.final_dim > 0 ? raw_buf.alloc_n<float>(blocks * a.raw_dim, stream) : nullptr;
  a.out = out;
  fde_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, stream>>>(a);
  check_launch("fde_kernel");
}

}  // namespace fastemb::multivector::cuda
