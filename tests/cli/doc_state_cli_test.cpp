// `rwkv7 doc read / ask` and `rwkv7 state compress / info` as a user runs them.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_support.hpp"
#include "rwkv7/model.hpp"
#include "rwkv7/state_compress.hpp"

namespace rwkv7 {
namespace {

using testing::quote;
using testing::run_cli;
using testing::TempDir;

const std::string kModel = std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";

std::string some_text(size_t bytes) {
  const std::string verse =
      "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n"
      "And all the clouds that lour'd upon our house\nIn the deep bosom of the ocean buried.\n\n";
  std::string t;
  for (int i = 0; t.size() < bytes; ++i) t += std::to_string(i) + " " + verse;
  return t.substr(0, bytes);
}

TEST(DocCli, InterruptedReadResumesToTheSameStateAsOneRead) {
  TempDir dir;
  const std::string doc = dir.file("doc.txt");
  std::ofstream(doc, std::ios::binary) << some_text(12000);
  const std::string m = " -m " + quote(kModel) + " -t 1 --block 4096 ";
  auto whole = run_cli("doc read " + quote(doc) + " -o " + quote(dir.file("whole.state")) + m);
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  EXPECT_NE(whole.out.find("12000 tokens"), std::string::npos) << whole.out;
  // Two interrupted runs (4 KB each), then one that finishes.
  const std::string out = dir.file("parts.state");
  for (int i = 0; i < 2; ++i) {
    auto part = run_cli("doc read " + quote(doc) + " -o " + quote(out) + m + "--stop-after 4096");
    ASSERT_EQ(part.exit_code, 0) << part.err;
    EXPECT_TRUE(std::filesystem::exists(out + ".partial"));
    EXPECT_FALSE(std::filesystem::exists(out));
  }
  auto last = run_cli("doc read " + quote(doc) + " -o " + quote(out) + m);
  ASSERT_EQ(last.exit_code, 0) << last.err;
  EXPECT_NE(last.err.find("resuming"), std::string::npos) << last.err;
  EXPECT_FALSE(std::filesystem::exists(out + ".partial"));
  auto model = Model::load(kModel);
  State a = load_state(dir.file("whole.state"), *model);
  State b = load_state(out, *model);
  EXPECT_EQ(a.tokens_consumed, 12000);
  EXPECT_EQ(b.tokens_consumed, 12000);
  ASSERT_EQ(a.wkv.size(), b.wkv.size());
  for (size_t i = 0; i < a.wkv.size(); ++i)  // same tokens; only the chunking differs
    ASSERT_NEAR(a.wkv[i], b.wkv[i], 1e-4 * (1 + std::fabs(a.wkv[i]))) << i;
  // A checkpoint of another document is refused.
  std::ofstream(doc, std::ios::binary) << some_text(16000);
  run_cli("doc read " + quote(doc) + " -o " + quote(out) + m + "--stop-after 4096");
  std::ofstream(doc, std::ios::binary) << some_text(14000);
  auto other = run_cli("doc read " + quote(doc) + " -o " + quote(out) + m);
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("another document"), std::string::npos) << other.err;
}

TEST(DocCli, CompressedDocumentAnswersFromAFork) {
  TempDir dir;
  const std::string doc = dir.file("doc.txt");
  std::ofstream(doc, std::ios::binary) << some_text(6000);
  const std::string st = dir.file("doc.state");
  auto rd = run_cli("doc read " + quote(doc) + " -o " + quote(st) + " -m " + quote(kModel) +
                    " -t 1 --compress lowrank-int8 --ratio 0.3");
  ASSERT_EQ(rd.exit_code, 0) << rd.err;
  auto info = run_cli("state info --json " + quote(st));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  auto j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j["method"], "lowrank-int8");
  EXPECT_LE(j["ratio"].get<double>(), 0.3);
  EXPECT_EQ(j["tokens_consumed"], 6000);
  auto ask = run_cli("doc ask " + quote(st) + " 'Who?' 'Where?' -n 5 --seed 1 -m " + quote(kModel) +
                     " -t 1");
  ASSERT_EQ(ask.exit_code, 0) << ask.err;
  EXPECT_NE(ask.out.find("User: Who?\n\nAssistant:"), std::string::npos) << ask.out;
  EXPECT_NE(ask.out.find("User: Where?\n\nAssistant:"), std::string::npos) << ask.out;
  // The document state is unchanged by the questions.
  EXPECT_EQ(read_state_file(st).tokens_consumed, 6000);
}

