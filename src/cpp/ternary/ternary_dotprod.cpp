// The ternary kernels compiled for the 'dotprod' ISA (ARMv8.2-A + sdot/udot; flags set in CMakeLists.txt).
#define FASTEMB_ISA_NS dotprod
#include "ternary/ternary_kernels.h"
