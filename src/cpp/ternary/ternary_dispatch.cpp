// Validation, work splitting and run-time ISA dispatch for the ternary kernels.
//
// Threads split the output columns (weight rows) into contiguous tasks; every output element is
// computed by one task in a fixed order, so results are the same bits for any thread count.
// Integer path: m < gemm_min_rows (or a variant without a GEMM form) -> GEMV form (activations
// block-interleaved here for the multi-row tiles); otherwise the GEMM form of the AVX-512 VNNI or
// AVX2 variant (activations repacked here, weight panels decoded once per task). The crossovers
// were measured on the Zen 4 VM (see gemm_min_rows; AVX2 with FASTEMB_FORCE_ISA=avx2 there).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "ternary/ternary.h"
#include "ternary/ternary_internal.h"
#include "ternary/ternary_math.h"
#include "ternary/ternary_validate.h"

namespace fastemb::ternary {

#define FASTEMB_DECLARE_ISA(ns)                                                                                \
  namespace ns {                                                                                               \
  void quantize_rows(const void* x, int dt, int64_t k, int64_t kp, float eps, int rule, int64_t i0,            \
                     int64_t i1, int8_t* xq, float* x_scale);                                                  \
  void int8_gemv(const Int8Work& a, int64_t j0, int64_t j1);                                                   \
  void int8_gemv_t5(const Int8Work& a, int64_t j0, int64_t j1);                                                \
  bool int8_gemm(const Int8Work& a, int64_t j0, int64_t j1);                                                   \
  void float_rows(const FloatWork& a, int64_t j0, int64_t j1);                                                 \
  }
FASTEMB_DECLARE_ISA(serial)
#if defined(FASTEMB_X86)
FASTEMB_DECLARE_ISA(avx2)
FASTEMB_DECLARE_ISA(avx512)
#endif
#if defined(FASTEMB_ARM64)
FASTEMB_DECLARE_ISA(neon)
FASTEMB_DECLARE_ISA(dotprod)
#endif
#if defined(FASTEMB_TERNARY_I8MM_TU)
FASTEMB_DECLARE_ISA(i8mm)
#endif
#if defined(FASTEMB_TERNARY_AVXVNNI_TU)
FASTEMB_DECLARE_ISA(avxvnni)
#endif
#undef FASTEMB_DECLARE_ISA

namespace {

// A kernel set that runs in place of a kernel ISA's own, with no Isa of its own: built (CMake found a
// compiler for it) and the CPU has the feature.
//   i8mm: for the dotprod ISA on CPUs with FEAT_I8MM.
//   avxvnni: for the avx2 kernel ISA on CPUs with AVX-VNNI (so also for avx512 on a CPU with AVX-VNNI
//     but not AVX512-VNNI); same GEMM crossover as avx2 (not measured on an AVX-VNNI CPU).
enum class SubVariant { none, i8mm, avxvnni };

SubVariant sub_variant(Isa kisa) {
#if defined(FASTEMB_TERNARY_I8MM_TU)
  if (kisa == Isa::dotprod && cpu_features().i8mm) return SubVariant::i8mm;
#endif
#if defined(FASTEMB_TERNARY_AVXVNNI_TU)
  if (kisa == Isa::avx2 && cpu_features().avxvnni) return SubVariant::avxvnni;
#endif
  (void)kisa;
  return SubVariant::none;
}

const IsaKernels* g_avx2_testing = nullptr;  // set_avx2_kernels_for_testing

IsaKernels kernels_for(Isa requested) {
  if (!isa_supported(requested))
    throw std::invalid_argument(std::string("isa '") + isa_name(requested) + "' is not supported by this CPU");
  switch (kernel_isa(requested)) {
#if defined(FASTEMB_X86)
    case Isa::avx512: return {avx512::quantize_rows, avx512::int8_gemv, avx512::int8_gemv_t5, avx512::int8_gemm, avx512::float_rows, true};
    case Isa::avx2:
      if (g_avx2_testing) return *g_avx2_testing;
#if defined(FASTEMB_TERNARY_AVXVNNI_TU)
      if (sub_variant(Isa::avx2) == SubVariant::avxvnni)
        return {avxvnni::quantize_rows, avxvnni::int8_gemv, avxvnni::int8_gemv_t5, avxvnni::int8_gemm, avxvnni::float_rows, true};
#endif
      return plain_avx2_kernels();
#endif
#if defined(FASTEMB_ARM64)
    case Isa::dotprod:
#if defined(FASTEMB_TERNARY_I8MM_TU)
      if (sub_variant(Isa::dotprod) == SubVariant::i8mm)
        return {i8mm::quantize_rows, i8mm::int8_gemv, i8mm::int8_gemv_t5, i8mm::int8_gemm, i8mm::float_rows, true, 8};
#endif
      return {dotprod::quantize_rows, dotprod::int8_gemv, dotprod::int8_gemv_t5, dotprod::int8_gemm, dotprod::float_rows, false};
    case Isa::neon: return {neon::quantize_rows, neon::int8_gemv, neon::int8_gemv_t5, neon::int8_gemm, neon::float_rows, false};
#endif
    default: return {serial::quantize_rows, serial::int8_gemv, serial::int8_gemv_t5, serial::int8_gemm, serial::float_rows, false};
  }
}

// Activation rows from which the GEMM form runs (below it, the GEMV form), by kernel variant and
// format; FASTEMB_TERNARY_GEMM_MIN_ROWS (tuning / tests only) overrides every one of them.
// Measured on the Zen 4 VM (4096x4096, cold weights, CPU time per call; BENCHMARKS.md "Ternary
// matmul"): the multi-row GEMV tiles beat the GEMM form up to 64 rows on AVX-512 VNNI (16 rows:
// 1.45x, 48 rows: 1.5x, 64 rows: 1.12x, 96 and 128 rows within 5%), and up to 16 rows on AVX2 (16:
// 1.2x; 32 rows: GEMM 1.05x ahead). t5 weights keep 16: their GEMV reads t5 directly with small
// tiles, their GEMM transcodes to i2 (and then takes the i2 crossover).
// ARM64 i8mm: 16, UNMEASURED in time (no ARM hardware here; qemu gives no timings), chosen from
// dynamic instruction counts of one call under qemu-aarch64 -cpu max (-d in_asm,exec,nochain; n = 384,
// k = 1024, 1 thread), per output element and 256 k ("cell"):
//   dotprod GEMV (8-row x 1-weight-row tiles for m >= 8): ~49.6 instructions per cell, 16 sdot;
//   usmmla GEMM: ~16.9 per computed cell (8 usmmla, 4 loads, the int32 tile, loops) plus ~198 per
//     weight row and k block once per call (panel decode, pairing), i.e. 16.9 + 198 / m, on rows
//     rounded up to 8.
//   Totals, GEMV / GEMM: m = 4: 0.57, 8: 1.19, 16: 1.69, 24: 1.96, 32: 2.14, 64: 2.48. If usmmla
//   issued at half the rate of sdot (no public figure found; +8 sdot-equivalents per cell), the
//   GEMM form would still be ahead from m = 16 (37.3 against 49.6 at 16; at 8 about even), so 16
//   is where it is ahead under both assumptions; below it the GEMV stays. t5 weights keep 16 as
//   well (above): on ARM their GEMV is the scalar loop, and the GEMM path transcodes them to i2.
int64_t gemm_min_rows(Isa kisa, Format fmt) {
  static const int64_t forced = [] {
    const char* e = std::getenv("FASTEMB_TERNARY_GEMM_MIN_ROWS");
    return e ? std::max<int64_t>(1, std::atoll(e)) : int64_t(0);
  }();
  if (forced) return forced;
  if (fmt == Format::t5) return 16;
  if (sub_variant(kisa) == SubVariant::i8mm) return 16;
  return kisa == Isa::avx512 ? 96 : 32;
}

// One row's k block (256 int8, src; null: a padding row, zeros) into a packed row group at dst:
// k-group q (KG bytes) at dst + q * 16 * KG (see matmul_int8_isa).
template <int KG>
void pack_k_groups(const int8_t* src, int8_t* dst) {
  for (int64_t q = 0; q < kBlock / KG; ++q) {
    if (src) std::memcpy(dst + q * kGemmRowGroup * KG, src + KG * q, KG);
    else std::memset(dst + q * kGemmRowGroup * KG, 0, KG);
  }
}

// Output columns per GEMV task: enough tasks to balance two or more threads, each a multiple of 12
// (of every GEMV tile width, 1 to 4 weight rows: no narrow remainder tile inside a task).
int64_t gemv_chunk(int64_t n) {
  const int64_t threads = get_num_threads();
  if (threads <= 1) return std::max<int64_t>(n, 1);
  const int64_t target = (n + 8 * threads - 1) / (8 * threads);
  return std::max<int64_t>(24, (target + 11) / 12 * 12);
}

template <class T>
struct AlignedVec {
  T* p = nullptr;
  explicit AlignedVec(int64_t n) {
    const size_t bytes = (sizeof(T) * static_cast<size_t>(n > 0 ? n : 1) + 63) / 64 * 64;
    p = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (!p) throw std::bad_alloc();
  }
  ~AlignedVec() { std::free(p); }
  AlignedVec(const AlignedVec&) = delete;
  AlignedVec& operator=(const AlignedVec&) = delete;
};

// The whole t5 weight matrix transcoded to i2 (the GEMM and float paths compute on i2: a t5 weight
// pays one decode pass per call there; the GEMV form reads t5 directly).
struct I2Copy {
  std::vector<uint8_t> packed;
  Weights w;
};
void t5_to_i2(const Weights& src, I2Copy& dst) {
  dst.w = src;
  dst.w.format = Format::i2;
  dst.w.kp = padded_k(src.k);
  const int64_t rs5 = src.kp / 5, rs2 = dst.w.kp / 4;
  dst.packed.resize(static_cast<size_t>(std::max<int64_t>(1, src.n * rs2)));
  dst.w.packed = dst.packed.data();
  const int64_t rows_per_task = 64;
  parallel_for((src.n + rows_per_task - 1) / rows_per_task, [&](int64_t t) {
    const int64_t j1 = std::min(src.n, (t + 1) * rows_per_task);
    for (int64_t j = t * rows_per_task; j < j1; ++j)
      transcode_t5_to_i2_row(src.packed + j * rs5, src.k, dst.packed.data() + j * rs2);
  });
}

}  // namespace

void transcode_t5_to_i2_row(const uint8_t* src, int64_t k, uint8_t* dst) {
  // 5 codes of every byte value, from the same rule as the kernels (ternary_math.h t5_digit).
  static const auto lut = [] {
    std::vector<uint8_t> t(256 * 5);
    for (uint32_t q = 0; q < 256; ++q)
      for (int d = 0; d < 5; ++d) t[q * 5 + d] = static_cast<uint8_t>(t5_digit(q, d));
    return t;
  }();
  const int64_t kp2 = padded_k(k);
  std::memset(dst, 0x55, static_cast<size_t>(kp2 / 4));  // code 1 everywhere (padding)
  for (int64_t col = 0; col < k; ++col) {
    const int64_t b = col / kBlockT5, w = col - b * kBlockT5;
    const int c = lut[static_cast<size_t>(src[b * 64 + (w & 63)]) * 5 + static_cast<size_t>(w >> 6)];
    uint8_t& byte = dst[(col >> 8) * 64 + (col & 63)];
    const int sh = static_cast<int>((col >> 6) & 3) * 2;
    byte = static_cast<uint8_t>((byte & ~(3 << sh)) | (c << sh));
  }
}

Isa kernel_isa(Isa requested) {
  if (requested == Isa::avx512 && !cpu_features().avx512vnni) return isa_supported(Isa::avx2) ? Isa::avx2 : Isa::serial;
  return requested;
}

void set_avx2_kernels_for_testing(const IsaKernels* k) { g_avx2_testing = k; }

IsaKernels plain_avx2_kernels() {
#if defined(FASTEMB_X86)
  return {avx2::quantize_rows, avx2::int8_gemv, avx2::int8_gemv_t5, avx2::int8_gemm, avx2::float_rows, true};
#else
  return {serial::quantize_rows, serial::int8_gemv, serial::int8_gemv_t5, serial::int8_gemm, serial::float_rows, false};
#endif
}

const char* kernel_variant_name(Isa requested) {
  const Isa kisa = kernel_isa(requested);
  switch (sub_variant(kisa)) {
    case SubVariant::i8mm: return "dotprod_i8mm";
    case SubVariant::avxvnni: return "avx2_vnni";
    case SubVariant::none: break;
  }
  return isa_name(kisa);
}

void quantize_activations_isa(Isa isa, const void* x, DType dtype, int64_t m, int64_t k, int64_t kp, float eps,
                              int8_t* xq, float* x_scale, ScaleRule rule) {
  validate_quantize(x, static_cast<int>(dtype), m, k, kp, eps, xq, x_scale, static_cast<int>(rule));
  const IsaKernels kern = kernels_for(isa);
  if (m == 0) return;
  const int dt = static_cast<int>(dtype);
  const int64_t rows_per_task = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(kp, 1));
  const int64_t tasks = (m + rows_per_task - 1) / rows_per_task;
  auto task = [&](int64_t t) {
    const int64_t i0 = t * rows_per_task, i1 = std::min(m, i0 + rows_per_task);
    kern.quantize_rows(x, dt, k, kp, eps, static_cast<int>(rule), i0, i1, xq, x_scale);
  };
  if (tasks == 1)
    task(0);
  else
    parallel_for(tasks, task);
}

