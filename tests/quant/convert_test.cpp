// `rwkv7 convert`: official checkpoints → GGUF (llama.cpp rwkv7 layout) → Model::load gives
// the same logits (f32), and quantised versions of a real trained model keep its perplexity.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "cli/cli_support.hpp"
#include "io/gguf.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/evaluate.hpp"
#include "rwkv7/model.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

using testing::quote;
using testing::run_cli;
using testing::TempDir;

std::vector<float> all_logits(const Model& m, const std::vector<int32_t>& tokens) {
  State s = m.new_state();
  return m.forward(tokens, s, Logits::All);
}

TEST(ConvertGolden, F32GgufGivesIdenticalLogits) {
  RWKV7_REQUIRE_SHARED(pth, "golden/rand-L2-D128.pth");
  TempDir dir;
  const std::string out = dir.file("m.gguf");
  auto r = run_cli("convert " + quote(pth) + " " + quote(out) + " --type f32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto a = Model::load(pth);
  auto b = Model::load(out);
  EXPECT_EQ(b->config().shape_string(), a->config().shape_string());
  std::vector<int32_t> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back(int32_t((i * 37 + 5) % a->config().vocab_size));
  const auto la = all_logits(*a, tokens), lb = all_logits(*b, tokens);
  ASSERT_EQ(la.size(), lb.size());
  float maxd = 0;
  for (size_t i = 0; i < la.size(); ++i) maxd = std::max(maxd, std::fabs(la[i] - lb[i]));
  EXPECT_EQ(maxd, 0.0f);
  // The GGUF carries llama.cpp's metadata.
  TensorFile f = read_tensor_file(out);
  EXPECT_EQ(f.metadata.at("rwkv7.block_count"), "2");
  EXPECT_EQ(f.metadata.at("rwkv7.embedding_length"), "128");
  EXPECT_EQ(f.metadata.at("general.file_type"), "0");
}

TEST(ConvertGolden, GgufToGgufAndQuantisedTypes) {
  RWKV7_REQUIRE_SHARED(pth, "golden/rand-L2-D128.pth");
  TempDir dir;
  for (const char* type : {"bf16", "f16", "q8_0", "q4_0"}) {
    const std::string out = dir.file(std::string(type) + ".gguf");
    auto r = run_cli("convert " + quote(pth) + " " + quote(out) + " --type " + type);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto m = Model::load(out);
    EXPECT_EQ(m->weight_dtype(), type);
    // GGUF in, GGUF out: same tensors again.
    const std::string again = dir.file(std::string(type) + "-again.gguf");
    r = run_cli("convert " + quote(out) + " " + quote(again) + " --type " + type);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::vector<int32_t> tokens = {1, 2, 3, 4, 5};
    EXPECT_EQ(all_logits(*m, tokens), all_logits(*Model::load(again), tokens)) << type;
  }
  auto r = run_cli("convert " + quote(pth) + " " + quote(dir.file("x.gguf")) + " --type q5_k");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--type must be"), std::string::npos) << r.err;
}

// Every written type, with and without the World vocabulary, passes tools/gguf_check.py: an
// independent Python reader with ggml's gguf.cpp rules (alignment, types, whole blocks, bounds)
// and llama.cpp's rwkv7 loader expectations (keys, every tensor name and ggml shape). A
// truncated copy and a file of another architecture must fail it.
TEST(ConvertGolden, WrittenFilesPassTheIndependentGgufCheck) {
  RWKV7_REQUIRE_SHARED(pth, "golden/rand-L2-D128.pth");
  RWKV7_REQUIRE_SHARED(vocab, "vocab/rwkv_vocab_v20230424.txt");
  if (std::system("python3 -c 'import struct' >/dev/null 2>&1") != 0) {
    if (testing::under_ci()) FAIL() << "python3 is needed for tools/gguf_check.py";
    GTEST_SKIP() << "python3 not installed: tools/gguf_check.py not run";
  }
  TempDir dir;
  const std::string checker = std::string(RWKV7_SOURCE_DIR) + "/tools/gguf_check.py";
  auto check = [&](const std::string& file, const std::string& type) {
    return testing::run_command("python3 " + quote(checker) + " " + quote(file) +
                                (type.empty() ? "" : " --expect-type " + type));
  };
  for (const char* type : {"f32", "f16", "bf16", "q8_0", "q4_0"}) {
    const std::string out = dir.file(std::string(type) + ".gguf");
    auto r = run_cli("convert " + quote(pth) + " " + quote(out) + " --type " + type);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto c = check(out, type);
    EXPECT_EQ(c.exit_code, 0) << c.out << c.err;
    EXPECT_NE(c.out.find(": ok"), std::string::npos) << c.out;
  }
  // With the World vocabulary: a small fresh model of the full 65536-token width.
  const std::string fresh = dir.file("fresh.pth"), worded = dir.file("worded.gguf");
  auto r = run_cli("init --layers 1 --embd 64 --head-size 32 -o " + quote(fresh));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("convert " + quote(fresh) + " " + quote(worded) + " --type q8_0 --vocab " +
              quote(vocab));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto c = check(worded, "q8_0");
  EXPECT_EQ(c.exit_code, 0) << c.out << c.err;
  // The checker can fail: a truncated file, and the wrong expected type.
  const std::string whole = testing::slurp(dir.file("q4_0.gguf"));
  const std::string cut = dir.file("cut.gguf");
  std::ofstream(cut, std::ios::binary) << whole.substr(0, whole.size() - 100);
  c = check(cut, "");
  EXPECT_EQ(c.exit_code, 1) << c.out;
  EXPECT_NE(c.out.find("past the end"), std::string::npos) << c.out;
  c = check(dir.file("q4_0.gguf"), "q8_0");
  EXPECT_EQ(c.exit_code, 1) << c.out;
}

// The byte-level tiny model: perplexity on the last 10% of tinyshakespeare, fp32 vs quantised.
TEST(ConvertPerplexity, TinyModelQ8AndQ4) {
  RWKV7_REQUIRE_SHARED(pth, "models/tiny-rwkv7-834K.pth");
  RWKV7_REQUIRE_SHARED(text_path, "data/tinyshakespeare.txt");
  const std::string text = testing::slurp(text_path);
  std::vector<int32_t> tokens = {0};
  for (size_t i = text.size() - text.size() / 10; i < text.size(); ++i)
    tokens.push_back(int32_t(uint8_t(text[i])));
  TempDir dir;
  const TensorFile src = read_tensor_file(pth);
  double base = 0;
  for (DType t : {DType::F32, DType::Q8_0, DType::Q4_0}) {
    const std::string out = dir.file(dtype_name(t) + ".gguf");
    GgufModelOptions o;
    o.type = t;
    write_gguf_raw(out, rwkv7_to_gguf(src, o));
    const double ppl = evaluate_loss(*Model::load(out), tokens, 1024).perplexity;
    if (t == DType::F32) base = ppl;
    std::printf("[ perplexity ] tiny-rwkv7-834K %-5s: %.4f (%+.2f%% vs f32), %zu tokens\n",
                dtype_name(t).c_str(), ppl, 100 * (ppl / base - 1), tokens.size() - 1);
    EXPECT_TRUE(std::isfinite(ppl));
    if (t == DType::Q8_0) EXPECT_LT(std::fabs(ppl / base - 1), 0.02);
    if (t == DType::Q4_0) EXPECT_LT(std::fabs(ppl / base - 1), 0.25);
  }
  // The f32 GGUF is the .pth model exactly.
  EXPECT_NEAR(
      evaluate_loss(*Model::load(pth), std::span(tokens).first(2000), 1024).loss,
      evaluate_loss(*Model::load(dir.file("f32.gguf")), std::span(tokens).first(2000), 1024).loss,
      1e-12);
}

}  // namespace
}  // namespace rwkv7
