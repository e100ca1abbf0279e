// Batched generation: each sequence's tokens equal a run of it alone, per-sequence samplers,
// stops and cancellation, and the reported log-probabilities.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "rwkv7/context.hpp"
#include "rwkv7/generate.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {
namespace {

const std::string kModel = std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";

struct Solo {
  std::vector<int32_t> tokens;
  std::string text;
  State state;
};

Solo run_alone(const Model& m, const Tokenizer& tok, const std::string& prompt,
               const SamplerOptions& so, const GenerateOptions& go) {
  Solo s{{}, {}, m.new_state()};
  Sampler sampler(so);
  auto ids = tok.encode(prompt);
  auto r = generate(m, tok, s.state, ids, sampler, go, [](std::string_view) {});
  s.tokens = r.tokens;
  s.text = r.text;
  return s;
}

TEST(GenerateBatch, EachSequenceEqualsItsRunAlone) {
  auto m = Model::load(kModel);
  const Tokenizer tok = Tokenizer::bytes();
  const std::vector<std::string> prompts = {"ROMEO:\n", "First Citizen:\nWe are", "O"};
  std::vector<SamplerOptions> samplers(3);
  samplers[0].temperature = 0.0f;  // greedy
  samplers[1].temperature = 0.9f;
  samplers[1].top_p = 0.8f;
  samplers[1].seed = 11;
  samplers[2].temperature = 1.0f;
  samplers[2].top_k = 5;
  samplers[2].presence_penalty = 0.3f;
  samplers[2].seed = 5;
  std::vector<GenerateOptions> opts(3);
  opts[0].max_tokens = 40;
  opts[1].max_tokens = 25;
  opts[2].max_tokens = 60;
  opts[2].stop = {"\n\n"};

  Context ctx(2);
  std::vector<State> states;
  std::vector<Sampler> sams;
  std::vector<std::vector<int32_t>> ids;
  for (int i = 0; i < 3; ++i) {
    states.push_back(m->new_state());
    sams.emplace_back(samplers[size_t(i)]);
    ids.push_back(tok.encode(prompts[size_t(i)]));
  }
  std::vector<GenerationRequest> reqs;
  for (size_t i = 0; i < 3; ++i) reqs.push_back({ids[i], &states[i], &sams[i], opts[i], nullptr});
  std::vector<std::string> streamed(3);
  auto results = generate_batch(*m, ctx, tok, reqs, [&](const TokenEvent& ev) {
    streamed[ev.sequence] += std::string(ev.text);
    return true;
  });
  ASSERT_EQ(results.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const Solo solo = run_alone(*m, tok, prompts[i], samplers[i], opts[i]);
    EXPECT_EQ(results[i].tokens, solo.tokens) << "sequence " << i;
    EXPECT_EQ(results[i].text, solo.text) << "sequence " << i;
    EXPECT_EQ(streamed[i], results[i].text) << "sequence " << i;
    EXPECT_EQ(results[i].prompt_tokens, int64_t(ids[i].size()));
    // Same state afterwards (within float rounding of batched vs single products).
    ASSERT_EQ(states[i].wkv.size(), solo.state.wkv.size());
    for (size_t j = 0; j < solo.state.wkv.size(); ++j)
      ASSERT_NEAR(states[i].wkv[j], solo.state.wkv[j], 1e-4f * (1 + std::fabs(solo.state.wkv[j])));
  }
  EXPECT_EQ(results[0].tokens.size(), 40u);
  EXPECT_EQ(results[0].stop_reason, "max_tokens");
}

TEST(GenerateBatch, CallbackCancelsOnlyItsSequence) {
  auto m = Model::load(kModel);
  const Tokenizer tok = Tokenizer::bytes();
  Context ctx(1);
  SamplerOptions greedy;
  greedy.temperature = 0.0f;
  GenerateOptions go;
  go.max_tokens = 30;
  go.stop_at_end_of_text = false;
  std::vector<State> states = {m->new_state(), m->new_state()};
  std::vector<Sampler> sams = {Sampler(greedy), Sampler(greedy)};
  const auto ids = tok.encode("KING:");
  std::vector<GenerationRequest> reqs = {{ids, &states[0], &sams[0], go, nullptr},
                                         {ids, &states[1], &sams[1], go, nullptr}};
  int seen1 = 0;
  auto results = generate_batch(*m, ctx, tok, reqs, [&](const TokenEvent& ev) {
    if (ev.sequence == 1 && ev.token >= 0) return ++seen1 < 5;  // stop after the 5th token
    return true;
  });
  EXPECT_EQ(results[1].stop_reason, "cancelled");
  EXPECT_EQ(results[1].tokens.size(), 5u);
  EXPECT_EQ(results[0].stop_reason, "max_tokens");
  EXPECT_EQ(results[0].tokens.size(), 30u);
  // The cancelled sequence's tokens are the first five of the other's (same prompt, greedy).
  EXPECT_EQ(std::vector<int32_t>(results[0].tokens.begin(), results[0].tokens.begin() + 5),
            results[1].tokens);
  // Its state has read the prompt and the five tokens it reported.
  EXPECT_EQ(states[1].tokens_consumed, int64_t(ids.size()) + 5);
}

TEST(GenerateBatch, LogprobIsTheModelsLogSoftmax) {
  auto m = Model::load(kModel);
  const Tokenizer tok = Tokenizer::bytes();
  Context ctx(1);
  const auto ids = tok.encode("JULIET:\nAh");
  // Independent of generate: the logits of the prompt, log-softmax in long double.
  State probe = m->new_state();
  const std::vector<float> logits = m->forward(ctx, ids, probe);
  SamplerOptions so;
  so.temperature = 1.0f;
  so.seed = 3;
  Sampler sampler(so);
  State st = m->new_state();
  GenerateOptions go;
  go.max_tokens = 1;
  std::vector<GenerationRequest> reqs = {{ids, &st, &sampler, go, nullptr}};
  TokenEvent first;
  generate_batch(*m, ctx, tok, reqs, [&](const TokenEvent& ev) {
    if (ev.token >= 0) first = ev;
    return true;
  });
  long double sum = 0;
  for (float x : logits) sum += std::exp((long double)x);
  const double want = double((long double)logits[size_t(first.token)] - std::log(sum));
  EXPECT_NEAR(first.logprob, want, 1e-5);
  EXPECT_LT(first.logprob, 0.0f);
}

TEST(GenerateBatch, RefusesAStateOfOtherWeights) {
  auto m = Model::load(kModel);
  const Tokenizer tok = Tokenizer::bytes();
  Context ctx(1);
  State st = m->new_state();
  st.model_fingerprint = "someone-else";
  Sampler sampler(SamplerOptions{});
  const auto ids = tok.encode("A");
  std::vector<GenerationRequest> reqs = {{ids, &st, &sampler, {}, nullptr}};
  EXPECT_THROW(generate_batch(*m, ctx, tok, reqs, [](const TokenEvent&) { return true; }),
               std::exception);
}

}  // namespace
}  // namespace rwkv7
