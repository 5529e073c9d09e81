// Native ISA test driver: for every kernel family, runs every ISA variant this CPU has (x86-64:
// avx2 / avx512; ARM64: neon / dotprod) against the serial variant on random inputs (several sizes,
// odd ones, empty, one row) and checks that the outputs are the same bits. Plain C++, linked
// against fastemb_core only (no Python): CMake option FASTEMB_ISA_DRIVER=ON builds it; .ci/arm64
// cross-compiles it for aarch64 and runs it under qemu-aarch64.
//
// One exception, by design (ternary.h): the ternary float path sums in each kernel's own order, so
// its x86 SIMD variants are checked within a tolerance; the ARM variants run the serial float loop
// and must match it bit for bit.
//
// x86-64 ternary sub-variants (test_ternary_avx2_sets): the AVX-VNNI kernels through their EVEX twin
// (tests/native/ternary_avxvnni_evex.cpp, built into this driver only) and plain AVX2 on AVX-VNNI CPUs.
//
// Usage: fastemb_isa_driver [--threads N]. Prints "<passed> passed, <failed> failed"; exit 1 on
// any mismatch. FASTEMB_FORCE_ISA does not restrict it (it always tests every supported variant).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "binary/binary.h"
#include "centroid/centroid.h"
#include "common/cpu_features.h"
#include "common/float16.h"
#include "common/thread_pool.h"
#include "graph/graph.h"
#include "multivector/multivector.h"
#include "ternary/ternary.h"
#include "ternary/ternary_internal.h"

using namespace fastemb;

#if defined(FASTEMB_TERNARY_EVEX_TWIN)
namespace fastemb::ternary {
IsaKernels avxvnni_evex_kernels();  // tests/native/ternary_avxvnni_evex.cpp
}
#endif

