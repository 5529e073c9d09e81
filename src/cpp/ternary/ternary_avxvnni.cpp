// The ternary kernels compiled for AVX2 + AVX-VNNI (kernel variant "avx2_vnni": the avx2 code with
// vpdpbusd on ymm as its product step, ternary_kernels.h dp_add; flags set in CMakeLists.txt, built
// only when the compiler takes -mavxvnni). The dispatcher runs it in place of avx2 on CPUs with
// AVX-VNNI (CPUID.(EAX=7,ECX=1):EAX[4]).
#define FASTEMB_ISA_NS avxvnni
#define FASTEMB_TERNARY_AVXVNNI 1
#include "ternary/ternary_kernels.h"
