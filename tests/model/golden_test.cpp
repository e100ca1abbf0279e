// Whole-model logits and final states against the official reference (../shared/golden).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/model.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

struct Golden {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // [T, V]
  std::vector<float> att_shift, ffn_shift, wkv;
  std::string checkpoint;
};

Golden read_golden(const std::string& path) {
  TensorFile f = read_safetensors(path);
  Golden g;
  const TensorView& t = f.get("tokens");
  for (int64_t i = 0; i < t.numel(); ++i)
    g.tokens.push_back(static_cast<const int32_t*>(t.data)[i]);
  g.logits = to_f32(f.get("logits"));
  g.att_shift = to_f32(f.get("state.att_shift"));
  g.ffn_shift = to_f32(f.get("state.ffn_shift"));
  g.wkv = to_f32(f.get("state.wkv"));
  g.checkpoint = f.metadata.at("checkpoint");
  return g;
}

double stddev(const std::vector<float>& v) {
  double m = 0, s = 0;
  for (float x : v) m += x;
  m /= double(v.size());
  for (float x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size()));
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

// SPEC §7: max |Δlogit| ≤ 1e-4·max(1, std(logits)); states to 1e-4 relative to their scale.
void expect_logits_close(const std::vector<float>& got, const std::vector<float>& want,
                         const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double tol = 1e-4 * std::max(1.0, stddev(want));
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double d = std::fabs(double(got[i]) - want[i]);
    if (!(d <= worst)) worst = d, at = i;
  }
  EXPECT_LE(worst, tol) << what << ": worst |Δlogit| at flat index " << at << " (got " << got[at]
                        << ", want " << want[at] << ")";
}

void expect_state_close(const std::vector<float>& got, const std::vector<float>& want,
                        const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double tol = 1e-4 * std::max(1e-3, max_abs(want));
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
  EXPECT_LE(worst, tol) << what;
}

void expect_state(const State& s, const Golden& g, const std::string& what) {
  expect_state_close(s.att_shift, g.att_shift, what + " att_shift");
  expect_state_close(s.ffn_shift, g.ffn_shift, what + " ffn_shift");
  expect_state_close(s.wkv, g.wkv, what + " wkv");
}

struct Case {
  const char* golden;
  const char* model_dir;  // where the checkpoint lives under ../shared
};

class GoldenModel : public ::testing::TestWithParam<Case> {};

// Feeds the tokens as pieces of the given lengths (the last piece takes the rest).
std::vector<float> run_split(const Model& m, State& st, const std::vector<int32_t>& tokens,
                             const std::vector<size_t>& pieces) {
  std::vector<float> all;
  size_t pos = 0, p = 0;
  while (pos < tokens.size()) {
    size_t n = p < pieces.size() ? pieces[p++] : tokens.size() - pos;
    n = std::min(n, tokens.size() - pos);
    auto part = m.forward(std::span<const int32_t>(tokens.data() + pos, n), st, Logits::All);
    all.insert(all.end(), part.begin(), part.end());
    pos += n;
  }
  return all;
}

TEST_P(GoldenModel, SequenceAndRnnModesMatchReferenceForEverySplit) {
  const Case c = GetParam();
  RWKV7_REQUIRE_SHARED(golden_path, std::string("golden/") + c.golden);
  const Golden g = read_golden(golden_path);
  RWKV7_REQUIRE_SHARED(model_path, std::string(c.model_dir) + "/" + g.checkpoint);
  const size_t T = g.tokens.size();

  for (int64_t chunk : {1, 16, 64, 1000}) {
    LoadOptions o;
    o.chunk = chunk;
    auto m = Model::load(model_path, o);
    State st = m->new_state();
    auto logits = m->forward(g.tokens, st, Logits::All);
    const std::string what = std::string(c.golden) + " seq chunk " + std::to_string(chunk);
    expect_logits_close(logits, g.logits, what);
    expect_state(st, g, what);
    EXPECT_EQ(st.tokens_consumed, int64_t(T));
  }
  auto m = Model::load(model_path);
  {
    State st = m->new_state();
    std::vector<size_t> ones(T, 1);
    expect_logits_close(run_split(*m, st, g.tokens, ones), g.logits, "rnn one token at a time");
    expect_state(st, g, "rnn");
  }
  {
    State st = m->new_state();
    std::vector<size_t> pieces = {17};
    pieces.resize(T, 1);  // 17 in sequence mode, then one at a time
    expect_logits_close(run_split(*m, st, g.tokens, pieces), g.logits, "17 then rnn");
    expect_state(st, g, "17 then rnn");
  }
  {
    State st = m->new_state();
    expect_logits_close(run_split(*m, st, g.tokens, {5, 1, 30, 2}), g.logits, "5,1,30,2,rest");
  }
  {
    // Only the last position's logits: the same numbers as the last row of the full run.
    State st = m->new_state();
    auto last = m->forward(g.tokens, st, Logits::Last);
    const size_t V = last.size();
    std::vector<float> want(g.logits.end() - std::ptrdiff_t(V), g.logits.end());
    expect_logits_close(last, want, "last only");
  }
}

