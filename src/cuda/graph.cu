// CUDA kernels of the graph family (to be written; see src/cpp/graph/graph.h).
