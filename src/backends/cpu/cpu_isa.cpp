// Highway target names ↔ the names users type, and the process-wide dispatch cap.
#include "backends/cpu_isa.hpp"

#include <atomic>
#include <cstdint>
#include <cstdlib>

#include "backends/cpu/gemm_packed_kernels.hpp"
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

// The targets disabled by the cap in force (0 = none). Highway keeps the cap process-wide; it is
// mirrored here because Highway 1.0's SupportedTargets() re-chooses the dispatch target from the
// CPU's own set, dropping the cap (the next kernel call ran the uncapped code while
// current_cpu_isa() still named the cap): every query below re-applies it.
std::atomic<int64_t>& disabled_targets() {
  static std::atomic<int64_t> disabled{0};
  return disabled;
}

void apply_cap(int64_t disabled) {
  disabled_targets().store(disabled);
  hwy::DisableTargets(disabled);  // also makes the next dispatch choose again, under the cap
}

// The targets this CPU (or Highway's test mock) runs under the cap, best (lowest bit) first.
int64_t supported_targets() {
  const int64_t targets = hwy::SupportedTargets();
  if (const int64_t disabled = disabled_targets().load(); disabled != 0)
    hwy::DisableTargets(disabled);
  return targets;
}

// The generated targets among them, best first.
std::vector<int64_t> usable_targets() {
  std::vector<int64_t> out;
  for (int64_t t = supported_targets() & HWY_TARGETS; t != 0; t &= t - 1) out.push_back(t & -t);
  return out;
}

const char* name_of(int64_t target) {
  for (const IsaName& i : kIsas)
    if (i.target == target) return i.name;
  return hwy::TargetName(target);
}

}  // namespace

std::vector<std::string> available_cpu_isas() {
  std::vector<std::string> out;
  for (int64_t t : usable_targets()) {
    std::string n = name_of(t);
    if (out.empty() || out.back() != n) out.push_back(std::move(n));
  }
  return out;
}

std::string current_cpu_isa() {
  const std::vector<int64_t> targets = usable_targets();
  return targets.empty() ? "none" : name_of(targets.front());
}

void cap_cpu_isa(std::string_view name) {
  if (name == "native") return apply_cap(0);
  int64_t wanted = 0;  // the named target, or (scalar) either of Highway's two portable ones
  std::string known;
  for (const IsaName& i : kIsas) {
    if (name == i.name) wanted |= i.target;
    if (known.empty() || known.substr(known.rfind(' ') + 1) != i.name)
      known += std::string(", ") + i.name;
  }
  if (wanted == 0)
    throw Error("unknown ISA '" + std::string(name) + "' (expected native" + known + ")");
  const int64_t before = disabled_targets().load();
  apply_cap(0);  // caps do not stack: each call starts from the CPU's own set
  const int64_t usable = supported_targets() & HWY_TARGETS & wanted;
  if (usable == 0) {
    apply_cap(before);  // the cap in force before this call
    std::string available;
    for (const std::string& n : available_cpu_isas())
      available += (available.empty() ? "" : ", ") + n;
    throw Error("ISA '" + std::string(name) + "' is not available here (available: " + available +
                ")");
  }
  apply_cap((usable & -usable) - 1);  // every better target: the lower bits
}

void cap_cpu_isa_from_env() {
  if (const char* isa = std::getenv("RWKV7_ISA"); isa != nullptr && *isa != '\0') cap_cpu_isa(isa);
}

bool cpu_target_at_least(int64_t target) {
  return cpu::dispatched_target() <= target;  // a lower bit is a better target
}

}  // namespace rwkv7