namespace {

int g_passed = 0, g_failed = 0, g_rejected = 0;  // rejected: serial and variant threw the same error
std::mt19937_64 g_rng(20240613);
std::vector<Isa> g_variants;  // supported, not serial
const char* g_variant_label = nullptr;  // printed instead of the ISA name (run_ternary_kernel_set)

using Bytes = std::vector<uint8_t>;

template <class T>
void put(Bytes& o, const std::vector<T>& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  o.insert(o.end(), p, p + v.size() * sizeof(T));
}

double uniform(double lo, double hi) { return lo + (hi - lo) * (double(g_rng() >> 11) * 0x1.0p-53); }
int64_t randint(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(g_rng() % uint64_t(hi - lo + 1)); }

// Runs `run` on serial and on every variant; the result (or the exception text) must be equal.
// `close`, when given, replaces byte equality for the named x86 float exception.
void check(const std::string& name, const std::function<Bytes(Isa)>& run,
           const std::function<bool(Isa, const Bytes&, const Bytes&)>& close = nullptr) {
  auto call = [&](Isa isa, std::string* err) {
    try {
      return run(isa);
    } catch (const std::exception& e) {
      *err = e.what();
      return Bytes();
    }
  };
  std::string ref_err;
  const Bytes ref = call(Isa::serial, &ref_err);
  for (Isa isa : g_variants) {
    std::string err;
    const Bytes got = call(isa, &err);
    bool ok = err == ref_err && got.size() == ref.size();
    if (ok) ok = close ? close(isa, ref, got) : std::memcmp(got.data(), ref.data(), ref.size()) == 0;
    if (ok) {
      ++g_passed;
      if (!ref_err.empty()) ++g_rejected;
      continue;
    }
    ++g_failed;
    size_t at = 0;
    while (at < ref.size() && at < got.size() && ref[at] == got[at]) ++at;
    std::printf("FAIL %s [%s vs serial]: first differing byte %zu of %zu%s%s%s%s\n", name.c_str(),
                g_variant_label ? g_variant_label : isa_name(isa), at,
                ref.size(), ref_err.empty() ? "" : " serial threw: ", ref_err.c_str(), err.empty() ? "" : " variant threw: ",
                err.c_str());
  }
}

// ---- binary ---------------------------------------------------------------------------------------

void test_binary() {
  struct Case { int bits; int64_t dim, nq, nd; };
  const Case cases[] = {{1, 256, 37, 1000}, {1, 1024, 9, 333}, {1, 100, 2, 517}, {1, 7, 1, 1}, {1, 1, 3, 17},
                        {2, 64, 8, 129},    {3, 200, 11, 250}, {4, 33, 5, 70},    {1, 512, 0, 10}, {2, 96, 4, 0},
                        {1, 520, 64, 2000}, {1, 8200, 3, 40},
                        // one or two queries: the direct row-by-row kernels, multi-bit too (several
                        // vector chunks per plane, rows near the corpus end through the bounce buffer)
                        {2, 512, 1, 300},   {3, 344, 2, 257},  {4, 1000, 1, 130}, {2, 70, 2, 33}};
  for (const Case& c : cases) {
    const int64_t nbytes = (c.dim + 7) / 8;
    std::vector<uint8_t> q(static_cast<size_t>(c.nq * c.bits * nbytes)), d(static_cast<size_t>(c.nd * c.bits * nbytes));
    for (auto& v : q) v = static_cast<uint8_t>(g_rng());
    for (auto& v : d) v = static_cast<uint8_t>(g_rng());
    // A few duplicate docs: ties broken by id.
    for (int64_t j = 1; j < c.nd; j += 7)
      std::memcpy(d.data() + j * c.bits * nbytes, d.data(), static_cast<size_t>(c.bits * nbytes));
    for (int mode = 0; mode < 2; ++mode) {
      binary::Problem p{q.data(), c.nq, d.data(), c.nd, c.bits, nbytes, c.dim, static_cast<binary::Mode>(mode)};
      const std::string tag = "binary bits=" + std::to_string(c.bits) + " dim=" + std::to_string(c.dim) +
                              " nq=" + std::to_string(c.nq) + " nd=" + std::to_string(c.nd) + " mode=" + std::to_string(mode);
      check(tag + " scores", [&](Isa isa) {
        std::vector<int32_t> out(static_cast<size_t>(c.nq * c.nd), 0x5a5a5a5a);
        binary::scores_isa(isa, p, out.data());
        Bytes b;
        put(b, out);
        return b;
      });
      for (int64_t k : {int64_t(1), int64_t(10), c.nd + 3}) {
        if (k < 1) continue;
        check(tag + " topk k=" + std::to_string(k), [&](Isa isa) {
          std::vector<int32_t> s(static_cast<size_t>(c.nq * k));
          std::vector<int64_t> ids(static_cast<size_t>(c.nq * k));
          binary::topk_isa(isa, p, k, s.data(), ids.data());
          Bytes b;
          put(b, s);
          put(b, ids);
          return b;
        });
      }
    }
  }
}

// binarize: every dtype, bits, rule and scale kind, dims around the 64-element blocks and the
// 128-element pairwise-sum leaves; rows of zeros, ties on the levels (dyadic rows), -0.0, subnormals.
void test_binarize() {
  const int64_t dims[] = {1, 7, 63, 64, 65, 129, 300, 1030};
  for (int dtype = 0; dtype < 4; ++dtype) {
    const int64_t item = dtype == 1 ? 8 : dtype == 0 ? 4 : 2;
    for (int64_t m : dims) {
      const int64_t n = 7, ld = m + 3;
      Bytes x(static_cast<size_t>(n * ld * item));
      std::vector<double> scale(static_cast<size_t>(n));
      for (int64_t r = 0; r < n; ++r) {
        scale[static_cast<size_t>(r)] = uniform(0.05, 3.0);
        for (int64_t j = 0; j < ld; ++j) {
          double v = uniform(-2.0, 2.0);
          if (r == 0) v = 0.0;                                   // all-zero row
          if (r == 1) v = double(randint(-8, 8)) * 0.25;          // ties
          if (r == 2 && j % 3 == 0) v = -0.0;
          if (r == 3) v = (j % 2 ? -1.0 : 1.0) * 1e-41 * double(randint(0, 9));  // float32 subnormals
          const size_t at = static_cast<size_t>((r * ld + j) * item);
          if (dtype == 0) { const float f = float(v); std::memcpy(&x[at], &f, 4); }
          if (dtype == 1) std::memcpy(&x[at], &v, 8);
          if (dtype == 2) { const uint16_t h = float_to_half_bits(float(v)); std::memcpy(&x[at], &h, 2); }
          if (dtype == 3) { const uint16_t h = float_to_bf16_bits(float(v)); std::memcpy(&x[at], &h, 2); }
        }
      }
      for (int bits = 1; bits <= 4; ++bits)
        for (int gt = 0; gt < 2; ++gt)
          for (int sk = 0; sk < 3; ++sk) {
            binary::BinarizeProblem p;
            p.x = x.data();
            p.dtype = dtype;
            p.n = n;
            p.m = m;
            p.ld = ld;
            p.bits = bits;
            p.scale = sk == 0 ? nullptr : scale.data();
            p.scale_stride = sk == 2 ? 1 : 0;
            p.gt = gt != 0;
            const std::string tag = "binarize dtype=" + std::to_string(dtype) + " m=" + std::to_string(m) +
                                    " bits=" + std::to_string(bits) + " gt=" + std::to_string(gt) + " scale=" + std::to_string(sk);
            check(tag, [&](Isa isa) {
              Bytes out(static_cast<size_t>(n * bits * ((m + 7) / 8)), 0xA5);
              const bool ok = binary::binarize_isa(isa, p, out.data());
              out.push_back(ok ? 1 : 0);
              return out;
            });
          }
    }
  }
  // NaN is reported, by every variant.
  std::vector<float> bad(130, 1.0f);
  bad[129] = NAN;
  binary::BinarizeProblem p;
  p.x = bad.data();
  p.n = 1;
  p.m = p.ld = 130;
  p.bits = 2;
  check("binarize nan", [&](Isa isa) {
    Bytes out(static_cast<size_t>(2 * 17));
    return Bytes{static_cast<uint8_t>(binary::binarize_isa(isa, p, out.data()) ? 1 : 0)};
  });
}

// ---- centroid -------------------------------------------------------------------------------------

Bytes make_x(centroid::DType dt, int64_t count) {
  Bytes b;
  for (int64_t i = 0; i < count; ++i) {
    const double v = uniform(-2.0, 2.0);
    switch (dt) {
      case centroid::DType::f64: { const double x = v; const auto* p = reinterpret_cast<const uint8_t*>(&x); b.insert(b.end(), p, p + 8); break; }
      case centroid::DType::f32: { const float x = float(v); const auto* p = reinterpret_cast<const uint8_t*>(&x); b.insert(b.end(), p, p + 4); break; }
      case centroid::DType::f16: { const uint16_t x = float_to_half_bits(float(v)); const auto* p = reinterpret_cast<const uint8_t*>(&x); b.insert(b.end(), p, p + 2); break; }
      case centroid::DType::bf16: { const uint16_t x = float_to_bf16_bits(float(v)); const auto* p = reinterpret_cast<const uint8_t*>(&x); b.insert(b.end(), p, p + 2); break; }
    }
  }
  return b;
}

void test_centroid() {
  struct Shape { int64_t n, d, k; };
  const Shape shapes[] = {{300, 17, 7}, {1, 3, 1}, {0, 8, 3}, {129, 64, 4}, {2000, 5, 2}, {50, 1, 60}};
  const centroid::DType dtypes[] = {centroid::DType::f32, centroid::DType::f64, centroid::DType::f16, centroid::DType::bf16};
  int combo = 0;
  for (const Shape& s : shapes)
    for (centroid::DType dt : dtypes)
      for (int reduce = 0; reduce < 4; ++reduce) {
        ++combo;
        const bool extreme = reduce >= 2;
        const int normalize = combo % 4;
        const bool weighted = !extreme && combo % 3 == 0;
        const bool loo = !extreme && combo % 5 == 1;
        const bool use_offsets = combo % 7 == 2;
        const bool labels32 = combo % 2 == 0;
        const size_t es = dt == centroid::DType::f64 ? 8 : (dt == centroid::DType::f32 ? 4 : 2);
        const size_t as = dt == centroid::DType::f64 ? 8 : 4;
        const Bytes x = make_x(dt, s.n * s.d);
        std::vector<int64_t> lab64(static_cast<size_t>(s.n));
        std::vector<int32_t> lab32(static_cast<size_t>(s.n));
        for (int64_t i = 0; i < s.n; ++i) lab32[i] = static_cast<int32_t>(lab64[i] = randint(0, s.k - 1));
        std::vector<int64_t> offsets(static_cast<size_t>(s.k + 1), 0);
        for (int64_t g = 1; g < s.k; ++g) offsets[g] = randint(offsets[g - 1], s.n);
        offsets[s.k] = s.n;
        Bytes w = make_x(as == 8 ? centroid::DType::f64 : centroid::DType::f32, s.n);
        centroid::Problem p;
        p.x = x.data();
        p.dtype = dt;
        p.n = s.n;
        p.d = s.d;
        if (use_offsets) p.offsets = offsets.data();
        else if (labels32) p.labels = lab32.data(), p.labels_int32 = true;
        else p.labels = lab64.data();
        p.k = s.k;
        p.weights = weighted ? w.data() : nullptr;
        p.reduce = static_cast<centroid::Reduce>(reduce);
        p.normalize = normalize;
        p.leave_one_out = loo;
        const int64_t rows = loo ? s.n : s.k;
        const std::string tag = "centroid n=" + std::to_string(s.n) + " d=" + std::to_string(s.d) + " k=" +
                                std::to_string(s.k) + " dtype=" + std::to_string(int(dt)) + " reduce=" + std::to_string(reduce) +
                                " normalize=" + std::to_string(normalize) + (weighted ? " weighted" : "") + (loo ? " loo" : "") +
                                (use_offsets ? " offsets" : "");
        const Bytes grad = make_x(dt, rows * s.d);
        check(tag, [&](Isa isa) {
          Bytes out(rows * s.d * es, 0xa5), wsum(s.k * as, 0xa5), norm(rows * as, 0xa5);
          std::vector<int64_t> counts(static_cast<size_t>(s.k), -7), arg(static_cast<size_t>(extreme ? s.k * s.d : 0), -7);
          centroid::ForwardOutputs o{out.data(), counts.data(), wsum.data(), extreme ? arg.data() : nullptr,
                                     (normalize & centroid::kNormalizePost) ? norm.data() : nullptr};
          centroid::forward_isa(isa, p, o);
          Bytes gx(s.n * s.d * es, 0xa5), gw(s.n * as, 0xa5);
          centroid::BackwardInputs in{grad.data(), out.data(), counts.data(), wsum.data(), o.arg, o.out_norm};
          centroid::BackwardOutputs go{gx.data(), weighted ? gw.data() : nullptr};
          centroid::backward_isa(isa, p, in, go);
          Bytes b = out;
          put(b, counts);
          put(b, arg);
          b.insert(b.end(), wsum.begin(), wsum.end());
          b.insert(b.end(), norm.begin(), norm.end());
          b.insert(b.end(), gx.begin(), gx.end());
          b.insert(b.end(), gw.begin(), gw.end());
          return b;
        });
      }
}

// ---- ternary --------------------------------------------------------------------------------------

struct TernaryCase { int64_t m, n, k; };

// Every ternary entry point (quantize, int8 on i2 and t5 weights, float) on each case.
void test_ternary_cases(const std::vector<TernaryCase>& cases) {
  const ternary::DType dtypes[] = {ternary::DType::f32, ternary::DType::f64, ternary::DType::f16, ternary::DType::bf16};
  int combo = 0;
  for (const TernaryCase& c : cases) {
    ++combo;
    const int64_t kp = ternary::padded_k(c.k);
    std::vector<uint8_t> packed(static_cast<size_t>(c.n * kp / 4), 0);
    for (int64_t j = 0; j < c.n; ++j)
      for (int64_t col = 0; col < kp; ++col) {
        const int code = col < c.k ? static_cast<int>(randint(0, 2)) : 1;
        const int64_t b = col / 256, s = (col % 256) / 64, t = col % 64;
        packed[j * (kp / 4) + 64 * b + t] |= static_cast<uint8_t>(code << (2 * s));
      }
    std::vector<float> scale(static_cast<size_t>(c.n)), bias(static_cast<size_t>(c.n));
    for (auto& v : scale) v = float(uniform(0.01, 2.0));
    for (auto& v : bias) v = float(uniform(-1.0, 1.0));
    const bool per_row = combo % 2 == 0;
    const ternary::Weights w{packed.data(), c.n, c.k, kp, scale.data(), per_row};
    const float* bp = combo % 3 ? bias.data() : nullptr;
    const std::string tag = "ternary m=" + std::to_string(c.m) + " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k);
    for (ternary::DType dt : dtypes) {
      const centroid::DType cdt = static_cast<centroid::DType>(static_cast<int>(dt));  // same codes
      const Bytes x = make_x(cdt, c.m * c.k);
      for (ternary::ScaleRule rule : {ternary::ScaleRule::divide, ternary::ScaleRule::reciprocal})
        check(tag + " quantize dtype=" + std::to_string(int(dt)) + " scale_rule=" + std::to_string(int(rule)),
              [&](Isa isa) {
                std::vector<int8_t> xq(static_cast<size_t>(c.m * kp), 99);
                std::vector<float> xs(static_cast<size_t>(c.m), -1.f);
                ternary::quantize_activations_isa(isa, x.data(), dt, c.m, c.k, kp, 1e-5f, xq.data(), xs.data(), rule);
                Bytes b;
                put(b, xq);
                put(b, xs);
                return b;
              });
    }
    // Integer path on the same activations for every variant (serial-quantized).
    const Bytes xf = make_x(centroid::DType::f32, c.m * c.k);
    std::vector<int8_t> xq(static_cast<size_t>(c.m * kp));
    std::vector<float> xs(static_cast<size_t>(c.m));
    ternary::quantize_activations_isa(Isa::serial, xf.data(), ternary::DType::f32, c.m, c.k, kp, 1e-5f, xq.data(), xs.data());
    check(tag + " matmul_int8", [&](Isa isa) {
      std::vector<float> out(static_cast<size_t>(c.m * c.n), -3.f);
      std::vector<int32_t> acc(static_cast<size_t>(c.m * c.n), -3);
      ternary::matmul_int8_isa(isa, xq.data(), xs.data(), c.m, w, bp, out.data(), acc.data());
      Bytes b;
      put(b, out);
      put(b, acc);
      return b;
    });
    // The same codes in the t5 layout (5 per byte, ternary.h): the same int32 sums and outputs, on
    // activations padded to kp5 (zeros past k), and a flag that they equal the i2 result.
    {
      const int64_t kp5 = ternary::padded_k_t5(c.k);
      std::vector<uint8_t> p5(static_cast<size_t>(c.n * kp5 / 5));
      for (int64_t j = 0; j < c.n; ++j)
        for (int64_t bb = 0; bb < kp5 / 320; ++bb)
          for (int64_t t = 0; t < 64; ++t) {
            uint32_t v = 0;
            for (int d = 0; d < 5; ++d) {
              const int64_t col = bb * 320 + 64 * d + t;
              const int code = col < c.k ? (packed[j * (kp / 4) + 64 * (col / 256) + col % 64] >> (2 * ((col % 256) / 64))) & 3 : 1;
              v = v * 3 + static_cast<uint32_t>(code);
            }
            p5[j * (kp5 / 5) + 64 * bb + t] = static_cast<uint8_t>((v * 256 + 242) / 243);
          }
      ternary::Weights w5 = w;
      w5.packed = p5.data();
      w5.kp = kp5;
      w5.format = ternary::Format::t5;
      std::vector<int8_t> xq5(static_cast<size_t>(c.m * kp5), 0);
      for (int64_t i = 0; i < c.m; ++i) std::memcpy(xq5.data() + i * kp5, xq.data() + i * kp, static_cast<size_t>(c.k));
      check(tag + " matmul_int8 t5", [&](Isa isa) {
        std::vector<float> out(static_cast<size_t>(c.m * c.n), -3.f), out2(out);
        std::vector<int32_t> acc(static_cast<size_t>(c.m * c.n), -3), acc2(acc);
        ternary::matmul_int8_isa(isa, xq5.data(), xs.data(), c.m, w5, bp, out.data(), acc.data());
        ternary::matmul_int8_isa(isa, xq.data(), xs.data(), c.m, w, bp, out2.data(), acc2.data());
        Bytes b;
        put(b, out);
        put(b, acc);
        b.push_back(static_cast<uint8_t>(out == out2 && acc == acc2));
        if (!(out == out2 && acc == acc2)) b.push_back(static_cast<uint8_t>(isa));  // differs from serial's
        return b;
      });
    }
    auto float_close = [&](Isa isa, const Bytes& ref, const Bytes& got) {
      if (isa == Isa::neon || isa == Isa::dotprod || isa == Isa::serial)
        return std::memcmp(ref.data(), got.data(), ref.size()) == 0;
      const float* r = reinterpret_cast<const float*>(ref.data());
      const float* g = reinterpret_cast<const float*>(got.data());
      for (size_t i = 0; i < ref.size() / 4; ++i)
        if (!(std::fabs(r[i] - g[i]) <= 1e-4f * (1.f + std::fabs(r[i])) * std::sqrt(float(c.k)))) return false;
      return true;
    };
    check(tag + " matmul_float", [&](Isa isa) {
      std::vector<float> out(static_cast<size_t>(c.m * c.n), -3.f);
      ternary::matmul_float_isa(isa, reinterpret_cast<const float*>(xf.data()), c.m, w, bp, out.data());
      Bytes b;
      put(b, out);
      return b;
    }, float_close);
  }
}

void test_ternary() {
  // Past the GEMV tiles' flush groups (3 x 2100), just above avx2's GEMM crossover (33; 40), more
  // rows than one GEMM pass (260 > kMc).
  test_ternary_cases({{1, 17, 256}, {1, 50, 300}, {2, 13, 1000}, {3, 9, 5},   {5, 33, 512},  {8, 16, 768},
                      {9, 7, 257},  {17, 48, 512}, {40, 97, 300}, {0, 5, 64}, {4, 1, 1},     {1, 64, 2560},
                      {3, 15, 2100}, {33, 50, 1290}, {260, 7, 300}});
}

// The GEMM forms at and around their crossovers (16 rows for ARM64 i8mm, 32 for avx2): odd
// n and k, n not a multiple of the 48-column panel, t5 weights (transcoded to i2 for the GEMM form),
// on 1 and 2 threads. .ci/arm64 also runs the driver with FASTEMB_TERNARY_GEMM_MIN_ROWS=1, so that
// every m of test_ternary goes through the GEMM form too.
void test_ternary_gemm(int threads) {
  const int before = g_passed + g_failed, failed = g_failed;
  for (int t : {1, 2}) {
    set_num_threads(t);
    test_ternary_cases({{15, 33, 700}, {16, 50, 300}, {17, 97, 513}, {31, 49, 300}, {32, 48, 256}, {32, 97, 1},
                        {47, 50, 513}, {64, 3, 1000}, {97, 145, 77}});
  }
  set_num_threads(threads);
  std::printf("ternary GEMM-crossover cases (kernel variant %s, threads 1 and 2): %d checks, %d failed\n",
              g_variant_label ? g_variant_label : ternary::kernel_variant_name(best_isa()), g_passed + g_failed - before,
              g_failed - failed);
}

// The avx2 ISA's other ternary kernel sets (set_avx2_kernels_for_testing, ternary_internal.h), each
// through test_ternary and test_ternary_gemm in place of the kernels avx2 runs: the AVX-VNNI
// variant's EVEX twin (tests/native/ternary_avxvnni_evex.cpp) on CPUs with AVX512-VNNI + AVX512VL,
// and the plain AVX2 kernels on CPUs with AVX-VNNI (where avx2 itself runs the AVX-VNNI variant).
void test_ternary_avx2_sets() {
  if (!isa_supported(Isa::avx2)) return;
  const CpuFeatures& f = cpu_features();
  struct Set {
    const char* label;
    ternary::IsaKernels kernels;
    bool runs;
    const char* needs;
  };
  std::vector<Set> sets;
#if defined(FASTEMB_TERNARY_EVEX_TWIN)
  sets.push_back({"avx2_vnni EVEX twin", ternary::avxvnni_evex_kernels(), f.avx512vnni && f.avx512vl,
                  "AVX512-VNNI + AVX512VL"});
#endif
  sets.push_back({"avx2 plain", ternary::plain_avx2_kernels(), f.avxvnni, "AVX-VNNI (else avx2 runs it above)"});
  const std::vector<Isa> saved = g_variants;
  g_variants = {Isa::avx2};
  for (const Set& s : sets) {
    if (!s.runs) {
      std::printf("ternary %s: not run (needs %s)\n", s.label, s.needs);
      continue;
    }
    ternary::set_avx2_kernels_for_testing(&s.kernels);
    g_variant_label = s.label;
    const int before = g_passed + g_failed, failed = g_failed;
    test_ternary();
    std::printf("ternary %s: %d checks, %d failed\n", s.label, g_passed + g_failed - before, g_failed - failed);
    test_ternary_gemm(get_num_threads());
  }
  ternary::set_avx2_kernels_for_testing(nullptr);
  g_variant_label = nullptr;
  g_variants = saved;
}

// ---- graph ----------------------------------------------------------------------------------------

struct CsrOwned {
  std::vector<int64_t> indptr;
  std::vector<int64_t> idx64;
  std::vector<int32_t> idx32;
  std::vector<float> data;
  graph::Csr csr;
};

CsrOwned random_csr(int64_t rows, int64_t cols, double density, bool i32, bool with_data) {
  CsrOwned c;
  c.indptr.push_back(0);
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t deg = cols > 0 ? randint(0, std::max<int64_t>(0, int64_t(density * cols * 2))) : 0;
    for (int64_t e = 0; e < deg; ++e) {
      const int64_t col = randint(0, cols - 1);
      c.idx64.push_back(col);
      c.idx32.push_back(static_cast<int32_t>(col));
      c.data.push_back(float(uniform(-1.0, 2.0)));
    }
    c.indptr.push_back(static_cast<int64_t>(c.idx64.size()));
  }
  c.csr.indptr = c.indptr.data();
  c.csr.indices = i32 ? static_cast<const void*>(c.idx32.data()) : static_cast<const void*>(c.idx64.data());
  c.csr.indices_int32 = i32;
  c.csr.data = with_data ? c.data.data() : nullptr;
  c.csr.rows = rows;
  c.csr.cols = cols;
  return c;
}

