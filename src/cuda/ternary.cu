// CUDA kernels of the ternary (1.58-bit) family, reading the same I2 packed layout as the CPU
// (src/cpp/ternary/ternary.h) and sharing its per-element math (ternary/ternary_math.h):
//
// quantize_kernel: one block per activation row (grid-stride): block max of |x| (converted to
//   float32 by load_activation), s = activation_scale (by the ScaleRule), xq = quantize_value, zero padding to kp.
// dp4a_kernel (m <= 8 per pass): one warp per output column j; lane l reads 32-bit words l, l+32, ...
//   of the packed row (coalesced). Word t/4 of block b holds, at bits 2s, the 4 weights
//   b*256 + 64s + t .. +3, turned into 4 signed bytes by word_weights and multiplied with the
//   activation word at the same k by __dp4a (sm_61+). Lane sums are reduced with __shfl_xor_sync in
//   a fixed order; the int32 result is exact, so it equals the CPU's.
// wmma_kernel (m > 8): a 64 x 64 output tile per 128-thread block; per packed block (256 k) the
//   64 activation rows are staged to shared memory and the 64 weight rows decoded there to signed
//   bytes (col-major B), then 4 warps (2 x 2, 32 x 32 each) run int8 WMMA 16x16x16 (sm_72+) with
//   int32 accumulators; the tile goes through shared memory to the epilogue (int8_output).
// float_kernel: one warp per output column, 4 activation rows per pass, float32 x; fixed-order
//   lane sums and shuffle reduction (deterministic; agrees with the CPU within float rounding).
//
// Unaligned pointers (not 4 / 16 bytes) are handled by byte loads. Grids are capped and kernels
// loop over the rest; indexing is int64.
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_util.cuh"
#include "ternary/ternary.h"
#include "ternary/ternary_math.h"
#include "ternary/ternary_validate.h"
#include "ternary_cuda.cuh"

namespace fastemb::ternary::cuda {
namespace {

using cuda_util::ceil_div;
using cuda_util::check_cuda;

constexpr int kWarp = 32;
constexpr int kQuantThreads = 256;
constexpr int kColsPerBlock = 8;  // warps per block in the dp4a / float kernels
constexpr int kFloatRows = 4;
constexpr int kTileM = 64, kTileN = 64, kTileK = 256;  // WMMA kernel tile
constexpr int kWmmaThreads = 128;
constexpr int kPitch = kTileK + 16;  // shared row pitch in bytes (multiple of 16 for wmma ldm)
constexpr int kCPitch = kTileN + 4;  // int32 staging pitch
constexpr int64_t kMaxGridX = int64_t(1) << 20;


int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// 32-bit little-endian load; byte loads when p is not 4-byte aligned.
__device__ __forceinline__ uint32_t ld32(const void* p, bool aligned) {
  if (aligned) return __ldg(static_cast<const unsigned int*>(p));
  const uint8_t* b = static_cast<const uint8_t*>(p);
  return static_cast<uint32_t>(__ldg(b)) | (static_cast<uint32_t>(__ldg(b + 1)) << 8) |
         (static_cast<uint32_t>(__ldg(b + 2)) << 16) | (static_cast<uint32_t>(__ldg(b + 3)) << 24);
}

__device__ __forceinline__ int32_t dot4(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 610
  return __dp4a(static_cast<int>(a), static_cast<int>(b), 0);
#else
  return dot4_s8(a, b);
#endif
}

// ---- quantize_activations -----------------------------------------------------------------------

__global__ void __launch_bounds__(kQuantThreads)
    quantize_kernel(const void* x, int dt, int64_t m, int64_t k, int64_t kp, float eps, int rule, int8_t* xq,
                    float* x_scale) {
  __shared__ float red[kQuantThreads / kWarp];
  __shared__ float s_shared;
  for (int64_t i = blockIdx.x; i < m; i += gridDim.x) {
    float amax = 0.0f;
    for (int64_t c = threadIdx.x; c < k; c += blockDim.x) amax = fmaxf(amax, fabsf(load_activation(x, dt, i * k + c)));
    for (int o = kWarp / 2; o > 0; o /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if ((threadIdx.x & (kWarp - 1)) == 0) red[threadIdx.x / kWarp] = amax;
    __syncthreads();
    if (threadIdx.x == 0) {
      float v = red[0];
      for (int w = 1; w < kQuantThreads / kWarp; ++w) v = fmaxf(v, red[w]);
      const float s = activation_scale(v, eps, rule);
      s_shared = s;
      x_scale[i] = s;
    }
    __syncthreads();
    const float s = s_shared;
    for (int64_t c = threadIdx.x; c < kp; c += blockDim.x)
      xq[i * kp + c] = c < k ? quantize_value(load_activation(x, dt, i * k + c), s) : int8_t(0);
    __syncthreads();  // red / s_shared are reused by the next row
  }
}

// ---- int8 path, small m: decode + dp4a --------------------------------------------------------------

struct Int8Args {
  const int8_t* xq;
  const float* x_scale;
  int64_t m;
  const uint8_t* packed;
  int64_t n, kp;
  const float* scale;
  bool per_row;
  const float* bias;
  float* out;
  int32_t* acc;
  bool x_aligned, w_aligned;
};

template <int MR>
__global__ void __launch_bounds__(kColsPerBlock * kWarp) dp4a_kernel(Int8Args a, int64_t i0) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t words = a.kp / 16;  // 32-bit words per packed row
  const int rows = static_cast<int>(min(static_cast<int64_t>(MR), a.m - i0));
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * kColsPerBlock + threadIdx.x / kWarp; j < a.n;
       j += static_cast<int64_t>(gridDim.x) * kColsPerBlock) {
    const uint8_t* wrow = a.packed + j * (a.kp / 4);
    int32_t acc[MR];
#pragma unroll
    for (int i = 0; i < MR; ++i) acc[i] = 0;
    for (int64_t w = lane; w < words; w += kWarp) {
      const uint32_t word = ld32(wrow + 4 * w, a.w_aligned);
      const int64_t col0 = (w >> 4) * 256 + 4 * (w & 15);  // weight index of byte 0, s = 0
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const uint32_t wq = word_weights(word, s);
#pragma unroll
        for (int i = 0; i < MR; ++i)
          if (i < rows) acc[i] += dot4(wq, ld32(a.xq + (i0 + i) * a.kp + col0 + 64 * s, a.x_aligned));
      }
    }
#pragma unroll
    for (int i = 0; i < MR; ++i)
      for (int o = kWarp / 2; o > 0; o /= 2) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], o);
    const float gamma = a.scale[a.per_row ? j : 0];
