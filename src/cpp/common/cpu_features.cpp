#include "common/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(FASTEMB_X86)
#include <cpuid.h>
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
  }
  f.fma = f.fma && ymm_ok;
  f.f16c = f.f16c && ymm_ok;
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
        error = std::string("FASTEMB_FORCE_ISA=") + env + " is not one of serial, avx2, avx512";
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
    default: return false;
  }
  (void)f;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::serial: return "serial";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "unknown";
}

bool parse_isa(const std::string& name, Isa* out) {
  for (Isa isa : {Isa::serial, Isa::avx2, Isa::avx512}) {
    if (name == isa_name(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

Isa best_isa() {
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
