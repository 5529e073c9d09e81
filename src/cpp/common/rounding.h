// Float arithmetic rounded one operation at a time, on the host and on the device. The host build
// uses -ffp-contract=off; nvcc contracts a * b + c into an FMA unless each operation is an
// explicit __f*_rn intrinsic. Kernels whose CPU and CUDA results must agree bit for bit use these.
#pragma once

#include "common/float16.h"  // FASTEMB_HD

namespace fastemb {

static inline FASTEMB_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

static inline FASTEMB_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

static inline FASTEMB_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

static inline FASTEMB_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

static inline FASTEMB_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

}  // namespace fastemb
