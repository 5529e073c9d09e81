// The binary-code kernels compiled for the 'serial' ISA (flags set in CMakeLists.txt).
#define FASTEMB_ISA_NS serial
#include "binary/binary_kernels.h"
