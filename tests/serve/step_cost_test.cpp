#include "serve/step_cost.hpp"

#include <gtest/gtest.h>

#include <cmath>

namespace rwkv7 {
namespace {

// A machine whose steps cost exactly fixed + per_decode·d + per_prompt·p.
struct LinearCosts {
  double fixed = 0.010, per_decode = 0.0019, per_prompt = 0.0012;
  double operator()(int64_t d, int64_t p) const {
    return fixed + per_decode * double(d) + per_prompt * double(p);
  }
};

TEST(StepCostModel, NothingIsPredictedBeforeEnoughStepsOfEachKind) {
  StepCostModel m;
  const LinearCosts cost;
  EXPECT_FALSE(m.prompt_positions(16, 2.0));
  for (int i = 0; i < 7; ++i) m.observe(16, 0, cost(16, 0));
  EXPECT_FALSE(m.decode_only(16));  // 7 < 8 decode-only steps
  m.observe(16, 0, cost(16, 0));
  ASSERT_TRUE(m.decode_only(16));
  EXPECT_FALSE(m.per_prompt());
  EXPECT_FALSE(m.prompt_positions(16, 2.0));
  for (int i = 0; i < 8; ++i) m.observe(16, 16, cost(16, 16));
  EXPECT_TRUE(m.prompt_positions(16, 2.0));
}

TEST(StepCostModel, OneStreamCountIsPredictedThereOnly) {
  StepCostModel m;
  const LinearCosts cost;
  for (int i = 0; i < 20; ++i) m.observe(16, 0, cost(16, 0));
  ASSERT_TRUE(m.decode_only(16));
  EXPECT_NEAR(*m.decode_only(16), cost(16, 0), 1e-12);
  // The slope in d is unknown from one d: no guess elsewhere.
  EXPECT_FALSE(m.decode_only(4));
  EXPECT_FALSE(m.decode_only(17));
}

TEST(StepCostModel, RecoversALinearMachineAndSizesThePromptShare) {
  StepCostModel m;
  const LinearCosts cost;
  for (int i = 0; i < 40; ++i) m.observe(1 + i % 32, 0, cost(1 + i % 32, 0));
  for (int i = 0; i < 40; ++i) m.observe(1 + i % 20, 8 + i % 50, cost(1 + i % 20, 8 + i % 50));
  ASSERT_TRUE(m.decode_only(4));
  EXPECT_NEAR(*m.decode_only(4), cost(4, 0), 1e-9);
  EXPECT_NEAR(*m.decode_only(48), cost(48, 0), 1e-9);  // extrapolated along the line
  ASSERT_TRUE(m.per_prompt());
  EXPECT_NEAR(*m.per_prompt(), cost.per_prompt, 1e-9);
  // slowdown 2: p·per_prompt <= decode_only(d). d = 4: (0.010 + 0.0076) / 0.0012 = 14.67.
  EXPECT_EQ(*m.prompt_positions(4, 2.0), 14);
  // d = 16: (0.010 + 0.0304) / 0.0012 = 33.67; slowdown 1.75: 0.75 x that = 25.25.
  EXPECT_EQ(*m.prompt_positions(16, 2.0), 33);
  EXPECT_EQ(*m.prompt_positions(16, 1.75), 25);
  EXPECT_EQ(*m.prompt_positions(16, 1.0), 0);
  // The predicted step at that share is within the slowdown, one more position is not.
  const int64_t p = *m.prompt_positions(16, 1.75);
  EXPECT_LE(cost(16, p), 1.75 * cost(16, 0));
  EXPECT_GT(cost(16, p + 1), 1.75 * cost(16, 0));
}

TEST(StepCostModel, FollowsTheMachineWhenItSlowsDown) {
  StepCostModel m;
  LinearCosts cost;
  for (int i = 0; i < 200; ++i) {
    m.observe(1 + i % 8, 0, cost(1 + i % 8, 0));
    m.observe(1 + i % 8, 16 + i % 7, cost(1 + i % 8, 16 + i % 7));
  }
  EXPECT_NEAR(*m.per_prompt(), 0.0012, 1e-9);
  cost.fixed *= 2, cost.per_decode *= 2, cost.per_prompt *= 2;  // another process took a core
  for (int i = 0; i < 400; ++i) {
    m.observe(1 + i % 8, 0, cost(1 + i % 8, 0));
    m.observe(1 + i % 8, 16 + i % 7, cost(1 + i % 8, 16 + i % 7));
  }
  EXPECT_NEAR(*m.decode_only(4), cost(4, 0), 1e-3 * cost(4, 0));
  EXPECT_NEAR(*m.per_prompt(), cost.per_prompt, 1e-3 * cost.per_prompt);
}

TEST(StepCostModel, IgnoresStepsThatSayNothingAndRefusesNonsense) {
  StepCostModel m;
  const LinearCosts cost;
  for (int i = 0; i < 20; ++i) {
    m.observe(0, 256, 0.3);         // prefill only: no stream
    m.observe(4, 0, -1.0);          // a clock that went back
    m.observe(4, 0, std::nan(""));  //
    m.observe(-1, 0, 0.01);         //
    m.observe(4, 16, cost(4, 16));  // mixed, before any decode-only step
  }
  EXPECT_FALSE(m.decode_only(4));
  EXPECT_FALSE(m.per_prompt());
  // Prompt rows that cost nothing (or less than nothing) measured: no share from the model.
  for (int i = 0; i < 20; ++i) m.observe(4, 0, cost(4, 0));
  for (int i = 0; i < 20; ++i) m.observe(4, 16, cost(4, 0) * 0.9);
  EXPECT_FALSE(m.per_prompt());
  EXPECT_FALSE(m.prompt_positions(4, 2.0));
  EXPECT_FALSE(m.prompt_positions(4, 0.5));
}

}  // namespace
}  // namespace rwkv7

