// The multi-vector kernels compiled for the 'serial' ISA (flags set in CMakeLists.txt).
#define FASTEMB_ISA_NS serial
#include "multivector/multivector_kernels.h"
