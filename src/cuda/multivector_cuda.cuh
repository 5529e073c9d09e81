// Host entry points of the CUDA multi-vector kernels (multivector.cu), called by
// src/cuda/bindings_multivector.cpp. Every pointer is a device address on the current device (the set
// bounds `begin` / `end` too); work is queued on `stream`. The set bounds are not read on the host (no
// stream sync): the kernels clamp each set into [0, rows] and a set longer than `max_tokens` (muvera_fde)
// to its first max_tokens rows, so no bound values make them read or write out of bounds (invalid bounds
// give an unspecified result; the torch layer validates them first). Same rules and same bits as the CPU
// kernels (multivector.h). CUDA errors raise std::runtime_error, bad arguments std::invalid_argument.
#pragma once

#include <cuda_runtime.h>

#include "multivector/multivector.h"

namespace fastemb::multivector::cuda {

// out [q.n, d.n] float32.
void maxsim(const TokenSets& q, const TokenSets& d, float* out, cudaStream_t stream);
// out [x.n, fde_dim]; max_tokens >= the longest set.
void muvera_fde(const FdeSpec& s, const TokenSets& x, int64_t max_tokens, float* out, cudaStream_t stream);

}  // namespace fastemb::multivector::cuda