TEST(StateCli, CompressAndInfo) {
  TempDir dir;
  const std::string in = dir.file("in.state");
  auto fw = run_cli("forward -m " + quote(kModel) + " --tokens 72,101,108,108,111 -o " +
                    quote(dir.file("l.safetensors")) + " --state-out " + quote(in));
  ASSERT_EQ(fw.exit_code, 0) << fw.err;
  auto c = run_cli("state compress " + quote(in) + " " + quote(dir.file("o.state")) +
                   " --method adaptive --energy 0.9");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto info = run_cli("state info --json " + quote(dir.file("o.state")));
  auto j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j["method"], "adaptive");
  EXPECT_EQ(j["tokens_consumed"], 5);
  EXPECT_EQ(j["model_shape"], "L4-C128-N32-V256-F512");
  const auto& cs = read_state_file(dir.file("o.state"));
  EXPECT_DOUBLE_EQ(j["ratio"].get<double>(), double(cs.bytes()) / double(cs.raw_bytes()));
  // Flag errors exit 1 and name the problem.
  auto bad = run_cli("state compress " + quote(in) + " " + quote(dir.file("p.state")) +
                     " --method lowrank");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("rank or ratio"), std::string::npos) << bad.err;
  std::ofstream(dir.file("junk.state")) << "not a state";
  auto junk = run_cli("state info " + quote(dir.file("junk.state")));
  EXPECT_EQ(junk.exit_code, 1);
  EXPECT_NE(junk.err.find("junk.state"), std::string::npos) << junk.err;
}

TEST(EvalCli, StateFidelityPrintsOneObjectPerMethodAndRatio) {
  TempDir dir;
  const std::string text = dir.file("t.txt");
  std::ofstream(text, std::ios::binary) << some_text(700);
  auto r = run_cli("eval --task state-fidelity -m " + quote(kModel) + " -t 1 --text-file " +
                   quote(text) + " --prefix-tokens 300 --continue 64 --method bf16,lowrank-int8" +
                   " --ratio 0.2,0.4 --json --svg " + quote(dir.file("f.svg")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<nlohmann::json> rows;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 3u);  // bf16 once, lowrank-int8 at two ratios (no "reset": not asked)
  EXPECT_EQ(rows[0]["method"], "bf16");
  EXPECT_EQ(rows[0]["ratio"], 0.5);
  for (const auto& row : rows) {
    for (const char* k : {"method", "ratio", "top1_agreement", "kl", "loss_delta"})
      EXPECT_TRUE(row.contains(k)) << k;
    EXPECT_EQ(row["continue_tokens"], 64);
  }
  EXPECT_LE(rows[1]["ratio"].get<double>(), 0.2);
  EXPECT_LE(rows[2]["ratio"].get<double>(), 0.4);
  EXPECT_NE(testing::slurp(dir.file("f.svg")).find("lowrank-int8"), std::string::npos);
  EXPECT_NE(testing::slurp(dir.file("f-kl.svg")).find("log10 mean KL"), std::string::npos);
}

// A projection learned from a text, then used by state compress (the file carries the
// decoder: info shows it apart from the ratio; a reader needs nothing else) and by
// state-fidelity (the learned methods are added when --projection is given).
TEST(StateCli, LearnCompressAndMeasureWithALearnedProjection) {
  TempDir dir;
  const std::string text = dir.file("t.txt");
  std::ofstream(text, std::ios::binary) << some_text(3000);
  const std::string proj = dir.file("p.safetensors");
  auto learn = run_cli("state learn -m " + quote(kModel) + " -t 1 --text-file " + quote(text) +
                       " --rank 4 --samples 6 --min-prefix 32 --max-prefix 256 --continue 16" +
                       " --steps 3 --batch 2 --json -o " + quote(proj));
  ASSERT_EQ(learn.exit_code, 0) << learn.err;
  const auto lj = nlohmann::json::parse(learn.out);
  EXPECT_EQ(lj["rank"], 4);
  EXPECT_EQ(lj["step_kl"].size(), 3u);
  EXPECT_GT(lj["kl_start"].get<double>(), 0);

  const std::string in = dir.file("in.state");
  auto fw = run_cli("forward -m " + quote(kModel) + " --tokens 72,101,108,108,111 -o " +
                    quote(dir.file("l.safetensors")) + " --state-out " + quote(in));
  ASSERT_EQ(fw.exit_code, 0) << fw.err;
  auto c = run_cli("state compress " + quote(in) + " " + quote(dir.file("o.state")) +
                   " --method learned-int8 --projection " + quote(proj));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto info = run_cli("state info --json " + quote(dir.file("o.state")));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  const auto j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j["method"], "learned-int8");
  // L4 C128 H4 N32, rank 4: bf16 shifts 2·4·128·2, int8 code 4·4·4·32 and scales 4·4·4·4;
  // the decoder (4·4·32·4 floats) and the side flag are shared.
  EXPECT_EQ(j["bytes"], 2048 + 2048 + 256);
  EXPECT_EQ(j["shared_bytes"], 4 * 4 * 32 * 4 * 4 + 4);
  EXPECT_DOUBLE_EQ(j["ratio"].get<double>(), double(2048 + 2048 + 256) / 69632.0);
  auto without = run_cli("state compress " + quote(in) + " " + quote(dir.file("x.state")) +
                         " --method learned");
  EXPECT_EQ(without.exit_code, 1);
  EXPECT_NE(without.err.find("projection"), std::string::npos) << without.err;
  auto gen = run_cli("generate -m " + quote(kModel) + " -t 1 -n 4 --seed 1 --state-in " +
                     quote(dir.file("o.state")) + " -p x");
  EXPECT_EQ(gen.exit_code, 0) << gen.err;

  auto fid = run_cli("eval --task state-fidelity -m " + quote(kModel) + " -t 1 --text-file " +
                     quote(text) + " --prefix-tokens 300 --continue 32 --method learned,int8" +
                     " --projection " + quote(proj) + " --json");
  ASSERT_EQ(fid.exit_code, 0) << fid.err;
  std::istringstream lines(fid.out);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["method"], "learned");
  EXPECT_NEAR(rows[0]["ratio"].get<double>(), double(2048 + 4 * 4 * 4 * 32 * 4) / 69632.0, 1e-9);
}

