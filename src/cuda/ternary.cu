// CUDA kernels of the ternary family (to be written; see src/cpp/ternary/ternary.h).