std::vector<float> randf(int64_t count, double zero_frac = 0.0) {
  std::vector<float> v(static_cast<size_t>(count));
  for (auto& x : v) x = uniform(0, 1) < zero_frac ? 0.f : float(uniform(-1.0, 1.0));
  return v;
}

void test_graph() {
  const int64_t ds[] = {1, 16, 37, 128};
  const int64_t ns[] = {1, 9, 200};
  int combo = 0;
  for (int64_t d : ds)
    for (int64_t n : ns) {
      ++combo;
      const double s = combo % 2 ? 3.0 : std::sqrt(double(n) + 1);
      graph::RandomSpec r;
      r.seed = 1000 + combo;
      r.threshold = static_cast<uint64_t>(std::floor(9007199254740992.0 / s));
      r.value = float(std::sqrt(s / double(d)));
      r.d = d;
      const std::string tag = "graph n=" + std::to_string(n) + " d=" + std::to_string(d);
      const std::vector<float> scale = randf(n);
      check(tag + " random_rows", [&](Isa isa) {
        std::vector<float> out(static_cast<size_t>(n * d));
        graph::random_rows_isa(isa, r, 5, n, combo % 3 ? scale.data() : nullptr, out.data());
        Bytes b;
        put(b, out);
        return b;
      });
      const int64_t n_in = n + 3;
      const std::vector<float> x = randf(n * n_in, 0.3);
      check(tag + " project_dense", [&](Isa isa) {
        std::vector<float> out(static_cast<size_t>(n * d));
        graph::project_dense_isa(isa, r, x.data(), n, n_in, out.data());
        Bytes b;
        put(b, out);
        return b;
      });
      const CsrOwned xc = random_csr(n, n_in, 0.2, combo % 2 == 0, combo % 3 != 0);
      check(tag + " project_csr", [&](Isa isa) {
        std::vector<float> out(static_cast<size_t>(n * d));
        graph::project_csr_isa(isa, r, xc.csr, out.data());
        Bytes b;
        put(b, out);
        return b;
      });
      const CsrOwned a = random_csr(n, n, 0.1, combo % 2 == 1, combo % 4 != 0);
      const std::vector<float> prev = randf(n * d), acc0 = randf(n * d);
      for (int variant = 0; variant < 4; ++variant) {
        const bool normalize = variant & 1, prop_norm = variant & 2, init = variant == 3;
        check(tag + " propagate v=" + std::to_string(variant), [&](Isa isa) {
          std::vector<float> cur(static_cast<size_t>(n * d)), accum = acc0;
          graph::propagate_isa(isa, a.csr, scale.data(), prev.data(), d, cur.data(), normalize, prop_norm, 0.7f,
                               accum.data(), init);
          Bytes b;
          put(b, cur);
          put(b, accum);
          return b;
        });
        check(tag + " propagate_random v=" + std::to_string(variant), [&](Isa isa) {
          std::vector<float> cur(static_cast<size_t>(n * d)), accum = acc0;
          graph::propagate_random_isa(isa, r, scale.data(), a.csr, scale.data(), cur.data(), normalize, prop_norm,
                                      0.3f, variant ? accum.data() : nullptr, init);
          Bytes b;
          put(b, cur);
          put(b, accum);
          return b;
        });
      }
      // fastemb.dask's entry points: a chain of two links continued in place from a nonzero partial
      // accumulator (acc_in = out), the second finishing; and the first step's fused random block.
      for (int variant = 0; variant < 4; ++variant) {
        const bool normalize = variant & 1, prop_norm = variant & 2, init = variant == 3;
        check(tag + " propagate_block chain v=" + std::to_string(variant), [&](Isa isa) {
          std::vector<float> out = acc0, accum = acc0;
          graph::propagate_block_isa(isa, a.csr, n, scale.data(), prev.data(), d, out.data(), out.data(), false,
                                     normalize, prop_norm, 0.f, nullptr);
          graph::propagate_block_isa(isa, a.csr, n, scale.data(), acc0.data(), d, out.data(), out.data(), true,
                                     normalize, prop_norm, 0.6f, variant ? accum.data() : nullptr, init);
          Bytes b;
          put(b, out);
          put(b, accum);
          return b;
        });
        check(tag + " propagate_random_block v=" + std::to_string(variant), [&](Isa isa) {
          std::vector<int64_t> offsets(static_cast<size_t>(n + 1));
          graph::random_table_offsets_isa(isa, r, 3, n, offsets.data());
          std::vector<int32_t> lists(static_cast<size_t>(offsets[n]));
          graph::random_table_lists_isa(isa, r, 3, n, offsets.data(), lists.data(), offsets[n]);
          std::vector<float> out(static_cast<size_t>(n * d)), accum = acc0;
          graph::propagate_random_block_isa(isa, r, scale.data(), offsets.data(), lists.data(), offsets[n], a.csr, n,
                                            scale.data(), variant == 2 ? acc0.data() : nullptr, out.data(), true,
                                            normalize, prop_norm, 0.4f, variant ? accum.data() : nullptr, init);
          Bytes b;
          put(b, offsets);
          put(b, lists);
          put(b, out);
          put(b, accum);
          return b;
        });
      }
      check(tag + " accumulate", [&](Isa isa) {
        std::vector<float> accum = acc0;
        graph::accumulate_isa(isa, prev.data(), n, d, combo % 2 == 0, 0.25f, accum.data());
        Bytes b;
        put(b, accum);
        return b;
      });
    }
}


