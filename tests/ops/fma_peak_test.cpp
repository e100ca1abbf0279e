// The FMA limit probe must run every one of its chains: the chains once started equal, GCC kept
// one, and the probe timed one FMA's latency while counting ten (bench's "% of FMA peak" then
// read a quarter low on Zen 3). Each chain's final value is checked against the scalar
// recurrence, on every Highway target, so chains that merge or do not run change the sum.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "backends/cpu/kernels.hpp"
#include "hwy/targets.h"

namespace rwkv7 {
namespace {

constexpr int kChains = 12;

float expected_sink(int64_t iters) {
  float total = 0;
  for (int j = 0; j < kChains; ++j) {
    float a = cpu::fma_peak_start(j);
    for (int64_t i = 0; i < iters; ++i) a = std::fma(a, cpu::kFmaPeakScale, cpu::kFmaPeakShift);
    total += a;
  }
  return total;
}

TEST(FmaPeak, EveryChainRunsFromItsOwnStartOnEveryTarget) {
  const int64_t iters = 300;
  const float want = expected_sink(iters);
  int targets_run = 0;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    float sink = 0;
    const double flops = cpu::fma_peak(iters, &sink);
    // Lanes per vector: the FLOP count is iters x chains x 2 x lanes.
    const double lanes = flops / (double(iters) * kChains * 2);
    EXPECT_EQ(lanes, std::round(lanes)) << hwy::TargetName(target);
    EXPECT_GE(lanes, 1.0) << hwy::TargetName(target);
    EXPECT_NEAR(sink, want, 1e-5f * want) << hwy::TargetName(target);
    ++targets_run;
  }
  hwy::SetSupportedTargetsForTest(0);
  EXPECT_GT(targets_run, 0);
}

}  // namespace
}  // namespace rwkv7