#pragma unroll
    for (int i = 0; i < MR; ++i) {
      if (lane == i && i < rows) {
        const int64_t o = (i0 + i) * a.n + j;
        if (a.acc) a.acc[o] = acc[i];
        a.out[o] = int8_output(acc[i], gamma, a.x_scale[i0 + i], a.bias, j);
      }
    }
  }
}

// ---- int8 path, larger m: decode + int8 tensor cores (WMMA) -----------------------------------------

__global__ void __launch_bounds__(kWmmaThreads) wmma_kernel(Int8Args a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 720
  namespace wmma = nvcuda::wmma;
  constexpr int kStageBytes = 2 * kTileM * kPitch;
  constexpr int kCBytes = kTileM * kCPitch * 4;
  __shared__ __align__(128) unsigned char smem[kStageBytes > kCBytes ? kStageBytes : kCBytes];
  signed char* sA = reinterpret_cast<signed char*>(smem);                   // [64 rows][kPitch]
  signed char* sB = reinterpret_cast<signed char*>(smem + kTileM * kPitch);  // [64 cols][kPitch]
  int32_t* sC = reinterpret_cast<int32_t*>(smem);                           // [64][kCPitch]
  const int tid = threadIdx.x, warp = tid / kWarp;
  const int wm = warp / 2, wn = warp % 2;
  const int64_t tiles_m = ceil_div(a.m, kTileM), tiles_n = ceil_div(a.n, kTileN);
  for (int64_t tile = blockIdx.x; tile < tiles_m * tiles_n; tile += gridDim.x) {
    const int64_t m0 = (tile % tiles_m) * kTileM, n0 = (tile / tiles_m) * kTileN;
    wmma::fragment<wmma::accumulator, 16, 16, 16, int> fc[2][2];
#pragma unroll
    for (int x = 0; x < 2; ++x)
#pragma unroll
      for (int y = 0; y < 2; ++y) wmma::fill_fragment(fc[x][y], 0);
    for (int64_t k0 = 0; k0 < a.kp; k0 += kTileK) {
      // Activations: 64 rows x 256 bytes, 16 bytes per item.
      for (int e = tid; e < kTileM * (kTileK / 16); e += kWmmaThreads) {
        const int r = e / (kTileK / 16), c = (e % (kTileK / 16)) * 16;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (m0 + r < a.m) {
          const int8_t* src = a.xq + (m0 + r) * a.kp + k0 + c;
          if (a.x_aligned) {
            v = __ldg(reinterpret_cast<const uint4*>(src));
          } else {
            v.x = ld32(src, false);
            v.y = ld32(src + 4, false);
            v.z = ld32(src + 8, false);
            v.w = ld32(src + 12, false);
          }
        }
        *reinterpret_cast<uint4*>(sA + r * kPitch + c) = v;
      }
      // Weights: 64 rows x 64 packed bytes (block k0 / 256), 4 bytes per item, decoded to 4 x 4
      // signed bytes at k = 64 s + t.
      for (int e = tid; e < kTileN * 16; e += kWmmaThreads) {
        const int col = e / 16, t = (e % 16) * 4;
        uint32_t word = 0x55555555u;  // code 1 everywhere: weight 0 for missing columns
        if (n0 + col < a.n) word = ld32(a.packed + (n0 + col) * (a.kp / 4) + k0 / 4 + t, a.w_aligned);
#pragma unroll
        for (int s = 0; s < 4; ++s) *reinterpret_cast<uint32_t*>(sB + col * kPitch + 64 * s + t) = word_weights(word, s);
      }
      __syncthreads();
#pragma unroll 4
      for (int kk = 0; kk < kTileK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, wmma::row_major> fa[2];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, wmma::col_major> fb[2];
#pragma unroll
        for (int x = 0; x < 2; ++x) wmma::load_matrix_sync(fa[x], sA + (wm * 32 + 16 * x) * kPitch + kk, kPitch);
#pragma unroll
        for (int y = 0; y < 2; ++y) wmma::load_matrix_sync(fb[y], sB + (wn * 32 + 16 * y) * kPitch + kk, kPitch);
#pragma unroll
        for (int x = 0; x < 2; ++x)
#pragma unroll
          for (int y = 0; y < 2; ++y) wmma::mma_sync(fc[x][y], fa[x], fb[y], fc[x][y]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int x = 0; x < 2; ++x)
#pragma unroll
      for (int y = 0; y < 2; ++y)
        wmma::store_matrix_sync(sC + (wm * 32 + 16 * x) * kCPitch + wn * 32 + 16 * y, fc[x][y], kCPitch,
                                wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < kTileM * kTileN; e += kWmmaThreads) {
      const int r = e / kTileN, c = e % kTileN;
      const int64_t i = m0 + r, j = n0 + c;
      if (i < a.m && j < a.n) {
        const int32_t v = sC[r * kCPitch + c];
        if (a.acc) a.acc[i * a.n + j] = v;
        a.out[i * a.n + j] = int8_output(v, a.scale[a.per_row ? j : 0], a.x_scale[i], a.bias, j);
      }
    }
    __syncthreads();
  }
#else
  (void)a;
  __trap();  // not built for these architectures (CMake lists sm_75+)
#endif
}

// ---- float path ---------------------------------------------------------------------------------------

struct FloatArgs {
  const float* x;
  int64_t m, k;
  const uint8_t* packed;
  int64_t n, kp;
  const float* scale;
  bool per_row;
  const float* bias;
  float* out;
  bool w_aligned;
};

__global__ void __launch_bounds__(kColsPerBlock * kWarp) float_kernel(FloatArgs a, int64_t i0) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t words = a.kp / 16;
  const int rows = static_cast<int>(min(static_cast<int64_t>(kFloatRows), a.m - i0));
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * kColsPerBlock + threadIdx.x / kWarp; j < a.n;
       j += static_cast<int64_t>(gridDim.x) * kColsPerBlock) {
    const uint8_t* wrow = a.packed + j * (a.kp / 4);
    float acc[kFloatRows] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t w = lane; w < words; w += kWarp) {
      const uint32_t word = ld32(wrow + 4 * w, a.w_aligned);
      const int64_t col0 = (w >> 4) * 256 + 4 * (w & 15);
      for (int s = 0; s < 4; ++s) {
        const uint32_t codes = word_codes(word, s);
        for (int e = 0; e < 4; ++e) {
          const int64_t col = col0 + 64 * s + e;
          if (col >= a.k) break;
          const int wv = static_cast<int>((codes >> (8 * e)) & 3u) - 1;
          if (wv == 0) continue;
#pragma unroll
          for (int i = 0; i < kFloatRows; ++i)
            if (i < rows) {
              const float xv = a.x[(i0 + i) * a.k + col];
              acc[i] = add_rn(acc[i], wv > 0 ? xv : -xv);
            }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kFloatRows; ++i)
      for (int o = kWarp / 2; o > 0; o /= 2) acc[i] = add_rn(acc[i], __shfl_xor_sync(0xffffffffu, acc[i], o));
    const float gamma = a.scale[a.per_row ? j : 0];
#pragma unroll
    for (int i = 0; i < kFloatRows; ++i)
      if (lane == i && i < rows) a.out[(i0 + i) * a.n + j] = float_output(acc[i], gamma, a.bias, j);
  }
}

bool aligned(const void* p, uintptr_t to) { return (reinterpret_cast<uintptr_t>(p) % to) == 0; }

template <int MR>
void launch_dp4a(const Int8Args& a, int64_t i0, cudaStream_t stream) {
  const int64_t blocks = min64(ceil_div(a.n, kColsPerBlock), kMaxGridX);
  dp4a_kernel<MR><<<static_cast<unsigned>(blocks), kColsPerBlock * kWarp, 0, stream>>>(a, i0);
  check_cuda(cudaGetLastError(), "ternary dp4a_kernel");
}

}  // namespace

