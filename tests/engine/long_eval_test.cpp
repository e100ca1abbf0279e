// Long-context evaluations: the recall scorer on hand-made logits, the generators' structure
// checked against an oracle that reads the answer from the sample itself, the tables, the
// position buckets, and the CLI end to end.
#include "rwkv7/long_eval.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/cli_support.hpp"
#include "rwkv7/error.hpp"
#include "temp_dir.hpp"

namespace rwkv7 {
namespace {

// Logits [n-1, V] that put `pick(p)` first at every row p (ties: value 1 at both).
std::vector<float> logits_choosing(const RecallSample& s, int64_t V,
                                   const std::function<int32_t(int64_t)>& pick) {
  const int64_t rows = int64_t(s.tokens.size()) - 1;
  std::vector<float> l(size_t(rows * V), 0.0f);
  for (int64_t p = 0; p < rows; ++p) l[size_t(p * V + pick(p))] = 1.0f;
  return l;
}

TEST(LongEval, ScorerNeedsEveryPositionOfAGroup) {
  RecallSample s;
  s.tokens = {5, 1, 2, 3, 4};
  s.groups = {{1, 2}, {3}};  // predict tokens[2], tokens[3] | tokens[4]
  const int64_t V = 8;
  auto right = logits_choosing(s, V, [&](int64_t p) { return s.tokens[size_t(p + 1)]; });
  EXPECT_EQ(score_recall_groups(s, right, V), (std::vector<bool>{true, true}));
  auto one_wrong = right;
  one_wrong[size_t(2 * V + 7)] = 2.0f;  // row 2 now prefers 7 over tokens[3] = 3
  EXPECT_EQ(score_recall_groups(s, one_wrong, V), (std::vector<bool>{false, true}));
  auto tie = right;
  tie[size_t(3 * V + 0)] = 1.0f;  // a tie at row 3: the first maximum (0) wins, not 4
  EXPECT_EQ(score_recall_groups(s, tie, V), (std::vector<bool>{true, false}));
  EXPECT_THROW(score_recall_groups(s, std::vector<float>(3), V), Error);
}

// An oracle that knows MQAR's rule (a key is followed by the value it had in the pairs at the
// start) scores 1 on every query; one that answers the first pair's value scores ~1/pairs.
TEST(LongEval, MqarSamplesFollowTheirRule) {
  MqarOptions o;
  o.vocab = 64;
  o.pairs = {1, 4, 8};
  o.lengths = {32, 64};
  o.per_cell = 3;
  o.seed = 7;
  const auto samples = make_mqar_samples(o);
  ASSERT_EQ(samples.size(), 3u * 2u * 3u);
  std::vector<std::vector<bool>> oracle, naive;
  for (const auto& s : samples) {
    ASSERT_EQ(int64_t(s.tokens.size()), s.length);
    ASSERT_EQ(int64_t(s.groups.size()), s.pairs);
    std::map<int32_t, int32_t> value_of;
    std::set<int32_t> queried;
    for (int64_t p = 0; p < s.pairs; ++p) {
      EXPECT_LT(s.tokens[size_t(2 * p)], 32);
      EXPECT_GE(s.tokens[size_t(2 * p + 1)], 32);
      value_of[s.tokens[size_t(2 * p)]] = s.tokens[size_t(2 * p + 1)];
    }
    EXPECT_EQ(int64_t(value_of.size()), s.pairs) << "keys are distinct";
    for (const auto& g : s.groups) {
      ASSERT_EQ(g.size(), 1u);
      EXPECT_GE(g[0], 2 * s.pairs);
      queried.insert(s.tokens[size_t(g[0])]);
    }
    EXPECT_EQ(int64_t(queried.size()), s.pairs) << "every key queried once";
    const auto lookup = logits_choosing(s, 64, [&](int64_t p) {
      auto it = value_of.find(s.tokens[size_t(p)]);
      return it == value_of.end() ? 0 : it->second;
    });
    oracle.push_back(score_recall_groups(s, lookup, 64));
    const auto first = logits_choosing(s, 64, [&](int64_t) { return s.tokens[1]; });
    naive.push_back(score_recall_groups(s, first, 64));
  }
  const RecallTable all = tabulate_recall(RecallTask::Mqar, samples, oracle);
  EXPECT_EQ(all.rows, (std::vector<double>{1, 4, 8}));
  EXPECT_EQ(all.cols, (std::vector<double>{32, 64}));
  EXPECT_DOUBLE_EQ(all.overall(), 1.0);
  const RecallTable some = tabulate_recall(RecallTask::Mqar, samples, naive);
  // One pair: the first value is always right; 4 pairs: 1 query in 4 (unless values repeat).
  EXPECT_DOUBLE_EQ(some.accuracy(0, 0), 1.0);
  EXPECT_LT(some.accuracy(2, 1), 0.5);
  EXPECT_EQ(some.total[0], 3);  // 3 samples × 1 query
  EXPECT_EQ(some.total[2 * 2 + 1], 3 * 8);
  // Different seeds, different sets; the same seed, the same set.
  o.seed = 8;
  EXPECT_NE(make_mqar_samples(o)[5].tokens, samples[5].tokens);
  o.seed = 7;
  EXPECT_EQ(make_mqar_samples(o)[5].tokens, samples[5].tokens);
  o.lengths = {15};
  EXPECT_THROW(make_mqar_samples(o), Error);  // 8 pairs and their queries need 32
}

TEST(LongEval, PasskeyHidesTheKeyAtItsDepth) {
  const Tokenizer tok = Tokenizer::bytes();
  std::string filler;
  for (int i = 0; i < 50; ++i) filler += "the quick brown fox jumps over the lazy dog. ";
  PasskeyOptions o;
  o.lengths = {300, 1000};
  o.depths = {0, 0.5, 1};
  o.per_cell = 2;
  o.seed = 3;
  const auto samples = make_passkey_samples(tok, filler, o);
  ASSERT_EQ(samples.size(), 12u);
  for (const auto& s : samples) {
    ASSERT_EQ(s.groups.size(), 1u);
    const auto& g = s.groups[0];
    const std::string answer = tok.decode(std::span(s.tokens).subspan(size_t(g[0] + 1), g.size()));
    ASSERT_EQ(answer.size(), 6u);  // " 12345"
    const std::string text = tok.decode(s.tokens);
    EXPECT_EQ(int64_t(s.tokens.size()), s.length + int64_t(answer.size()));
    const size_t at = text.find("The pass key is" + answer + ".");
    ASSERT_NE(at, std::string::npos);
    // The filler around the key: the length less the key's sentence (60 bytes) and the
    // question (38); the key's sentence starts with a space.
    const double depth = double(at - 1) / double(s.length - 98);
    EXPECT_NEAR(depth, s.depth, 0.01) << text.substr(0, 120);
    EXPECT_EQ(text.substr(size_t(g[0]) - 37, 38), " What is the pass key? The pass key is");
  }
  // The oracle that copies the key's digits scores 1: the scored positions are the answer.
  std::vector<std::vector<bool>> oracle;
  for (const auto& s : samples) {
    auto l = logits_choosing(s, 256, [&](int64_t p) { return s.tokens[size_t(p + 1)]; });
    oracle.push_back(score_recall_groups(s, l, 256));
  }
  const RecallTable t = tabulate_recall(RecallTask::Passkey, samples, oracle);
  EXPECT_EQ(t.rows, (std::vector<double>{300, 1000}));
  EXPECT_EQ(t.cols, (std::vector<double>{0, 0.5, 1}));
  EXPECT_DOUBLE_EQ(t.overall(), 1.0);
  o.lengths = {50};
  EXPECT_THROW(make_passkey_samples(tok, filler, o), Error);  // shorter than key + question
}

// Sizes from the command line are bounded before anything is allocated.
TEST(LongEval, GeneratorsRefuseSetsTooBigToHold) {
  MqarOptions m;
  m.lengths = {int64_t(1) << 40};
  EXPECT_THROW(make_mqar_samples(m), Error);
  m.lengths = {256};
  m.per_cell = int64_t(1) << 30;
  EXPECT_THROW(make_mqar_samples(m), Error);
  m.per_cell = 1;
  m.vocab = int64_t(1) << 40;
  EXPECT_THROW(make_mqar_samples(m), Error);
  PasskeyOptions p;
  p.lengths = {int64_t(1) << 40};
  EXPECT_THROW(make_passkey_samples(Tokenizer::bytes(), "filler text. ", p), Error);
  p.lengths = {0};
  EXPECT_THROW(make_passkey_samples(Tokenizer::bytes(), "filler text. ", p), Error);
}

TEST(LongEval, PositionBucketsDouble) {
  // Positions 1..5 of document A (losses 1..5) and 1..2 of B (10, 20).
  const auto b = bucket_losses({{1, 2, 3, 4, 5}, {10, 20}});
  ASSERT_EQ(b.size(), 3u);  // [1,2) [2,4) [4,8)
  EXPECT_EQ(b[0].lo, 1);
  EXPECT_EQ(b[0].count, 2);
  EXPECT_DOUBLE_EQ(b[0].mean_loss, (1 + 10) / 2.0);
  EXPECT_EQ(b[1].count, 3);
  EXPECT_DOUBLE_EQ(b[1].mean_loss, (2 + 3 + 20) / 3.0);
  EXPECT_EQ(b[2].lo, 4);
  EXPECT_EQ(b[2].hi, 8);
  EXPECT_DOUBLE_EQ(b[2].mean_loss, 4.5);
}

TEST(LongEval, SamplesRoundTripThroughJsonl) {
  testing::TempDir dir;
  MqarOptions o;
  o.pairs = {2};
  o.lengths = {16};
  o.per_cell = 2;
  const auto samples = make_mqar_samples(o);
  write_recall_jsonl(dir.file("s.jsonl"), samples);
  const auto back = read_recall_jsonl(dir.file("s.jsonl"));
  ASSERT_EQ(back.size(), samples.size());
  for (size_t i = 0; i < back.size(); ++i) {
    EXPECT_EQ(back[i].tokens, samples[i].tokens);
    EXPECT_EQ(back[i].groups, samples[i].groups);
    EXPECT_EQ(back[i].pairs, samples[i].pairs);
  }
  std::ofstream(dir.file("bad.jsonl")) << "{\"tokens\": [1, 2], \"groups\": [[5]]}\n";
  EXPECT_THROW(read_recall_jsonl(dir.file("bad.jsonl")), Error);
  // Nesting past the JSONL limit is refused while parsing, naming the line.
  std::ofstream(dir.file("deep.jsonl"))
      << "\n{\"tokens\": " << std::string(100, '[') << std::string(100, ']') << "}\n";
  try {
    read_recall_jsonl(dir.file("deep.jsonl"));
    ADD_FAILURE() << "deep nesting accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("deep.jsonl:2: JSON nests deeper"), std::string::npos)
        << e.what();
  }
}

// `rwkv7 data mqar` then `rwkv7 eval --task mqar --json --svg` with the shipped byte model;
// and loss-by-position on a small text.
TEST(LongEvalCli, DataThenEval) {
  using testing::quote;
  using testing::run_cli;
  testing::TempDir dir;
  const std::string model = std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";
  auto r = run_cli("data mqar --pairs 2,4 --lengths 32 --per-cell 2 --seed 1 -o " +
                   quote(dir.file("m.jsonl")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("eval -m " + quote(model) + " --task mqar --data " + quote(dir.file("m.jsonl")) +
              " --json --svg " + quote(dir.file("m.svg")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("cells").size(), 2u);
  EXPECT_GE(j.at("accuracy").get<double>(), 0.0);
  EXPECT_LE(j.at("accuracy").get<double>(), 1.0);
  EXPECT_NE(testing::slurp(dir.file("m.svg")).find("<svg"), std::string::npos);
  const std::string text =
      "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer";
  std::ofstream(dir.file("t.txt")) << text;
  r = run_cli("eval -m " + quote(model) + " --task loss-by-position --text-file " +
              quote(dir.file("t.txt")) + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto k = nlohmann::json::parse(r.out);
  // Positions 1 .. n-1 predicted: buckets [1,2), [2,4), ... up to the one holding n-1.
  EXPECT_EQ(k.at("buckets").size(), size_t(std::bit_width(text.size() - 1)));
  r = run_cli("eval -m " + quote(model) + " --task passkey");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--data"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace rwkv7
