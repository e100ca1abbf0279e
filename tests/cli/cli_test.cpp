// The CLI end to end, checked against computations that do not go through the CLI.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/cli_support.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/model.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

using testing::quote;
using testing::run_cli;
using testing::TempDir;

// Greedy generation on the real tiny model must equal arg-max decoding done token by token
// with the scalar reference backend.
TEST(CliGenerate, GreedyOutputEqualsTokenByTokenReference) {
  RWKV7_REQUIRE_SHARED(model_path, "models/tiny-rwkv7-834K.pth");
  const std::string prompt = "It was the best of times";
  const int n = 40;
  auto r = run_cli("generate -m " + quote(model_path) + " -p " + quote(prompt) + " -n " +
                   std::to_string(n) + " --temperature 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << "speed goes to stderr: " << r.err;

  LoadOptions o;
  o.backend = BackendKind::Reference;
  auto m = Model::load(model_path, o);
  State st = m->new_state();
  std::vector<float> logits;
  for (unsigned char ch : prompt) {
    const int32_t t = ch;
    logits = m->forward(std::span<const int32_t>(&t, 1), st, Logits::Last);
  }
  std::string want = prompt;
  for (int i = 0; i < n; ++i) {
    const int32_t t = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (t == 0) break;
    want.push_back(char(t));
    logits = m->forward(std::span<const int32_t>(&t, 1), st, Logits::Last);
  }
  EXPECT_EQ(r.out, want + "\n");
}

TEST(CliGenerate, SameSeedSameTextAndStateRoundTrip) {
  RWKV7_REQUIRE_SHARED(model_path, "models/tiny-rwkv7-834K.pth");
  TempDir dir;
  const std::string base = "generate -m " + quote(model_path) + " -p 'Once' -n 30 --seed 7 -q";
  auto a = run_cli(base), b = run_cli(base);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  // Saving the state and continuing from it is the same as one run: prompt "Once upon" then
  // greedy, versus prompt "Once" (state saved) and then " upon" from that state.
  auto whole =
      run_cli("generate -m " + quote(model_path) + " -p 'Once upon' -n 20 --temperature 0 -q");
  auto first = run_cli("generate -m " + quote(model_path) + " -p 'Once' -n 0 -q --state-out " +
                       quote(dir.file("s.safetensors")));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto second = run_cli("generate -m " + quote(model_path) +
                        " -p ' upon' -n 20 --temperature 0 -q --state-in " +
                        quote(dir.file("s.safetensors")));
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ("Once" + second.out, whole.out);
}

// `forward` writes the golden numbers in the SPEC §7 layout, in both modes, and a state written
// after a first part continues exactly.
TEST(CliForward, WritesGoldenLogitsAndStateInBothModes) {
  RWKV7_REQUIRE_SHARED(golden_path, "golden/rand-L2-D128.golden.safetensors");
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  TensorFile g = read_safetensors(golden_path);
  const TensorView& tv = g.get("tokens");
  std::vector<int32_t> tokens(static_cast<const int32_t*>(tv.data),
                              static_cast<const int32_t*>(tv.data) + tv.numel());
  auto join = [](auto b, auto e) {
    std::string s;
    for (auto it = b; it != e; ++it) s += (s.empty() ? "" : ",") + std::to_string(*it);
    return s;
  };
  const auto want_logits = to_f32(g.get("logits"));
  const auto want_wkv = to_f32(g.get("state.wkv"));
  TempDir dir;
  for (const char* mode : {"seq", "rnn"}) {
    const std::string out = dir.file(std::string(mode) + ".safetensors");
    auto r = run_cli("forward -m " + quote(model_path) + " --tokens " +
                     join(tokens.begin(), tokens.end()) + " --mode " + mode + " -o " + quote(out));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    TensorFile f = read_safetensors(out);
    EXPECT_EQ(f.get("logits").shape, (Shape{int64_t(tokens.size()), 1000}));
    EXPECT_EQ(f.get("state.wkv").shape, (Shape{2, 2, 64, 64}));
    EXPECT_EQ(f.get("state.att_shift").shape, (Shape{2, 128}));
    const auto got = to_f32(f.get("logits"));
    ASSERT_EQ(got.size(), want_logits.size()) << mode;
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want_logits[i], 1e-4) << mode << i;
    const auto wkv = to_f32(f.get("state.wkv"));
    ASSERT_EQ(wkv.size(), want_wkv.size()) << mode;
    for (size_t i = 0; i < wkv.size(); ++i) ASSERT_NEAR(wkv[i], want_wkv[i], 1e-4) << mode << i;
  }
  // 20 tokens, state out; the rest from that state: the last rows equal the golden rows.
  const std::string s = dir.file("state.safetensors"), o1 = dir.file("a.safetensors"),
                    o2 = dir.file("b.safetensors");
  auto r1 = run_cli("forward -m " + quote(model_path) + " --tokens " +
                    join(tokens.begin(), tokens.begin() + 20) + " --state-out " + quote(s) +
                    " -o " + quote(o1));
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  auto r2 = run_cli("forward -m " + quote(model_path) + " --tokens " +
                    join(tokens.begin() + 20, tokens.end()) + " --state-in " + quote(s) + " -o " +
                    quote(o2));
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  const auto tail = to_f32(read_safetensors(o2).get("logits"));
  ASSERT_EQ(tail.size(), want_logits.size() - 20 * 1000);
  for (size_t i = 0; i < tail.size(); ++i) ASSERT_NEAR(tail[i], want_logits[20 * 1000 + i], 1e-4);
  TensorFile st = read_safetensors(s);
  EXPECT_EQ(st.metadata.at("tokens_consumed"), "20");
  EXPECT_FALSE(st.metadata.at("model_fingerprint").empty());
}

