// Shared by the pybind11 glue files of fastemb._C_cuda: bindings.cpp (module definition,
// centroid, binary codes) and one bindings_<family>.cpp per later family.
#pragma once
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <cstdint>

namespace fastemb::bindings {

// The integer value of a cudaStream_t (torch.cuda.current_stream().cuda_stream), 0 = default.
inline cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

void bind_ternary_cuda(pybind11::module_& m);
void bind_graph_cuda(pybind11::module_& m);
void bind_multivector_cuda(pybind11::module_& m);

}  // namespace fastemb::bindings
