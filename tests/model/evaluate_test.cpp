// LAMBADA protocol against a direct computation over the whole passage.
#include "rwkv7/evaluate.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "cli/cli_support.hpp"
#include "rwkv7/error.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

TEST(EvaluateLambada, MatchesFullPassageComputation) {
  RWKV7_REQUIRE_SHARED(src, "models/tiny-rwkv7-834K.pth");
  testing::TempDir dir;
  {
    std::ofstream f(dir.file("l.jsonl"));
    f << R"({"text": "the cat sat on the mat"})"
      << "\n\n"
      << R"({"text": "one two three four five six seven eight nine ten"})"
      << "\n"
      << R"({"text": "a a a a a a a a a a a a a a a a a a a a a"})"
      << "\n";
  }
  auto samples = read_lambada_jsonl(dir.file("l.jsonl"));
  ASSERT_EQ(samples.size(), 3u);
  EXPECT_EQ(samples[0].context, "the cat sat on the");
  EXPECT_EQ(samples[0].target, " mat");
  LoadOptions o;
  o.backend = BackendKind::Reference;
  auto m = Model::load(src, o);
  Tokenizer tok = Tokenizer::bytes();
  // Direct: [0] + context + target in one call with all logits; score the target positions.
  double sum = 0;
  int correct = 0;
  for (const auto& s : samples) {
    std::vector<int32_t> ids = {0};
    auto ctx = tok.encode(s.context), tgt = tok.encode(s.target);
    ids.insert(ids.end(), ctx.begin(), ctx.end());
    const size_t src_len = ids.size();
    ids.insert(ids.end(), tgt.begin(), tgt.end());
    State st = m->new_state();
    auto logits = m->forward(ids, st, Logits::All);
    bool ok = true;
    for (size_t j = 0; j < tgt.size(); ++j) {
      const float* row = &logits[(src_len - 1 + j) * 256];
      double mx = *std::max_element(row, row + 256), z = 0;
      for (int i = 0; i < 256; ++i) z += std::exp(row[i] - mx);
      sum += row[tgt[j]] - mx - std::log(z);
      ok = ok && (std::max_element(row, row + 256) - row) == tgt[j];
    }
    correct += ok;
  }
  auto fast = Model::load(src);
  for (int64_t batch : {1, 2, 16}) {
    auto r = evaluate_lambada(*fast, tok, samples, batch);
    EXPECT_EQ(r.samples, 3);
    EXPECT_NEAR(r.perplexity, std::exp(-sum / 3), 1e-4 * std::exp(-sum / 3)) << batch;
    EXPECT_DOUBLE_EQ(r.accuracy, correct / 3.0) << batch;
  }
  // Through the CLI too.
  auto cli = testing::run_cli("eval -m " + testing::quote(src) + " --lambada " +
                              testing::quote(dir.file("l.jsonl")) + " --json");
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_NE(cli.out.find("\"samples\":3"), std::string::npos) << cli.out;
}

TEST(EvaluateLambada, BadFilesAreNamed) {
  testing::TempDir dir;
  std::ofstream(dir.file("bad.jsonl")) << "{\"text\": \"ok passage here\"}\nnot json\n";
  try {
    read_lambada_jsonl(dir.file("bad.jsonl"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
  }
}

TEST(EvaluateLoss, WindowDoesNotChangeTheLoss) {
  RWKV7_REQUIRE_SHARED(src, "models/tiny-rwkv7-834K.pth");
  auto m = Model::load(src);
  std::vector<int32_t> ids;
  for (char c : std::string("To be, or not to be, that is the question."))
    ids.push_back(uint8_t(c));
  auto a = evaluate_loss(*m, ids, 1), b = evaluate_loss(*m, ids, 5),
       c = evaluate_loss(*m, ids, 500);
  EXPECT_EQ(a.predicted, int64_t(ids.size() - 1));
  EXPECT_NEAR(a.loss, b.loss, 1e-6);
  EXPECT_NEAR(a.loss, c.loss, 1e-6);
  EXPECT_NEAR(c.perplexity, std::exp(c.loss), 1e-9);
  EXPECT_THROW(evaluate_loss(*m, std::span<const int32_t>(ids).first(1)), Error);
}

}  // namespace
}  // namespace rwkv7
