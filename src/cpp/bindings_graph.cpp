// pybind11 glue for the graph family of fastemb._C (registered from bindings.cpp).
#include <pybind11/pybind11.h>

#include "bindings_common.h"

namespace fastemb::bindings {

void bind_graph(pybind11::module_& m) { (void)m; }

}  // namespace fastemb::bindings