TEST(CliForward, StateOfAnotherModelShapeIsRefused) {
  RWKV7_REQUIRE_SHARED(a_path, "golden/rand-L2-D128.pth");
  RWKV7_REQUIRE_SHARED(b_path, "golden/rand-L2-D96-hs32-fp16.pth");
  TempDir dir;
  auto r1 = run_cli("forward -m " + quote(a_path) + " --tokens 1,2,3 --state-out " +
                    quote(dir.file("s.st")) + " -o " + quote(dir.file("o.st")));
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  auto r2 = run_cli("forward -m " + quote(b_path) + " --tokens 1,2,3 --state-in " +
                    quote(dir.file("s.st")) + " -o " + quote(dir.file("o2.st")));
  EXPECT_NE(r2.exit_code, 0);
  EXPECT_NE(r2.err.find("shape"), std::string::npos) << r2.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("o2.st")));
}

// eval's loss equals the cross-entropy computed from the official logits of the same text.
TEST(CliEval, LossEqualsCrossEntropyOfGoldenLogits) {
  RWKV7_REQUIRE_SHARED(golden_path, "golden/tiny-rwkv7-834K.golden.safetensors");
  RWKV7_REQUIRE_SHARED(model_path, "models/tiny-rwkv7-834K.pth");
  TensorFile g = read_safetensors(golden_path);
  const auto logits = to_f32(g.get("logits"));
  const TensorView& tv = g.get("tokens");
  const auto* tokens = static_cast<const int32_t*>(tv.data);
  const int64_t T = tv.numel(), V = 256;
  double ce = 0;
  for (int64_t p = 0; p + 1 < T; ++p) {
    const float* row = &logits[size_t(p * V)];
    double mx = *std::max_element(row, row + V), sum = 0;
    for (int64_t i = 0; i < V; ++i) sum += std::exp(row[i] - mx);
    ce -= row[tokens[p + 1]] - mx - std::log(sum);
  }
  ce /= double(T - 1);
  TempDir dir;
  std::string text;
  for (int64_t i = 0; i < T; ++i) text.push_back(char(tokens[i]));
  std::ofstream(dir.file("t.txt"), std::ios::binary) << text;
  for (const char* window : {"7", "256"}) {
    auto r = run_cli("eval -m " + quote(model_path) + " --text-file " + quote(dir.file("t.txt")) +
                     " --json --window " + window);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["tokens"].get<int64_t>(), T - 1);
    EXPECT_NEAR(j["loss"].get<double>(), ce, 1e-5);
    EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(ce), 1e-4 * std::exp(ce));
  }
}

TEST(CliTokenize, MatchesOfficialTokenizerCase) {
  RWKV7_REQUIRE_SHARED(vocab, "vocab/rwkv_vocab_v20230424.txt");
  auto r = run_cli("tokenize --vocab " + quote(vocab), "Hello world");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[33155, 40213]\n");  // golden/tokenizer_cases.json
  auto back = run_cli("tokenize --decode --vocab " + quote(vocab), r.out);
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_EQ(back.out, "Hello world");
}

