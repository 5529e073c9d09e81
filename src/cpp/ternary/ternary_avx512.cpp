// The ternary kernels compiled for the 'avx512' ISA (flags set in CMakeLists.txt).
#define FASTEMB_ISA_NS avx512
#include "ternary/ternary_kernels.h"
