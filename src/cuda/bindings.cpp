// pybind11 glue for fastemb._C_cuda (optional module, built when nvcc is found).
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "fastemb CUDA kernels (internal: use the fastemb package)";
  m.def("device_count", [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky error: no driver or no device
      return 0;
    }
    return n;
  });
}
