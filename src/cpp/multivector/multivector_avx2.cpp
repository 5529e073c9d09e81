// The multi-vector kernels compiled for the 'avx2' ISA (flags set in CMakeLists.txt).
#define FASTEMB_ISA_NS avx2
#include "multivector/multivector_kernels.h"
