// Host-side helpers shared by the CUDA kernel files: error checks, launch sizing and
// stream-ordered scratch memory. Included by every src/cuda/<family>.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastemb::cuda_util {

constexpr int64_t kMaxGrid = int64_t(1) << 20;  // blocks per launch; kernels loop over the rest

[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// A CUDA error becomes std::runtime_error (RuntimeError in Python) naming the call.
inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("fastemb CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid size for `blocks` blocks of work: at least 1, at most kMaxGrid (grid-stride loops do the rest).
inline unsigned grid_for(int64_t blocks) {
  return static_cast<unsigned>(blocks < kMaxGrid ? (blocks > 0 ? blocks : 1) : kMaxGrid);
}

// Stream-ordered device scratch, freed (stream-ordered too) when it goes out of scope.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (p_) cudaFreeAsync(p_, stream_);
  }
  void* alloc(size_t bytes, cudaStream_t stream) {
    stream_ = stream;
    check_cuda(cudaMallocAsync(&p_, bytes > 0 ? bytes : 16, stream), "cudaMallocAsync");
    return p_;
  }
  template <class U>
  U* alloc_n(int64_t count, cudaStream_t stream) {
    return static_cast<U*>(alloc(sizeof(U) * static_cast<size_t>(count > 0 ? count : 1), stream));
  }

 private:
  void* p_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace fastemb::cuda_util
