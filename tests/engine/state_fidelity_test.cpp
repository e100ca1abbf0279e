// The fidelity scorer on hand-made logits with known answers, and the experiment's plumbing
// on the shipped model.
#include "rwkv7/state_fidelity.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

const std::string kModel = std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";

TEST(FidelityScore, HandMadeTwoTokenVocabulary) {
  // Row 0: p = (1/2, 1/2), q = (3/4, 1/4): same arg-max (ties go to the first), target 1.
  // Row 1: p = softmax(2, 0), q = softmax(0, 2): arg-max differs, target 0.
  const std::vector<float> t = {0.0f, 0.0f, 2.0f, 0.0f};
  const std::vector<float> a = {float(std::log(3.0)), 0.0f, 0.0f, 2.0f};
  const std::vector<int32_t> y = {1, 0};
  const auto s = score_fidelity(t, a, 2, y);
  const double e2 = std::exp(2.0), p1 = e2 / (1 + e2), p2 = 1 / (1 + e2);
  EXPECT_EQ(s.positions, 2);
  EXPECT_DOUBLE_EQ(s.top1_agreement, 0.5);
  // KL row 0 = 1/2 ln(2/3) + 1/2 ln 2; row 1 = p1·2 + p2·(-2).
  EXPECT_NEAR(s.kl, (0.5 * std::log(4.0 / 3.0) + 2 * (p1 - p2)) / 2, 1e-6);
  EXPECT_NEAR(s.loss_true, (std::log(2.0) + std::log(1 + e2) - 2) / 2, 1e-6);
  EXPECT_NEAR(s.loss_approx, (std::log(4.0) + std::log(1 + e2)) / 2, 1e-6);
  EXPECT_NEAR(s.loss_delta, (s.loss_approx - s.loss_true) / s.loss_true, 1e-12);
}

TEST(FidelityScore, IdenticalLogitsAgreeFullyAndErrorsAreNamed) {
  const std::vector<float> t = {1, 2, 3, -1, 0, 5};
  const std::vector<int32_t> y = {2, 0};
  const auto s = score_fidelity(t, t, 3, y);
  EXPECT_EQ(s.top1_agreement, 1.0);
  EXPECT_EQ(s.kl, 0.0);
  EXPECT_EQ(s.loss_delta, 0.0);
  EXPECT_THROW(score_fidelity(t, std::vector<float>(5), 3, y), Error);
  const std::vector<int32_t> bad = {2, 3};
  EXPECT_THROW(score_fidelity(t, t, 3, bad), Error);
}

TEST(StateFidelity, ExactStatesAgreeAndRankZeroIsWorseThanRankEight) {
  auto m = Model::load(kModel);
  std::vector<int32_t> tokens;
  const std::string text =
      "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
      "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved.";
  for (unsigned char c : text) tokens.push_back(c);
  FidelityOptions o;
  o.prefix_tokens = {80};
  o.continue_tokens = 48;
  std::vector<CompressOptions> configs(4);
  configs[0].method = "f32";
  configs[1].method = "bf16";
  configs[2].method = "lowrank", configs[2].rank = 0;
  configs[3].method = "lowrank", configs[3].rank = 8;
  auto r = evaluate_state_fidelity(*m, tokens, configs, o);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].score.top1_agreement, 1.0);
  EXPECT_EQ(r[0].score.kl, 0.0);  // an f32 "compression" is the same state
  EXPECT_EQ(r[0].ratio, 1.0);
  EXPECT_EQ(r[1].ratio, 0.5);
  EXPECT_LT(r[1].score.kl, 1e-3);
  EXPECT_GT(r[2].score.kl, r[3].score.kl);
  EXPECT_GT(r[2].score.kl, 1e-3);
  // A state that lives in f32 "compression" every 16 tokens: the same up to the chunking.
  o.recompress_every = 16;
  auto rr = evaluate_state_fidelity(*m, tokens, {configs[0]}, o);
  EXPECT_EQ(rr[0].score.top1_agreement, 1.0);
  EXPECT_LT(rr[0].score.kl, 1e-6);
  // Two windows: the mean of the two single-window runs (the second on the text that starts
  // where the second window starts: its end).
  o.recompress_every = 0;
  o.windows = 2;
  auto two = evaluate_state_fidelity(*m, tokens, {configs[2]}, o);
  o.windows = 1;
  auto w0 = evaluate_state_fidelity(*m, tokens, {configs[2]}, o);
  const size_t room = tokens.size() - (80 + 48 + 1);
  auto w1 = evaluate_state_fidelity(*m, std::span(tokens).subspan(room), {configs[2]}, o);
  EXPECT_EQ(two[0].score.positions, 96);
  EXPECT_EQ(two[0].windows, 2);
  EXPECT_NEAR(two[0].score.kl, (w0[0].score.kl + w1[0].score.kl) / 2, 1e-12);
  EXPECT_NEAR(two[0].score.top1_agreement,
              (w0[0].score.top1_agreement + w1[0].score.top1_agreement) / 2, 1e-12);
  EXPECT_NEAR(two[0].score.loss_true, (w0[0].score.loss_true + w1[0].score.loss_true) / 2, 1e-12);
  EXPECT_NE(w0[0].score.kl, w1[0].score.kl);
  // Too short a text is an Error that says how many tokens are needed.
  o.prefix_tokens = {1000};
  try {
    evaluate_state_fidelity(*m, tokens, configs, o);
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1049"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace rwkv7