namespace rwkv7 {
namespace {

TEST(StepTimeController, SettlesWhereAStepTakesTheTarget) {
  const LinearCosts cost;  // 4 streams alone: 17.6 ms; 50 ms at p = (0.050 - 0.0176) / 0.0012 = 27
  StepTimeController c(16, 256);
  EXPECT_EQ(c.share(), 16);
  for (int i = 0; i < 12; ++i) c.observe(c.share(), cost(4, c.share()), 0.050);
  EXPECT_NEAR(double(c.share()), 27.0, 1.0);
  // More streams: their rows alone take 0.010 + 0.0019 * 16 = 40.4 ms; 50 ms at p = 8, below lo.
  for (int i = 0; i < 12; ++i) c.observe(c.share(), cost(16, c.share()), 0.050);
  EXPECT_EQ(c.share(), 16);
  // A target of 80 ms with them: p = (0.080 - 0.0404) / 0.0012 = 33 (the rounded sqrt step
  // stops within 2 of it: 31 x sqrt(80 / 77.6) rounds to 31).
  for (int i = 0; i < 12; ++i) c.observe(c.share(), cost(16, c.share()), 0.080);
  EXPECT_NEAR(double(c.share()), 33.0, 2.0);
}

// When the allowance (the target less the streams' own time) falls between two steps, e.g. 16
// streams join while a prompt is read, the share follows at once in proportion instead of over
// a few steps above the target; when it grows, the feedback raises it (at most doubled a step).
TEST(StepTimeController, ShrinksTheShareAtOnceWhenTheAllowanceFalls) {
  const LinearCosts cost;  // one stream alone: 0.010 + 0.0019 = 11.9 ms
  StepTimeController c(4, 256);
  const double target1 = 0.050, allowance1 = target1 - cost(1, 0);
  for (int i = 0; i < 12; ++i) c.observe(c.share(), cost(1, c.share()), target1, allowance1);
  const int64_t settled = c.share();  // (0.050 - 0.0119) / 0.0012 = 32
  EXPECT_NEAR(double(settled), 32.0, 2.0);
  EXPECT_EQ(c.share(allowance1), settled);
  EXPECT_EQ(c.share(2 * allowance1), settled);  // more room: left to the feedback
  EXPECT_EQ(c.share(0), settled);               // unknown: as settled
  EXPECT_EQ(c.share(allowance1 / 2), (settled + 1) / 2);
  EXPECT_EQ(c.share(allowance1 / 100), 4);  // never below lo
  // The first step at the smaller allowance lands near its target, not ~1.5x over it.
  const int64_t d = 4;  // 17.6 ms alone; a 37.6 ms target leaves 20 ms
  const double target4 = cost(d, 0) + 0.020, allowance4 = target4 - cost(d, 0);
  const int64_t first = c.share(allowance4);
  EXPECT_LT(cost(d, first), 1.1 * target4) << first;
  EXPECT_GT(cost(d, c.share()), 1.4 * target4) << "without the scaling the step ran long";
  // Observing with no allowance forgets the settled one: no scaling.
  c.observe(first, cost(d, first), target4, 0);
  EXPECT_EQ(c.share(allowance4 / 4), c.share());
}

TEST(SharedStepTarget, OneStreamGetsTheWholeStepAndManyShareItsExtraTime) {
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 1, 0.006), 0.050);
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 1, std::nullopt), 0.050);
  // 16 streams alone in 17 ms: each may lose (50 - 17) / 16 ms.
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 16, 0.017), 0.017 + 0.033 / 16);
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 2, 0.010), 0.030);
  // Not known yet: cautious. Already slower than the target alone: no extra time.
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 16, std::nullopt), 0.050 / 16);
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 32, 0.060), 0.060);
  // Off, or no stream to share it.
  EXPECT_EQ(shared_step_target(0, 4, 0.01), 0.0);
  EXPECT_EQ(shared_step_target(0.050, 0, 0.01), 0.0);
}