void matmul_int8_isa(Isa isa, const int8_t* xq, const float* x_scale, int64_t m, const Weights& w, const float* bias,
                     float* out, int32_t* acc) {
  validate_int8(xq, x_scale, m, w, out);
  const IsaKernels kern = kernels_for(isa);
  if (m == 0 || w.n == 0) return;
  const int64_t kp = w.kp;
  const int64_t gemm_min = gemm_min_rows(kernel_isa(isa), w.format);
  if (w.format == Format::t5 && kern.has_gemm && m >= gemm_min && kp > 0) {
    // GEMM form: transcode the weights to i2 and the activations to its padding (zeros past k).
    I2Copy c;
    t5_to_i2(w, c);
    const int64_t kp2 = c.w.kp;
    std::vector<int8_t> xq2(static_cast<size_t>(m * kp2), 0);
    for (int64_t i = 0; i < m; ++i)
      std::memcpy(xq2.data() + i * kp2, xq + i * kp, static_cast<size_t>(std::min(kp, kp2)));
    matmul_int8_isa(isa, xq2.data(), x_scale, m, c.w, bias, out, acc);
    return;
  }

  std::vector<int32_t> sum_x(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) {
    const int8_t* r = xq + i * kp;
    int32_t s = 0;
    for (int64_t c = 0; c < kp; ++c) s += r[c];
    sum_x[static_cast<size_t>(i)] = s;
  }
  Int8Work a{xq, x_scale, sum_x.data(), m, w, bias, out, acc, nullptr};

  if (kern.has_gemm && m >= gemm_min && kp > 0) {
    // Repack activations: [k block][group of 16 rows][64 k-groups of 4][16 rows][4 bytes], zero
    // rows past m (so one zmm holds 4 consecutive k of 16 rows; group stride 4096 bytes); i8mm:
    // [32 k-groups of 8][16 rows][8 bytes] per group and block (gemm_k_group, ternary_kernels.h).
    const int64_t groups = (m + kGemmRowGroup - 1) / kGemmRowGroup, nb = kp / kBlock;
    AlignedVec<int8_t> xpack(nb * groups * 4096);
    auto pack = [&](int64_t g) {
      for (int64_t r = 0; r < kGemmRowGroup; ++r) {
        const int64_t i = g * kGemmRowGroup + r;
        for (int64_t b = 0; b < nb; ++b) {
          int8_t* dst = xpack.p + (b * groups + g) * 4096 + kern.gemm_k_group * r;
          const int8_t* src = i < m ? xq + i * kp + b * kBlock : nullptr;
          if (kern.gemm_k_group == 8) pack_k_groups<8>(src, dst);
          else pack_k_groups<4>(src, dst);
        }
      }
    };
    parallel_for(groups, pack);
    a.xpack = xpack.p;
    const int64_t tasks = (w.n + kGemmCols - 1) / kGemmCols;
    parallel_for(tasks, [&](int64_t t) {
      const int64_t j0 = t * kGemmCols, j1 = std::min(w.n, j0 + kGemmCols);
      kern.int8_gemm(a, j0, j1);
    });
    return;
  }
  // GEMV form with several rows (x86 SIMD variants): activations block-interleaved, [kp/256][m][256].
#if defined(FASTEMB_X86)
  const bool blocked = w.format == Format::i2 && kern.has_gemm && m >= 2;
#else
  const bool blocked = false;  // the ARM64 GEMV tiles (i8mm's too) read the xq rows directly
#endif
  AlignedVec<int8_t> xblk(blocked ? m * kp : 0);
  if (blocked) {
    const int64_t nb = kp / kBlock;
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t i = 0; i < m; ++i)
        std::memcpy(xblk.p + (b * m + i) * kBlock, xq + i * kp + b * kBlock, static_cast<size_t>(kBlock));
    a.xblk = xblk.p;
  }
  const int64_t chunk = gemv_chunk(w.n);
  const int64_t tasks = (w.n + chunk - 1) / chunk;
  const auto gemv = w.format == Format::t5 ? kern.int8_gemv_t5 : kern.int8_gemv;
  auto task = [&](int64_t t) {
    const int64_t j0 = t * chunk, j1 = std::min(w.n, j0 + chunk);
    gemv(a, j0, j1);
  };
  if (tasks == 1)
    task(0);
  else
    parallel_for(tasks, task);
}

