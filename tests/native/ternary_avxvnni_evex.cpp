// The EVEX twin of the ternary AVX-VNNI variant (src/cpp/ternary/ternary_avxvnni.cpp), built only
// into the native ISA driver (CMakeLists.txt, FASTEMB_ISA_DRIVER=ON). Why it exists: the AVX-VNNI
// variant's vpdpbusd is VEX-encoded and runs only on CPUs with AVX-VNNI (Alder Lake and later
// Intel client cores, Sapphire Rapids, Zen 5); AVX-512 CPUs without it (Zen 4, Ice Lake) and
// qemu-x86_64 cannot run it. This file compiles the same kernels (ternary_kernels.h, the same
// AVX2 code and the same dp_add product step) with vpdpbusd on ymm in its EVEX form
// (AVX512-VNNI + AVX512VL: the same operation, another encoding), so the driver can check that
// code path against serial wherever AVX512-VNNI + VL exist, bit for bit.
#define FASTEMB_ISA_NS avxvnni_evex
#define FASTEMB_TERNARY_AVXVNNI_EVEX 1
#include "ternary/ternary_kernels.h"

namespace fastemb::ternary {
// The twin's kernel set, for set_avx2_kernels_for_testing (declared in isa_driver.cpp).
IsaKernels avxvnni_evex_kernels() {
  return {avxvnni_evex::quantize_rows, avxvnni_evex::int8_gemv, avxvnni_evex::int8_gemv_t5, avxvnni_evex::int8_gemm,
          avxvnni_evex::float_rows, true};
}
}  // namespace fastemb::ternary
