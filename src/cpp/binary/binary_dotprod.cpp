// The binary kernels compiled for the 'dotprod' ISA (ARMv8.2-A + sdot/udot; flags set in CMakeLists.txt).
#define FASTEMB_ISA_NS dotprod
#include "binary/binary_kernels.h"