TEST(CliInfo, ReportsShapesAndNonFiniteWeights) {
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  auto ok = run_cli("info --json -m " + quote(model_path));
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  auto j = nlohmann::json::parse(ok.out);
  EXPECT_EQ(j["n_layer"], 2);
  EXPECT_EQ(j["n_embd"], 128);
  EXPECT_EQ(j["vocab_size"], 1000);
  EXPECT_EQ(j["state_bytes"], (2 * 128 * 2 + 2 * 2 * 64 * 64) * 4);
  EXPECT_EQ(j["nonfinite_values"], 0);

  // The same weights with three NaNs in one matrix.
  TensorFile f = read_pth(model_path);
  std::vector<float> bad = to_f32(f.get("blocks.1.att.key.weight"));
  bad[0] = bad[5] = bad[77] = std::nanf("");
  NamedTensors tensors;
  for (const auto& name : f.order) tensors.emplace_back(name, f.get(name));
  for (auto& [name, view] : tensors)
    if (name == "blocks.1.att.key.weight") view.data = bad.data();
  TempDir dir;
  write_safetensors(dir.file("nan.safetensors"), tensors);
  auto r = run_cli("info -m " + quote(dir.file("nan.safetensors")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("blocks.1.att.key.weight: 3"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("NaN"), std::string::npos) << r.err;
}

TEST(CliErrors, BadInputsGiveClearMessagesAndNonZeroExit) {
  TempDir dir;
  std::ofstream(dir.file("empty.pth")) << "";
  std::ofstream(dir.file("junk.pth")) << "this is not a checkpoint at all";
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases = {
      {"info -m /nonexistent/model.pth", "/nonexistent/model.pth"},
      {"info -m " + quote(dir.file("empty.pth")), "empty"},
      {"info -m " + quote(dir.file("junk.pth")), "junk.pth"},
      {"forward -m " + quote(dir.file("junk.pth")) + " --tokens 1,x -o " + quote(dir.file("o")),
       "--tokens"},
      {"chat", "model"},
      {"nosuchcommand", "subcommand"},
      {"bench -m x --chunk 0", "--chunk: must be greater than 0 (got 0)"},
      {"generate -m x --temperature -1", "--temperature: must be 0 or more (got -1)"},
      {"bench -m x --gen ten", "--gen: must be a number (got 'ten')"},
  };
  for (const Case& c : cases) {
    auto r = run_cli(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.args << " → " << r.err;
    EXPECT_EQ(r.err.find("Segmentation"), std::string::npos);
  }
}

TEST(CliErrors, OutOfVocabularyTokenIsNamed) {
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  TempDir dir;
  auto r =
      run_cli("forward -m " + quote(model_path) + " --tokens 1,5000 -o " + quote(dir.file("o")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("5000"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("o")));
}

// Two turns, saved to a session; a second invocation resumes from the saved state.
TEST(CliChat, SessionIsSavedAndResumed) {
  RWKV7_REQUIRE_SHARED(model_path, "models/tiny-rwkv7-834K.pth");
  TempDir dir;
  const std::string session = dir.file("chat.safetensors");
  auto r = run_cli("chat -m " + quote(model_path) + " -n 8 --session " + quote(session),
                   "hello\nhow are you\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // One reply per turn, each after "Assistant:" and ended by a blank line (8 bytes of reply
  // cannot spell another "Assistant:").
  size_t replies = 0;
  for (size_t at = r.out.find("Assistant:"); at != std::string::npos;
       at = r.out.find("Assistant:", at + 1))
    ++replies;
  EXPECT_EQ(replies, 2u) << r.out;
  EXPECT_EQ(r.out.rfind("\n\n"), r.out.size() - 2) << r.out;
  TensorFile s = read_safetensors(session);
  const int64_t after_two = std::stoll(s.metadata.at("tokens_consumed"));
  // Each turn feeds "User: <msg>\n\nAssistant:" (bytes) plus up to 8 generated + 2 separator.
  const int64_t fed = int64_t(std::string("User: hello\n\nAssistant:").size() +
                              std::string("User: how are you\n\nAssistant:").size());
  EXPECT_GE(after_two, fed);
  EXPECT_LE(after_two, fed + 2 * (8 + 2));
  auto r2 =
      run_cli("chat -m " + quote(model_path) + " -n 8 --session " + quote(session), "again\n");
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_NE(r2.err.find("resumed"), std::string::npos) << r2.err;
  TensorFile s2 = read_safetensors(session);
  EXPECT_GT(std::stoll(s2.metadata.at("tokens_consumed")), after_two);
}

}  // namespace
}  // namespace rwkv7
