// set_cpu_isa caps the kernels' dispatch: the named set is used, better ones are not, a name
// that is unknown or unavailable is an error naming it, and "native" restores the best.
#include "backends/cpu_isa.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "backends/cpu/gemm_packed_kernels.hpp"
#include "hwy/targets.h"
#include "rwkv7/error.hpp"
#include "rwkv7/machine.hpp"

namespace rwkv7 {
namespace {

// These tests start from the CPU's own set: a process capped by RWKV7_ISA (tests/isa_cap.cpp)
// starts elsewhere.
#define SKIP_UNDER_RWKV7_ISA()                                 \
  if (const char* isa = std::getenv("RWKV7_ISA"); isa && *isa) \
  GTEST_SKIP() << "the process was started capped (RWKV7_ISA=" << isa << ")"

TEST(CpuIsa, CapsTheDispatchAndNativeRestoresIt) {
  SKIP_UNDER_RWKV7_ISA();
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

// Asking which ISA is in use must not lift the cap: Highway 1.0's SupportedTargets() re-chooses
// the dispatch target from the CPU's own set, so the kernels ran uncapped after `rwkv7 bench
// --isa avx2` reported "avx2" (found measuring bf16 training products under the AVX2 cap).
TEST(CpuIsa, QueriesKeepTheCapOnTheKernels) {
  SKIP_UNDER_RWKV7_ISA();
  const std::vector<std::string> isas = cpu_isas();
  if (std::find(isas.begin(), isas.end(), "avx2") == isas.end() || isas.front() == "avx2")
    GTEST_SKIP() << "needs a CPU with a better ISA than AVX2";
  set_cpu_isa("avx2");
  EXPECT_EQ(cpu::panel_width(), 24u);  // 3 vectors of 8 floats: the AVX2 product kernel
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(cpu_isa(), "avx2");
    EXPECT_EQ(cpu_isas().front(), "avx2");
    EXPECT_FALSE(cpu_target_at_least(HWY_AVX3));
    EXPECT_EQ(cpu::panel_width(), 24u) << "a query lifted the cap on the kernels";
  }
  set_cpu_isa("native");
  EXPECT_EQ(cpu::panel_width(), 64u);  // AVX-512: 4 vectors of 16
  EXPECT_TRUE(cpu_target_at_least(HWY_AVX3));
}

TEST(CpuIsa, UnknownOrUnavailableNamesAreErrorsNamingThem) {
  SKIP_UNDER_RWKV7_ISA();
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
