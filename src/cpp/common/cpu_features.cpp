#include "common/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(FASTEMB_X86)
#include <cpuid.h>
#endif
#if defined(FASTEMB_ARM64) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#elif defined(FASTEMB_ARM64) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace fastemb {
namespace {

#if defined(FASTEMB_X86)
unsigned long long read_xcr0() {
  unsigned eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(FASTEMB_X86)
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = ecx & (1u << 27);
  f.popcnt = ecx & (1u << 23);
  f.fma = ecx & (1u << 12);
  f.f16c = ecx & (1u << 29);
  bool ymm_ok = false, zmm_ok = false;
  if (osxsave) {
    const unsigned long long xcr0 = read_xcr0();
    ymm_ok = (xcr0 & 0x6) == 0x6;            // XMM and YMM state saved by the OS
    zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  }
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    f.avx2 = ymm_ok && (ebx & (1u << 5));
    f.bmi2 = ebx & (1u << 8);
    f.avx512f = zmm_ok && (ebx & (1u << 16));
    f.avx512dq = zmm_ok && (ebx & (1u << 17));
    f.avx512bw = zmm_ok && (ebx & (1u << 30));
    f.avx512vl = zmm_ok && (ebx & (1u << 31));
    f.avx512vnni = zmm_ok && (ecx & (1u << 11));
    f.avx512vpopcntdq = zmm_ok && (ecx & (1u << 14));
    // Subleaf 1 exists when subleaf 0 reports a max subleaf (EAX) >= 1.
    unsigned eax1, ebx1, ecx1, edx1;
    if (eax >= 1 && __get_cpuid_count(7, 1, &eax1, &ebx1, &ecx1, &edx1)) f.avxvnni = ymm_ok && (eax1 & (1u << 4));
  }
  f.fma = f.fma && ymm_ok;
  f.f16c = f.f16c && ymm_ok;
#elif defined(FASTEMB_ARM64) && defined(__linux__)
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  f.asimd = hw & HWCAP_ASIMD;
  f.asimddp = f.asimd && (hw & HWCAP_ASIMDDP);
  f.i8mm = f.asimd && (hw2 & HWCAP2_I8MM);
#elif defined(FASTEMB_ARM64) && defined(__APPLE__)
  // Apple silicon: AdvSIMD is always there; the optional features are sysctl flags (untested here).
  auto flag = [](const char* name) {
    int v = 0;
    size_t len = sizeof(v);
    return sysctlbyname(name, &v, &len, nullptr, 0) == 0 && v != 0;
  };
  f.asimd = true;
  f.asimddp = flag("hw.optional.arm.FEAT_DotProd");
  f.i8mm = flag("hw.optional.arm.FEAT_I8MM");
#elif defined(FASTEMB_ARM64)
  f.asimd = true;  // AdvSIMD is part of the ARMv8-A baseline
#endif
  return f;
}

struct IsaState {
  std::atomic<int> isa{static_cast<int>(Isa::serial)};
  std::string error;
  IsaState() {
    Isa chosen = best_isa();
    if (const char* env = std::getenv("FASTEMB_FORCE_ISA"); env && *env) {
      Isa forced;
      if (!parse_isa(env, &forced)) {
        error = std::string("FASTEMB_FORCE_ISA=") + env + " is not one of " + isa_names_for_arch();
      } else if (!isa_supported(forced)) {
        error = std::string("FASTEMB_FORCE_ISA=") + env + " is not supported by this CPU";
      } else {
        chosen = forced;
      }
    }
    isa.store(static_cast<int>(chosen));
  }
};

IsaState& isa_state() {
  static IsaState state;
  return state;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::serial: return true;
#if defined(FASTEMB_X86)
    case Isa::avx2: return f.avx2 && f.fma && f.f16c;
    case Isa::avx512: return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx2 && f.fma && f.f16c;
#endif
#if defined(FASTEMB_ARM64)
    case Isa::neon: return f.asimd;
    case Isa::dotprod: return f.asimd && f.asimddp;
#endif
    default: return false;
  }
  (void)f;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::serial: return "serial";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::neon: return "neon";
    case Isa::dotprod: return "dotprod";
  }
  return "unknown";
}

const char* isa_names_for_arch() {
#if defined(FASTEMB_ARM64)
  return "serial, neon, dotprod";
#else
  return "serial, avx2, avx512";
#endif
}

bool parse_isa(const std::string& name, Isa* out) {
  for (Isa isa : kAllIsas) {
    if (name == isa_name(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

Isa best_isa() {
  if (isa_supported(Isa::dotprod)) return Isa::dotprod;
  if (isa_supported(Isa::neon)) return Isa::neon;
  if (isa_supported(Isa::avx512)) return Isa::avx512;
  if (isa_supported(Isa::avx2)) return Isa::avx2;
  return Isa::serial;
}

Isa active_isa() { return static_cast<Isa>(isa_state().isa.load(std::memory_order_relaxed)); }

std::string active_isa_error() { return isa_state().error; }

void set_active_isa(Isa isa) {
  if (!isa_supported(isa)) throw std::invalid_argument(std::string("isa '") + isa_name(isa) + "' is not supported by this CPU");
  isa_state().isa.store(static_cast<int>(isa));
}

}  // namespace fastemb