// Passkey answered from a state compressed at the question: one table per method, "reset"
// (a zero state there) as the baseline.
TEST(EvalCli, PasskeyFromACompressedState) {
  TempDir dir;
  const std::string filler = dir.file("f.txt");
  std::ofstream(filler, std::ios::binary) << some_text(4000);
  const std::string data = dir.file("pk.jsonl");
  auto make = run_cli("data passkey --filler " + quote(filler) +
                      " --lengths 200 --depths 0.5 --per-cell 2 -o " + quote(data));
  ASSERT_EQ(make.exit_code, 0) << make.err;
  auto r = run_cli("eval --task passkey -m " + quote(kModel) + " -t 1 --data " + quote(data) +
                   " --method reset,bf16,adaptive-int8 --ratio 0.2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["compression"], "reset");
  EXPECT_EQ(rows[2]["compression"], "adaptive-int8");
  EXPECT_EQ(rows[2]["target_ratio"], 0.2);
  for (const auto& row : rows) EXPECT_EQ(row["cells"][0]["total"], 2);
}

TEST(ChatCli, SessionFileCanBeCompressed) {
  TempDir dir;
  const std::string session = dir.file("chat.state");
  const std::string cmd = "chat -m " + quote(kModel) + " -t 1 -n 4 --seed 1 --session " +
                          quote(session) + " --session-compress adaptive-int8 --session-ratio 0.2";
  auto first = run_cli(cmd, "Good morrow\n");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const CompressedState cs = read_state_file(session);
  EXPECT_EQ(cs.method, "adaptive-int8");
  EXPECT_LE(cs.ratio(), 0.2);
  auto second = run_cli(cmd, "And again\n");
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_NE(second.err.find("resumed"), std::string::npos) << second.err;
  EXPECT_GT(read_state_file(session).tokens_consumed, cs.tokens_consumed);
  auto bad = run_cli("chat -m " + quote(kModel) + " --session-compress zip", "x\n");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("'zip'"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace rwkv7
