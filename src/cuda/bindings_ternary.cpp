// pybind11 glue for the ternary family of fastemb._C_cuda (registered from bindings.cpp).
#include "cuda_bindings_common.h"

namespace fastemb::bindings {

void bind_ternary_cuda(pybind11::module_& m) { (void)m; }

}  // namespace fastemb::bindings
