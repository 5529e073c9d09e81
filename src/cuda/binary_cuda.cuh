// Host entry points of the CUDA binary-code kernels (binary.cu), called by bindings.cpp.
// Plain C++ declarations only (no device code), so the host C++ compiler can include it.
// q, d, out, scores, ids are device addresses on the current device; the work is queued on
// `stream` (no host synchronization; temporaries use cudaMallocAsync). Results are the CPU
// kernels' exactly (binary/binary.h): same integers, same tie rule, same padding.
// Throws std::invalid_argument for bad arguments and std::runtime_error for CUDA errors.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "binary/binary.h"

namespace fastemb::binary::cuda {

// out: int32 [nq, nd] (mode hamming or sdc).
void scores(const Problem& p, int32_t* out, cudaStream_t stream);
// SDC top-k (p.mode is ignored: always sdc): scores int32 [nq, k], ids int64 [nq, k], descending
// score, ties to the lower id; rows padded with (INT32_MIN, -1) when k > nd.
void topk(const Problem& p, int64_t k, int32_t* scores, int64_t* ids, cudaStream_t stream);
// binarize (binary.h BinarizeProblem; x, scale and out are device addresses): the CPU kernels' codes
// bit for bit. bad: device int32, set to 1 when x holds NaN or inf (never cleared here).
void binarize(const BinarizeProblem& p, uint8_t* out, int32_t* bad, cudaStream_t stream);

}  // namespace fastemb::binary::cuda
