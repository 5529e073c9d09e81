// Validation, work splitting and run-time ISA dispatch for the graph kernels. To be written.
#include "graph/graph.h"
