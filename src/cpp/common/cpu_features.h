// CPU feature detection and the run-time ISA choice shared by every kernel family.
#pragma once
#include <string>

namespace fastemb {

// x86-64: serial, avx2, avx512. ARM64: serial, neon (baseline AdvSIMD), dotprod (+ sdot/udot).
// Every name parses on every architecture; the other architecture's ISAs are never supported.
enum class Isa : int { serial = 0, avx2 = 1, avx512 = 2, neon = 3, dotprod = 4 };
constexpr Isa kAllIsas[] = {Isa::serial, Isa::avx2, Isa::avx512, Isa::neon, Isa::dotprod};

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false, bmi2 = false, popcnt = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vpopcntdq = false, avx512vnni = false;
  // AVX-VNNI: vpdpbusd & co. on xmm/ymm, VEX-encoded (CPUID.(EAX=7,ECX=1):EAX[4]; Alder Lake and later
  // Intel client cores, Sapphire Rapids, Zen 5). Independent of AVX512-VNNI (EVEX).
  bool avxvnni = false;
  // ARM64 (getauxval(AT_HWCAP/AT_HWCAP2) on Linux, sysctl hw.optional.* on macOS).
  bool asimd = false, asimddp = false, i8mm = false;
};

const CpuFeatures& cpu_features();
bool isa_supported(Isa isa);
const char* isa_name(Isa isa);
// Parses "serial" | "avx2" | "avx512" | "neon" | "dotprod"; returns false for anything else.
bool parse_isa(const std::string& name, Isa* out);

// The ISA the kernels use: the best the CPU supports, or FASTEMB_FORCE_ISA when set
// (an unsupported or unknown forced ISA is an error reported by active_isa_error()).
Isa active_isa();
std::string active_isa_error();
// Pins the ISA at run time (tests use it to run every variant); throws std::invalid_argument
// when the CPU lacks it.
void set_active_isa(Isa isa);
// Best ISA the CPU supports.
Isa best_isa();
// "serial, avx2, avx512" / "serial, neon, dotprod": the ISA names of this build's architecture.
const char* isa_names_for_arch();

}  // namespace fastemb