void matmul_float_isa(Isa isa, const float* x, int64_t m, const Weights& w, const float* bias, float* out) {
  validate_float(x, m, w, out);
  const IsaKernels kern = kernels_for(isa);
  if (m == 0 || w.n == 0) return;
  if (w.format == Format::t5) {
    I2Copy c;
    t5_to_i2(w, c);
    matmul_float_isa(isa, x, m, c.w, bias, out);
    return;
  }
  const FloatWork a{x, m, w, bias, out};
  const int64_t chunk = gemv_chunk(w.n);
  const int64_t tasks = (w.n + chunk - 1) / chunk;
  parallel_for(tasks, [&](int64_t t) {
    const int64_t j0 = t * chunk, j1 = std::min(w.n, j0 + chunk);
    kern.float_rows(a, j0, j1);
  });
}

void quantize_activations(const void* x, DType dtype, int64_t m, int64_t k, int64_t kp, float eps, int8_t* xq,
                          float* x_scale, ScaleRule rule) {
  quantize_activations_isa(active_isa(), x, dtype, m, k, kp, eps, xq, x_scale, rule);
}
void matmul_int8(const int8_t* xq, const float* x_scale, int64_t m, const Weights& w, const float* bias, float* out,
                 int32_t* acc) {
  matmul_int8_isa(active_isa(), xq, x_scale, m, w, bias, out, acc);
}
void matmul_float(const float* x, int64_t m, const Weights& w, const float* bias, float* out) {
  matmul_float_isa(active_isa(), x, m, w, bias, out);
}

}  // namespace fastemb::ternary
