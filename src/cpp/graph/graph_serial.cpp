// The graph kernels compiled for the 'serial' ISA (flags set in CMakeLists.txt).
#define FASTEMB_ISA_NS serial
#include "graph/graph_kernels.h"
