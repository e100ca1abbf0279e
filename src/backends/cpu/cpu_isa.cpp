// Highway target names ↔ the names users type, and the process-wide dispatch cap.
#include "backends/cpu_isa.hpp"

#include <cstdint>

#include "hwy/targets.h"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

struct IsaName {
  int64_t target;
  const char* name;
};

// Best first, as Highway orders its target bits (a lower bit is a better target).
constexpr IsaName kIsas[] = {
#if HWY_ARCH_X86
    {HWY_AVX3_DL, "avx512vnni"}, {HWY_AVX3, "avx512"},   {HWY_AVX2, "avx2"},
    {HWY_SSE4, "sse4"},          {HWY_SSSE3, "ssse3"},
#endif
    {HWY_EMU128, "scalar"},      {HWY_SCALAR, "scalar"},
};

const char* name_of(int64_t target) {
  for (const IsaName& i : kIsas)
    if (i.target == target) return i.name;
  return hwy::TargetName(target);
}

}  // namespace

std::vector<std::string> available_cpu_isas() {
  std::vector<std::string> out;
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) {
    std::string n = name_of(t);
    if (out.empty() || out.back() != n) out.push_back(std::move(n));
  }
  return out;
}

std::string current_cpu_isa() {
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  return targets.empty() ? "none" : name_of(targets.front());
}

void cap_cpu_isa(std::string_view name) {
  if (name == "native") return hwy::DisableTargets(0);
  int64_t wanted = 0;  // the named target, or (scalar) either of Highway's two portable ones
  std::string known;
  for (const IsaName& i : kIsas) {
    if (name == i.name) wanted |= i.target;
    if (known.empty() || known.substr(known.rfind(' ') + 1) != i.name)
      known += std::string(", ") + i.name;
  }
  if (wanted == 0)
    throw Error("unknown ISA '" + std::string(name) + "' (expected native" + known + ")");
  const int64_t before = hwy::SupportedTargets() & HWY_TARGETS;
  hwy::DisableTargets(0);  // caps do not stack: each call starts from the CPU's own set
  const int64_t usable = hwy::SupportedTargets() & HWY_TARGETS & wanted;
  if (usable == 0) {
    hwy::DisableTargets((before & -before) - 1);  // the cap in force before this call
    std::string available;
    for (const std::string& n : available_cpu_isas())
      available += (available.empty() ? "" : ", ") + n;
    throw Error("ISA '" + std::string(name) + "' is not available here (available: " + available +
                ")");
  }
  hwy::DisableTargets((usable & -usable) - 1);  // every better target: the lower bits
}

}  // namespace rwkv7
