// The ternary kernels compiled for ARM64 with i8mm (ARMv8.2-A + sdot/udot + usmmla; flags set in
// CMakeLists.txt): the dotprod GEMV and the usmmla GEMM form. Not an ISA of its own: the dispatcher
// runs it for the dotprod ISA when the CPU has FEAT_I8MM (kernel variant "dotprod_i8mm").
#define FASTEMB_ISA_NS i8mm
#include "ternary/ternary_kernels.h"
