// The multi-vector kernels compiled for the 'neon' ISA (ARM64 baseline AdvSIMD; flags set in CMakeLists.txt).
#define FASTEMB_ISA_NS neon
#include "multivector/multivector_kernels.h"
