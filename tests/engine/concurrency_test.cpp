// One shared Model, many threads: every forward must give exactly what the same call gives
// alone (same thread count, so the same summation order: bitwise equal).
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "rwkv7/context.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {
namespace {

const std::string kModel = std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

struct Job {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // [T, V]
  State state;
};

// kThreads × per_thread jobs of mixed lengths (1 token: decode; up to 300: several chunks).
std::vector<std::vector<Job>> make_jobs(const Model& m, int threads, int per_thread) {
  std::mt19937 rng(7);
  const int lengths[] = {1, 1, 2, 3, 9, 17, 64, 130, 300};
  std::vector<std::vector<Job>> jobs(static_cast<size_t>(threads),
                                     std::vector<Job>(static_cast<size_t>(per_thread)));
  for (auto& list : jobs) {
    for (Job& j : list) {
      j.tokens.resize(size_t(lengths[rng() % std::size(lengths)]));
      for (int32_t& t : j.tokens) t = int32_t(rng() % uint32_t(m.config().vocab_size));
      j.state = m.new_state();
      // A state that has already read something, so carried states are exercised too.
      for (float& x : j.state.wkv) x = float(int(rng() % 2001) - 1000) * 1e-4f;
      for (float& x : j.state.att_shift) x = float(int(rng() % 2001) - 1000) * 1e-3f;
    }
  }
  return jobs;
}

void expect_same(const Job& got, const Job& want, const std::string& where) {
  ASSERT_EQ(got.logits.size(), want.logits.size()) << where;
  for (size_t i = 0; i < got.logits.size(); ++i)
    ASSERT_EQ(got.logits[i], want.logits[i]) << where << ": logit " << i;
  ASSERT_EQ(got.state.wkv, want.state.wkv) << where << ": wkv state";
  ASSERT_EQ(got.state.att_shift, want.state.att_shift) << where;
  ASSERT_EQ(got.state.ffn_shift, want.state.ffn_shift) << where;
}

class SharedModel : public ::testing::TestWithParam<bool> {};

// GetParam(): each thread brings its own Context (true), or all use the model's own (false).
TEST_P(SharedModel, ManyThreadsGiveTheSequentialResults) {
  const bool own_contexts = GetParam();
  const int threads = env_int("RWKV7_TEST_THREADS", 8);
  const int per_thread = env_int("RWKV7_TEST_FORWARDS", 50);
  LoadOptions opts;
  opts.threads = 2;
  auto model = Model::load(kModel, opts);
  auto want = make_jobs(*model, threads, per_thread);
  auto got = want;
  {
    Context ctx(2);
    for (auto& list : want)
      for (Job& j : list) j.logits = model->forward(ctx, j.tokens, j.state, Logits::All);
  }
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      Context ctx(2);
      for (Job& j : got[size_t(t)]) {
        j.logits = own_contexts ? model->forward(ctx, j.tokens, j.state, Logits::All)
                                : model->forward(j.tokens, j.state, Logits::All);
      }
    });
  }
  for (auto& th : pool) th.join();
  for (int t = 0; t < threads; ++t)
    for (int i = 0; i < per_thread; ++i)
      expect_same(got[size_t(t)][size_t(i)], want[size_t(t)][size_t(i)],
                  "thread " + std::to_string(t) + " forward " + std::to_string(i));
}

INSTANTIATE_TEST_SUITE_P(Contexts, SharedModel, ::testing::Values(true, false),
                         [](const auto& info) {
                           return info.param ? "OwnContext" : "ModelContext";
                         });

TEST(Context, RefusesNonsenseThreadCounts) {
  EXPECT_THROW(Context(-5), std::exception);
  EXPECT_THROW(Context(Context::kMaxThreads + 1), std::exception);
  EXPECT_EQ(Context(1).threads(), 1);
  EXPECT_EQ(Context(3).threads(), 3);
}

TEST(ModelState, StateOfOtherWeightsIsRefused) {
  auto model = Model::load(kModel);
  Context ctx(1);
  State s = model->new_state();
  s.model_fingerprint = "other-weights";
  const int32_t tok[] = {65};
  EXPECT_THROW(model->forward(ctx, tok, s), std::exception);
  State wrong = model->new_state();
  wrong.wkv.pop_back();
  EXPECT_THROW(model->forward(ctx, tok, wrong), std::exception);
  State unknown = model->new_state();
  unknown.model_fingerprint.clear();  // hand-made: only the shape is checked
  EXPECT_NO_THROW(model->forward(ctx, tok, unknown));
}

}  // namespace
}  // namespace rwkv7
