// The graph kernels compiled for the 'avx512' ISA (flags set in CMakeLists.txt).
#define FASTEMB_ISA_NS avx512
#include "graph/graph_kernels.h"
