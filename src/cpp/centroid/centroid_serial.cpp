// The centroid kernels compiled for the 'serial' ISA (flags set in CMakeLists.txt).
#define FASTEMB_ISA_NS serial
#include "centroid/centroid_kernels.h"
