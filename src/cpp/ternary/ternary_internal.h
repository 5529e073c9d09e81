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

// One kernel variant's entry points (ternary_kernels.h), as the dispatcher calls them.
struct IsaKernels {
  void (*quantize_rows)(const void*, int, int64_t, int64_t, float, int, int64_t, int64_t, int8_t*, float*);
  void (*int8_gemv)(const Int8Work&, int64_t, int64_t);
  void (*int8_gemv_t5)(const Int8Work&, int64_t, int64_t);
  bool (*int8_gemm)(const Int8Work&, int64_t, int64_t);
  void (*float_rows)(const FloatWork&, int64_t, int64_t);
  bool has_gemm;
  // Bytes of one row per k-group in the GEMM form's packed activations (matmul_int8_isa): 4 for
  // vpdpbusd / vpmaddubsw (x86), 8 for usmmla (i8mm).
  int gemm_k_group = 4;
};

// Native ISA driver only (tests/native/isa_driver.cpp; not thread-safe, never used by the library):
// while k is non-null, wherever the avx2 kernels would run (plain or AVX-VNNI), *k runs instead,
// with the same dispatch around it (avx2's GEMM crossover, packing, task split). Null restores the
// normal choice. The driver uses it for the AVX-VNNI variant's EVEX twin and for plain AVX2 on
// CPUs with AVX-VNNI (where the avx2 ISA runs the AVX-VNNI variant).
void set_avx2_kernels_for_testing(const IsaKernels* k);
// The plain AVX2 kernels (x86-64 builds; elsewhere the serial ones).
IsaKernels plain_avx2_kernels();

}  // namespace fastemb::ternary
