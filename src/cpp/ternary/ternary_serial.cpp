// The ternary kernels compiled for the 'serial' ISA (flags set in CMakeLists.txt).
#define FASTEMB_ISA_NS serial
#include "ternary/ternary_kernels.h"