void quantize_activations(const void* x, DType dtype, int64_t m, int64_t k, int64_t kp, float eps, int8_t* xq,
                          float* x_scale, cudaStream_t stream, ScaleRule rule) {
  validate_quantize(x, static_cast<int>(dtype), m, k, kp, eps, xq, x_scale, static_cast<int>(rule));
  if (m == 0) return;
  const int64_t blocks = min64(m, kMaxGridX);
  quantize_kernel<<<static_cast<unsigned>(blocks), kQuantThreads, 0, stream>>>(x, static_cast<int>(dtype), m, k, kp, eps,
                                                                               static_cast<int>(rule), xq, x_scale);
  check_cuda(cudaGetLastError(), "ternary quantize_kernel");
}

void matmul_int8(const int8_t* xq, const float* x_scale, int64_t m, const Weights& w, const float* bias, float* out,
                 int32_t* acc, cudaStream_t stream) {
  validate_int8(xq, x_scale, m, w, out);
  if (m == 0 || w.n == 0) return;
  Int8Args a{xq, x_scale, m, w.packed, w.n, w.kp, w.scale, w.per_row, bias, out, acc, false, false};
  if (m <= kDp4aMaxRows) {
    a.x_aligned = aligned(xq, 4);
    a.w_aligned = aligned(w.packed, 4);
    switch (m) {
      case 1: launch_dp4a<1>(a, 0, stream); break;
      case 2: launch_dp4a<2>(a, 0, stream); break;
      case 3:
      case 4: launch_dp4a<4>(a, 0, stream); break;
      default: launch_dp4a<8>(a, 0, stream); break;
    }
    return;
  }
  a.x_aligned = aligned(xq, 16);
  a.w_aligned = aligned(w.packed, 4);
  const int64_t tiles = ceil_div(m, kTileM) * ceil_div(w.n, kTileN);
  const int64_t blocks = min64(tiles, kMaxGridX);
  wmma_kernel<<<static_cast<unsigned>(blocks), kWmmaThreads, 0, stream>>>(a);
  check_cuda(cudaGetLastError(), "ternary wmma_kernel");
}

void matmul_float(const float* x, int64_t m, const Weights& w, const float* bias, float* out, cudaStream_t stream) {
  validate_float(x, m, w, out);
  if (m == 0 || w.n == 0) return;
  const FloatArgs a{x, m, w.k, w.packed, w.n, w.kp, w.scale, w.per_row, bias, out, aligned(w.packed, 4)};
  const int64_t blocks = min64(ceil_div(w.n, kColsPerBlock), kMaxGridX);
  for (int64_t i0 = 0; i0 < m; i0 += kFloatRows) {
    float_kernel<<<static_cast<unsigned>(blocks), kColsPerBlock * kWarp, 0, stream>>>(a, i0);
    check_cuda(cudaGetLastError(), "ternary float_kernel");
  }
}

}  // namespace fastemb::ternary::cuda
