// Host entry points of the CUDA centroid kernels (centroid.cu), called by bindings.cpp.
// Plain C++ declarations only (no device code), so the host C++ compiler can include it.
// Every pointer in Problem / *Outputs / BackwardInputs is a device address on the current device;
// the work is queued on `stream` (no host synchronization; temporaries use cudaMallocAsync).
// Throws std::invalid_argument for bad arguments and std::runtime_error for CUDA errors.
#pragma once

#include <cuda_runtime.h>

#include "centroid/centroid.h"

namespace fastemb::centroid::cuda {

// deterministic: every reduction is a segment reduction over a stable device sort of the rows
// (same bits run to run); otherwise sum/mean over unsorted labels use run-merged atomics.
void forward(const Problem& p, const ForwardOutputs& o, bool deterministic, cudaStream_t stream);
void backward(const Problem& p, const BackwardInputs& in, const BackwardOutputs& o, bool deterministic,
              cudaStream_t stream);

}  // namespace fastemb::centroid::cuda