TEST(SharedStepTarget, EachPromptBeingReadGetsOneStreamsWaitUpToTheWholeStep) {
  // 16 streams alone in 17 ms, 4 prompts read: each stream may lose 4 x (50 - 17) / 16 ms.
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 16, 0.017, 4), 0.017 + 0.033 * 4 / 16);
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 16, 0.017, 1), 0.017 + 0.033 / 16);
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 16, 0.017, 0), 0.017 + 0.033 / 16);
  // A backlog (as many prompts as streams, or more): the whole step, never more.
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 4, 0.008, 4), 0.050);
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 4, 0.008, 30), 0.050);
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 32, 0.060, 40), 0.060);
  // The streams' time unknown: as if nothing, so the least the rule allows.
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 4, std::nullopt, 2), 0.025);
  EXPECT_DOUBLE_EQ(shared_step_target(0.050, 4, std::nullopt, 9), 0.050);
  EXPECT_LE(shared_step_target(0.050, 4, std::nullopt, 2), shared_step_target(0.050, 4, 0.008, 2));
}

TEST(StepTimeController, MovesAtMostTwofoldPerStepAndStaysInItsBounds) {
  StepTimeController c(16, 100);
  c.observe(16, 0.001, 0.050);  // 50x too fast: doubled, not x7
  EXPECT_EQ(c.share(), 32);
  c.observe(90, 0.001, 0.050);
  EXPECT_EQ(c.share(), 100);    // hi
  c.observe(100, 10.0, 0.050);  // far too slow: halved
  EXPECT_EQ(c.share(), 50);
  c.observe(20, 10.0, 0.050);
  EXPECT_EQ(c.share(), 16);  // lo
  // Steps that say nothing leave it.
  c.observe(0, 0.01, 0.050);
  c.observe(40, 0.0, 0.050);
  c.observe(40, std::nan(""), 0.050);
  EXPECT_EQ(c.share(), 16);
  StepTimeController off(16, 100);
  off.observe(16, 0.001, 0);  // no target
  EXPECT_EQ(off.share(), 16);
}

}  // namespace
}  // namespace rwkv7
