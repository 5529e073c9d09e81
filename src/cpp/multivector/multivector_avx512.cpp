// The multi-vector kernels compiled for the 'avx512' ISA (flags set in CMakeLists.txt).
#define FASTEMB_ISA_NS avx512
#include "multivector/multivector_kernels.h"