TEST_P(GoldenModel, ReferenceBackendMatchesReference) {
  const Case c = GetParam();
  RWKV7_REQUIRE_SHARED(golden_path, std::string("golden/") + c.golden);
  const Golden g = read_golden(golden_path);
  RWKV7_REQUIRE_SHARED(model_path, std::string(c.model_dir) + "/" + g.checkpoint);
  LoadOptions o;
  o.backend = BackendKind::Reference;
  auto m = Model::load(model_path, o);
  State st = m->new_state();
  expect_logits_close(m->forward(g.tokens, st, Logits::All), g.logits, "reference backend");
  expect_state(st, g, "reference backend");
}

TEST_P(GoldenModel, BatchOfSequencesEqualsSeparateRuns) {
  const Case c = GetParam();
  RWKV7_REQUIRE_SHARED(golden_path, std::string("golden/") + c.golden);
  const Golden g = read_golden(golden_path);
  RWKV7_REQUIRE_SHARED(model_path, std::string(c.model_dir) + "/" + g.checkpoint);
  auto m = Model::load(model_path);
  const std::span<const int32_t> all(g.tokens);
  // Sequence A: the golden tokens; B: the second half only; C: a single token.
  State sa = m->new_state(), sb = m->new_state(), sc = m->new_state();
  std::vector<float> la, lb, lc;
  std::vector<SequenceRequest> batch = {
      {all, &sa, Logits::All, &la},
      {all.subspan(all.size() / 2), &sb, Logits::Last, &lb},
      {all.subspan(3, 1), &sc, Logits::Last, &lc},
  };
  m->forward(batch);
  expect_logits_close(la, g.logits, "batch member A");
  expect_state(sa, g, "batch member A");
  State solo = m->new_state();
  auto want_b = m->forward(all.subspan(all.size() / 2), solo, Logits::Last);
  ASSERT_EQ(want_b.size(), size_t(m->config().vocab_size));
  ASSERT_EQ(lb.size(), want_b.size());
  for (size_t i = 0; i < lb.size(); ++i) ASSERT_NEAR(lb[i], want_b[i], 1e-5) << i;
  State solo_c = m->new_state();
  auto want_c = m->forward(all.subspan(3, 1), solo_c, Logits::Last);
  ASSERT_EQ(want_c.size(), size_t(m->config().vocab_size));
  ASSERT_EQ(lc.size(), want_c.size());
  for (size_t i = 0; i < lc.size(); ++i) ASSERT_NEAR(lc[i], want_c[i], 1e-5) << i;
}

TEST(ModelBatch, TwoSequencesSharingOneStateAreRefused) {
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  auto m = Model::load(model_path);
  State s = m->new_state();
  const std::vector<int32_t> tokens = {1, 2, 3};
  std::vector<float> l1, l2;
  std::vector<SequenceRequest> batch = {{tokens, &s, Logits::Last, &l1},
                                        {tokens, &s, Logits::Last, &l2}};
  try {
    m->forward(batch);
    FAIL() << "a shared State was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("share one State"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s.tokens_consumed, 0) << "the state changed before the error";
}

TEST(ModelBatch, TwoSequencesSharingOneLogitsOutputAreRefused) {
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  auto m = Model::load(model_path);
  State s1 = m->new_state(), s2 = m->new_state();
  const std::vector<int32_t> tokens = {1, 2, 3};
  std::vector<float> shared, unused;
  std::vector<SequenceRequest> batch = {{tokens, &s1, Logits::Last, &shared},
                                        {tokens, &s2, Logits::All, &shared}};
  try {
    m->forward(batch);
    FAIL() << "a shared logits output was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("share one logits output"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s1.tokens_consumed, 0) << "a state changed before the error";
  // Without logits wanted, one scratch output may serve several sequences (it is cleared).
  batch = {{tokens, &s1, Logits::None, &unused}, {tokens, &s2, Logits::None, &unused}};
  EXPECT_NO_THROW(m->forward(batch));
}

INSTANTIATE_TEST_SUITE_P(All, GoldenModel,
                         ::testing::Values(Case{"rand-L2-D128.golden.safetensors", "golden"},
                                           Case{"rand-L3-D256-bf16.golden.safetensors", "golden"},
                                           Case{"rand-L2-D96-hs32-fp16.golden.safetensors",
                                                "golden"},
                                           Case{"tiny-rwkv7-834K.golden.safetensors", "models"}),
                         [](const auto& info) {
                           std::string n = info.param.golden;
                           n = n.substr(0, n.find(".golden"));
                           for (char& ch : n)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(GoldenModelSafetensors, SafetensorsCheckpointGivesTheSameLogitsAsPth) {
  RWKV7_REQUIRE_SHARED(golden_path, "golden/rand-L3-D256-bf16.golden.safetensors");
  RWKV7_REQUIRE_SHARED(st_path, "golden/rand-L3-D256-bf16.safetensors");
  const Golden g = read_golden(golden_path);
  auto m = Model::load(st_path);
  State st = m->new_state();
  expect_logits_close(m->forward(g.tokens, st, Logits::All), g.logits, "safetensors");
  expect_state(st, g, "safetensors");
}

}  // namespace
}  // namespace rwkv7
