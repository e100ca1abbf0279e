// set_cpu_isa caps the kernels' dispatch: the named set is used, better ones are not, a name
// that is unknown or unavailable is an error naming it, and "native" restores the best.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "hwy/targets.h"
#include "rwkv7/error.hpp"
#include "rwkv7/machine.hpp"

namespace rwkv7 {
namespace {

TEST(CpuIsa, CapsTheDispatchAndNativeRestoresIt) {
  const std::vector<std::string> isas = cpu_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(cpu_isa(), isas.front());
  for (const std::string& isa : isas) {
    set_cpu_isa(isa);
    EXPECT_EQ(cpu_isa(), isa);
    // Everything at or below the cap stays available, nothing above it.
    const std::vector<std::string> now = cpu_isas();
    EXPECT_EQ(now.front(), isa);
    EXPECT_EQ(now.size(), isas.end() - std::find(isas.begin(), isas.end(), isa));
  }
  set_cpu_isa("native");
  EXPECT_EQ(cpu_isas(), isas);
}

TEST(CpuIsa, UnknownOrUnavailableNamesAreErrorsNamingThem) {
  const std::string best = cpu_isa();
  try {
    set_cpu_isa("avx9000");
    FAIL() << "accepted an unknown ISA";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("avx9000"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("avx2"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cpu_isa(), best) << "a refused name changed the dispatch";
#if defined(__x86_64__)
  // Capped at the worst set, a better one that is available is accepted again (caps do not
  // stack); on a CPU without VNNI that name is known but unavailable and keeps the cap.
  const std::string worst = cpu_isas().back();
  set_cpu_isa(worst);
  if (best != "avx512vnni") {
    EXPECT_THROW(set_cpu_isa("avx512vnni"), Error);
    EXPECT_EQ(cpu_isa(), worst) << "a refused name lifted the cap";
  }
  set_cpu_isa(best);
  EXPECT_EQ(cpu_isa(), best);
  set_cpu_isa("native");
  // A CPU with AVX2 at best (Highway's test mock): AVX-512 is known but refused.
  if (hwy::SupportedTargets() & HWY_AVX2) {
    hwy::SetSupportedTargetsForTest(hwy::SupportedTargets() & ~(HWY_AVX2 - 1));
    EXPECT_EQ(cpu_isa(), "avx2");
    try {
      set_cpu_isa("avx512");
      FAIL() << "accepted an ISA the CPU lacks";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("not available"), std::string::npos) << e.what();
    }
    EXPECT_EQ(cpu_isa(), "avx2");
    hwy::SetSupportedTargetsForTest(0);
  }
#endif
}

}  // namespace
}  // namespace rwkv7
