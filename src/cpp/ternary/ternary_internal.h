// Work descriptions passed from the dispatcher (ternary_dispatch.cpp) to the per-ISA kernels
// (ternary_kernels.h). Plain structs, no functions: safe to share between ISA translation units.
#pragma once
#include <cstdint>

#include "ternary/ternary.h"

namespace fastemb::ternary {

// Output columns per GEMM task (AVX-512 VNNI and AVX2 paths): the decoded weight panel is kGemmCols
// rows of the weight matrix; a multiple of every micro-kernel width (16, 12, 8, 6).
constexpr int64_t kGemmCols = 48;
// Activation rows are packed for the GEMM path in groups of 16 (one zmm of int32 accumulators; two
// ymm on AVX2).
constexpr int64_t kGemmRowGroup = 16;

struct Int8Work {
  const int8_t* xq;       // [m, kp]
  const float* x_scale;   // [m]
  const int32_t* sum_x;   // [m]: sum_c xq_ic (the u8-code identity's correction)
  int64_t m;
  Weights w;
  const float* bias;      // [n] or null
  float* out;             // [m, n]
  int32_t* acc;           // [m, n] or null
  // GEMM path only: xq repacked as [kp/256][ceil(m/16)][64][16 rows][4 bytes] (zero rows past m).
  const int8_t* xpack;
  // GEMV path, m >= 2, AVX-512 VNNI and AVX2 variants: xq repacked as [kp/256][m][256] (block b of
  // row i at (b * m + i) * 256), so a tile of consecutive rows reads one contiguous stream per block.
  const int8_t* xblk = nullptr;
};

struct FloatWork {
  const float* x;  // [m, k]
  int64_t m;
  Weights w;
  const float* bias;
  float* out;
};

}  // namespace fastemb::ternary
