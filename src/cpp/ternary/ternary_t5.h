// The t5 (1.6-bit, 5 codes per byte) integer GEMV, included by ternary_kernels.h inside its
// per-ISA anonymous namespace (so it sees Int8Work, store_int8, min_i64 and the prefetch helpers).
// Layout and decoding idea: ternary.h ("Packed formats"). Every variant returns the exact int32
// sums sum_c xq_ic * w_jc (then the shared epilogue int8_output), the same bits as the i2 path.
//
// AVX-512 VNNI (t5_tile): per 64-byte block and weight row, r_0 = the loaded bytes, and for
//   t = 0..4: P += vpdpbusd(r_t, x_t); r_(t+1) = r_t + r_t + r_t (vpaddb, mod 256);
//   Q += vpdpbusd(r_(t+1), x_t). Per int32 lane the exact identity
//   sum c x = (3 P - Q) / 256 holds block by block (256 c_t = 3 r_t - r_(t+1) per byte), so the
//   lanes are folded (3P - Q, exact arithmetic shift by 8) every kT5Flush blocks, before the
//   int32 lanes could wrap: per block and lane |3P - Q| <= 256 * 5 * 4 * 2 * 128 = 1.3e6, times
//   1024 blocks < 2^31. 10 vpdpbusd + 10 vpaddb per 320 weights, no masks, shifts or shuffles.
// AVX2 (t5_tile): vpmaddubsw(r_t, (3, 0)) = 3 r of each low byte in a 16-bit lane (its bits 8-9:
//   the digit), vpmaddubsw(r_t, (0, 3)) the same for the high byte; (A >> 8) | (B & 0x300) is the
//   code vector of 32 consecutive weights; then vpmaddubsw with the activations into int16 sums
//   (|.| <= 10 * 512 per block: flushed to int32 every kT5Group2 = 4 blocks, < 2^15).
// Serial: t5_digit per byte (ternary_math.h), the signed weights times the activations.

constexpr int64_t kT5Flush = 1024;  // AVX-512: blocks between folds of the P / Q lanes

