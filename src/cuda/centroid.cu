// Centroid aggregation CUDA kernels (filled in below).
#include <cuda_runtime.h>
