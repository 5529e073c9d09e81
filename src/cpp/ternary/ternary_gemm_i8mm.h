// The integer GEMM form of the ARM64 i8mm kernel set (ternary_i8mm.cpp, variant "dotprod_i8mm"),
// included by ternary_kernels.h inside its per-ISA anonymous namespace (it uses decode_panel,
// store_gemm_tile, kMc, Buf and Int8Work). Layouts, micro-kernel and bounds: ternary_kernels.h's
// header comment ("ARM64 i8mm").

// One k block (256 k) of an 8-row x 8-column tile: xb = the block's packed activations of 4 row
// pairs ([32 k-groups of 8][8 row pairs of the 16-row group][2 rows][8 bytes], k-group stride 128;
// xb points at the first of the 4 pairs), pb = the paired panel of 4 column pairs (column-pair
// stride 512: [32 k-groups][2 cols][8 codes]). Adds the 64 int32 sums into ct[col * ldc + row].
// usmmla(acc, w, x) with w = columns (c, c+1) x 8 k (u8 codes) and x = rows (r, r+1) x 8 k (s8)
// adds [w_c.x_r, w_c.x_r+1, w_c+1.x_r, w_c+1.x_r+1] to the four int32 lanes of acc.
__attribute__((noinline)) void mmla_micro(const int8_t* xb, const uint8_t* pb, int32_t* ct, int64_t ldc) {
  int32x4_t acc[4][4];  // [row pair][column pair]
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[i][j] = vdupq_n_s32(0);
  for (int64_t q = 0; q < 32; ++q) {
    int8x16_t x[4];
    uint8x16_t w[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) x[i] = vld1q_s8(xb + 128 * q + 16 * i);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) w[j] = vld1q_u8(pb + 512 * j + 16 * q);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[i][j] = vusmmlaq_s32(acc[i][j], w[j], x[i]);
  }
  // acc[i][j] holds column 2j for rows 2i, 2i+1 in its low half, column 2j+1 in its high half:
  // 64-bit zips of two row pairs give 4 consecutive rows of one column.
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j)
#pragma GCC unroll 2
    for (int i = 0; i < 4; i += 2) {
      const int64x2_t lo = vreinterpretq_s64_s32(acc[i][j]), hi = vreinterpretq_s64_s32(acc[i + 1][j]);
      int32_t* p0 = ct + (2 * j) * ldc + 2 * i;
      int32_t* p1 = p0 + ldc;
      vst1q_s32(p0, vaddq_s32(vld1q_s32(p0), vreinterpretq_s32_s64(vzip1q_s64(lo, hi))));
      vst1q_s32(p1, vaddq_s32(vld1q_s32(p1), vreinterpretq_s32_s64(vzip2q_s64(lo, hi))));
    }
}

void int8_gemm_impl(const Int8Work& a, int64_t j0, int64_t j1) {
  static_assert(kGemmCols % 8 == 0 && kGemmRowGroup == 16, "8 x 8 micro tiles");
  const int64_t nb = a.w.kp / kBlock;
  const int64_t all_groups = (a.m + kGemmRowGroup - 1) / kGemmRowGroup;
  const int64_t ncols = j1 - j0;
  Buf<uint8_t> panel(nb * kGemmCols * 256);
  const uint8x16_t mask = vdupq_n_u8(3);
  decode_panel(
      a, j0, ncols, nb, panel.p,
      [mask](const uint8_t* src, uint8_t* dst) {
        for (int h = 0; h < 4; ++h) {
          const uint8x16_t v = vld1q_u8(src + 16 * h);
          vst1q_u8(dst + 16 * h, vandq_u8(v, mask));
          vst1q_u8(dst + 64 + 16 * h, vandq_u8(vshrq_n_u8(v, 2), mask));
          vst1q_u8(dst + 128 + 16 * h, vandq_u8(vshrq_n_u8(v, 4), mask));
          vst1q_u8(dst + 192 + 16 * h, vshrq_n_u8(v, 6));
        }
      },
      true);
  const int64_t mc_rows = min_i64(kMc, all_groups * kGemmRowGroup);
  Buf<int32_t> ct(kGemmCols * mc_rows);
  for (int64_t r0 = 0; r0 < a.m; r0 += kMc) {
    const int64_t rows = min_i64(kMc, a.m - r0);
    const int64_t groups = (rows + kGemmRowGroup - 1) / kGemmRowGroup;
    const int64_t ldc = groups * kGemmRowGroup;
    std::memset(ct.p, 0, sizeof(int32_t) * static_cast<size_t>(kGemmCols * ldc));
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* pb = panel.p + b * kGemmCols * 256;
      for (int64_t g = 0; g < groups; ++g) {
        const int8_t* xb = a.xpack + (b * all_groups + r0 / kGemmRowGroup + g) * 4096;
        // Rows 8h .. 8h + 7 of the group (row pairs 4h .. 4h + 3); a last group of <= 8 rows skips
        // its all-padding half (those ct rows stay 0 and are never stored).
        const int64_t halves = rows - kGemmRowGroup * g > 8 ? 2 : 1;
        for (int64_t h = 0; h < halves; ++h)
          for (int64_t jc = 0; jc < kGemmCols; jc += 8)
            mmla_micro(xb + 64 * h, pb + jc * 256, ct.p + jc * ldc + kGemmRowGroup * g + 8 * h, ldc);
      }
    }
    store_gemm_tile(a, r0, rows, j0, ncols, ct.p, ldc);
  }
}