#if defined(FASTEMB_TERNARY_VNNI)
// AS accumulator sets (by digit parity) keep the vpdpbusd chains short for small tiles.
template <int MR, int NR, int AS = (MR * NR >= 4 ? 1 : 2)>
inline void t5_tile(const Int8Work& a, int64_t i0, int64_t j0, const uint8_t* pf_end) {
  const int64_t kp = a.w.kp, nb = kp / kBlockT5, rs = kp / 5;
  __m512i P[MR][NR][AS], Q[MR][NR][AS], tot[MR][NR];
  const uint8_t* wr[NR];
  const int8_t* xr[MR];
  for (int r = 0; r < NR; ++r) wr[r] = a.w.packed + (j0 + r) * rs;
  for (int i = 0; i < MR; ++i) xr[i] = a.xq + (i0 + i) * kp;
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) tot[i][r] = _mm512_setzero_si512();
  const uint8_t* pf = wr[0] + kPrefetch512;
  for (int64_t b0 = 0; b0 < nb; b0 += kT5Flush) {
    const int64_t b1 = min_i64(nb, b0 + kT5Flush);
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < NR; ++r)
        for (int u = 0; u < AS; ++u) P[i][r][u] = Q[i][r][u] = _mm512_setzero_si512();
    for (int64_t b = b0; b < b1; ++b) {
      prefetch_lines_512(pf + NR * 64 * b, pf_end, NR);
      __m512i rv[NR];
      for (int r = 0; r < NR; ++r) rv[r] = _mm512_loadu_si512(wr[r] + 64 * b);
      for (int t = 0; t < 5; ++t) {
        __m512i xv[MR];
        for (int i = 0; i < MR; ++i) xv[i] = _mm512_loadu_si512(xr[i] + 320 * b + 64 * t);
        for (int r = 0; r < NR; ++r) {
          const __m512i nx = _mm512_add_epi8(_mm512_add_epi8(rv[r], rv[r]), rv[r]);
          for (int i = 0; i < MR; ++i) {
            P[i][r][t % AS] = _mm512_dpbusd_epi32(P[i][r][t % AS], rv[r], xv[i]);
            Q[i][r][t % AS] = _mm512_dpbusd_epi32(Q[i][r][t % AS], nx, xv[i]);
          }
          rv[r] = nx;
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < NR; ++r) {
        __m512i p = P[i][r][0], q = Q[i][r][0];
        for (int u = 1; u < AS; ++u) {
          p = _mm512_add_epi32(p, P[i][r][u]);
          q = _mm512_add_epi32(q, Q[i][r][u]);
        }
        const __m512i d = _mm512_sub_epi32(_mm512_add_epi32(p, _mm512_add_epi32(p, p)), q);
        tot[i][r] = _mm512_add_epi32(tot[i][r], _mm512_srai_epi32(d, 8));
      }
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) store_int8(a, i0 + i, j0 + r, _mm512_reduce_add_epi32(tot[i][r]) - a.sum_x[i0 + i]);
}
// Weight rows per tile for one activation row: measured on the Zen 4 VM (m = 1, cold weights,
// 2 threads): 2 rows x 2 accumulator sets 0.74-0.81x the i2 GEMV's speed, 1 row x 5 sets 0.53-0.64x,
// 2 rows x 5 sets 0.44-0.47x (register pressure); bench/bench_ternary_t5.py.
constexpr int kT5NR1 = 2;
constexpr int kT5MRM = 2, kT5NRM = 2;
#elif defined(FASTEMB_TERNARY_AVX2_GEMV)
constexpr int64_t kT5Group2 = 4;  // blocks between int16 -> int32 flushes
template <int MR, int NR>
inline void t5_tile(const Int8Work& a, int64_t i0, int64_t j0, const uint8_t* pf_end) {
  const int64_t kp = a.w.kp, nb = kp / kBlockT5, rs = kp / 5;
  const __m256i c30 = _mm256_set1_epi16(0x0003), c03 = _mm256_set1_epi16(0x0300);
  const uint8_t* wr = a.w.packed + j0 * rs;
  const int8_t* xr = a.xq + i0 * kp;
  const uint8_t* pf = wr + kPrefetch2;
  Acc32<MR * NR> acc;
  for (int64_t b0 = 0; b0 < nb; b0 += kT5Group2) {
    const int64_t b1 = min_i64(nb, b0 + kT5Group2);
    __m256i s16[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < NR; ++r) s16[i][r] = _mm256_setzero_si256();
    for (int64_t b = b0; b < b1; ++b) {
      prefetch_lines(pf + NR * 64 * b, pf_end, NR);
      for (int h = 0; h < 2; ++h) {
        __m256i rv[NR];
        for (int r = 0; r < NR; ++r) rv[r] = load256(wr + r * rs + 64 * b + 32 * h);
        for (int t = 0; t < 5; ++t) {
          __m256i c[NR];
          for (int r = 0; r < NR; ++r) {
            const __m256i lo = _mm256_srli_epi16(_mm256_maddubs_epi16(rv[r], c30), 8);
            const __m256i hi = _mm256_and_si256(_mm256_maddubs_epi16(rv[r], c03), c03);
            c[r] = _mm256_or_si256(lo, hi);
            rv[r] = _mm256_add_epi8(_mm256_add_epi8(rv[r], rv[r]), rv[r]);
          }
          for (int i = 0; i < MR; ++i) {
            const __m256i xv = load256(xr + i * kp + 320 * b + 64 * t + 32 * h);
            for (int r = 0; r < NR; ++r) {
              s16[i][r] = dp_add(s16[i][r], c[r], xv);
              FT2_PIN(s16[i][r]);
            }
          }
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < NR; ++r) acc.add(i * NR + r, dp_to_i32(s16[i][r]));
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) store_int8(a, i0 + i, j0 + r, acc.sum(i * NR + r) - a.sum_x[i0 + i]);
}
constexpr int kT5NR1 = 2;
constexpr int kT5MRM = 2, kT5NRM = 2;
#else
// Serial (and the ARM64 variants): signed weights c - 1 times the activations, int32.
template <int MR, int NR>
inline void t5_tile(const Int8Work& a, int64_t i0, int64_t j0, const uint8_t* /*pf_end*/) {
  const int64_t kp = a.w.kp, nb = kp / kBlockT5, rs = kp / 5;
  for (int r = 0; r < NR; ++r) {
    const uint8_t* wrow = a.w.packed + (j0 + r) * rs;
    for (int i = 0; i < MR; ++i) {
      const int8_t* xrow = a.xq + (i0 + i) * kp;
      int32_t s = 0;
      for (int64_t b = 0; b < nb; ++b)
        for (int j = 0; j < 64; ++j) {
          const uint32_t q = wrow[64 * b + j];
          for (int t = 0; t < 5; ++t) s += (t5_digit(q, t) - 1) * static_cast<int32_t>(xrow[320 * b + 64 * t + j]);
        }
      store_int8(a, i0 + i, j0 + r, s);
    }
  }
}
constexpr int kT5NR1 = 1;
constexpr int kT5MRM = 1, kT5NRM = 1;
#endif

// Weight rows [j0, j1) for every activation row: tiles of kT5NR1 weight rows (m = 1) or
// kT5MRM x kT5NRM, with 1-row remainders.
inline void int8_gemv_t5_impl(const Int8Work& a, int64_t j0, int64_t j1) {
  const int64_t rs = a.w.kp / 5;
  const uint8_t* pf_end = a.w.packed + j1 * rs;
  if (a.m == 1) {
    int64_t j = j0;
    for (; j + kT5NR1 <= j1; j += kT5NR1) t5_tile<1, kT5NR1>(a, 0, j, pf_end);
    for (; j < j1; ++j) t5_tile<1, 1>(a, 0, j, pf_end);
    return;
  }
  int64_t j = j0;
  for (; j + kT5NRM <= j1; j += kT5NRM) {
    int64_t i = 0;
    for (; i + kT5MRM <= a.m; i += kT5MRM) t5_tile<kT5MRM, kT5NRM>(a, i, j, pf_end);
    for (; i < a.m; ++i) t5_tile<1, kT5NRM>(a, i, j, pf_end);
  }
  for (; j < j1; ++j)
    for (int64_t i = 0; i < a.m; ++i) t5_tile<1, 1>(a, i, j, pf_end);
}