// MaxSim, its top-k and MUVERA FDEs (multivector.h): odd dims, empty and one-token sets, every sketch.
void test_multivector() {
  const int64_t dims[] = {1, 7, 16, 37, 128};
  int combo = 0;
  for (int64_t dim : dims) {
    ++combo;
    auto sets = [&](int64_t n, int64_t max_len, std::vector<int64_t>& off) {
      off.assign(1, 0);
      for (int64_t i = 0; i < n; ++i) off.push_back(off.back() + (i % 5 == 2 ? 0 : randint(1, max_len)));
      return randf(off.back() * dim);
    };
    std::vector<int64_t> qo, dof;
    const std::vector<float> q = sets(6, 40, qo), d = sets(25, 50, dof);
    const multivector::TokenSets qs{q.data(), qo.back(), dim, qo.data(), qo.data() + 1, 6};
    const multivector::TokenSets ds{d.data(), dof.back(), dim, dof.data(), dof.data() + 1, 25};
    const std::string tag = "multivector dim=" + std::to_string(dim);
    check(tag + " maxsim", [&](Isa isa) {
      std::vector<float> out(6 * 25);
      multivector::maxsim_isa(isa, qs, ds, out.data());
      Bytes b;
      put(b, out);
      return b;
    });
    check(tag + " maxsim_topk", [&](Isa isa) {
      std::vector<float> s(6 * 30);
      std::vector<int64_t> ids(6 * 30);
      multivector::maxsim_topk_isa(isa, qs, ds, 30, s.data(), ids.data());
      Bytes b;
      put(b, s);
      put(b, ids);
      return b;
    });
    const int ks[] = {0, 3, 5};
    const int64_t projs[] = {0, 5, 16};
    for (int k : ks)
      for (int64_t dp : projs)
        for (int doc = 0; doc < 2; ++doc) {
          multivector::FdeSpec s;
          s.repetitions = 3;
          s.k_sim = k;
          s.d_proj = dp;
          s.final_dim = (combo + k) % 2 ? 29 : 0;
          s.document = doc;
          s.fill_empty = doc;
          s.seed = 77 + combo;
          check(tag + " fde k=" + std::to_string(k) + " d_proj=" + std::to_string(dp) + " doc=" + std::to_string(doc),
                [&](Isa isa) {
                  std::vector<float> out(static_cast<size_t>(25 * multivector::fde_dim(s, dim)));
                  multivector::muvera_fde_isa(isa, s, ds, out.data());
                  Bytes b;
                  put(b, out);
                  return b;
                });
        }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--threads") threads = std::atoi(argv[i + 1]);
  set_num_threads(threads);
  std::string names;
  for (Isa isa : kAllIsas)
    if (isa != Isa::serial && isa_supported(isa)) {
      g_variants.push_back(isa);
      names += std::string(names.empty() ? "" : ", ") + isa_name(isa);
    }
  if (!active_isa_error().empty()) std::printf("active ISA error: %s\n", active_isa_error().c_str());
  const CpuFeatures& f = cpu_features();
  std::printf("fastemb isa driver: active ISA %s; variants checked against serial: %s\n", isa_name(active_isa()),
              names.empty() ? "(none)" : names.c_str());
  std::printf("cpu: avx2=%d avx512f=%d vpopcntdq=%d vnni=%d avxvnni=%d asimd=%d asimddp=%d i8mm=%d; kernels: binary=%s "
              "ternary=%s\n",
              f.avx2, f.avx512f, f.avx512vpopcntdq, f.avx512vnni, f.avxvnni, f.asimd, f.asimddp, f.i8mm,
              isa_name(binary::kernel_isa(best_isa())), ternary::kernel_variant_name(best_isa()));
  test_binary();
  test_binarize();
  const int b = g_passed + g_failed;
  test_centroid();
  const int c = g_passed + g_failed;
  test_ternary();
  test_ternary_avx2_sets();
  test_ternary_gemm(threads);
  const int t = g_passed + g_failed;
  test_graph();
  const int g = g_passed + g_failed;
  test_multivector();
  std::printf("checks per family: binary %d, centroid %d, ternary %d, graph %d, multivector %d\n", b, c - b, t - c, g - t,
              g_passed + g_failed - g);
  std::printf("(%d of the passed checks are inputs both variants reject with the same error)\n", g_rejected);
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  if (g_variants.empty()) std::printf("note: no SIMD variant on this CPU; nothing was compared\n");
  return g_failed == 0 ? 0 : 1;
}
