// Shared by the pybind11 glue files of fastemb._C: bindings.cpp (module definition, centroid,
// binary codes) and one bindings_<family>.cpp per later family, each registering its functions.
#pragma once
#include <pybind11/pybind11.h>

#include <string>

#include "common/cpu_features.h"

namespace fastemb::bindings {

// "" = the active ISA; otherwise one of serial / avx2 / avx512 (x86-64) / neon / dotprod (ARM64) that this CPU supports
// (std::invalid_argument -> ValueError otherwise).
Isa isa_from_name(const std::string& name);

void bind_ternary(pybind11::module_& m);
void bind_graph(pybind11::module_& m);
void bind_multivector(pybind11::module_& m);

}  // namespace fastemb::bindings
