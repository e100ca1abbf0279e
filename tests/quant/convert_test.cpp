// `rwkv7 convert`: official checkpoints → GGUF (llama.cpp rwkv7 layout) → Model::load gives
// the same logits (f32), and quantised versions of a real trained model keep its perplexity.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>

#include "cli/cli_support.hpp"
#include "core/mapped_file.hpp"
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
  // llama-quantize's K-quant mixes: the head in Q6_K, or Q8_0 here (128 columns are not a
  // whole super-block), a matrix of 128 columns in the fallback (Q4_K → Q5_0, Q5_K → Q5_1,
  // Q6_K → Q8_0), ffn.value (512 columns) in the K type.
  const struct {
    const char *type, *emb, *ffn_value;
  } mixes[] = {{"q4_k_m", "q5_0", "q4_k"}, {"q5_k_m", "q5_1", "q5_k"},
               {"q6_k", "q8_0", "q6_k"},   {"iq4_nl", "iq4_nl", "iq4_nl"},
               {"q5_0", "q5_0", "q5_0"},   {"q5_1", "q5_1", "q5_1"}};
  for (const auto& mix : mixes) {
    const std::string out = dir.file(std::string(mix.type) + ".gguf");
    auto r = run_cli("convert " + quote(pth) + " " + quote(out) + " --type " + mix.type);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const GgufFile g = read_gguf_raw(MappedFile::open(out));
    for (const GgufTensor& t : g.tensors) {
      std::string want = "f32";
      if (t.name == "token_embd.weight" || t.name.find("time_mix_key.weight") != std::string::npos)
        want = mix.emb;
      if (t.name == "output.weight")
        want = std::string(mix.type).find("_k") != std::string::npos ? "q8_0" : mix.emb;
      if (t.name.find("channel_mix_value.weight") != std::string::npos) want = mix.ffn_value;
      if (want != "f32" || t.ne.size() == 1) {
        EXPECT_EQ(dtype_name(t.dtype), want) << t.name;
      }
    }
    auto m = Model::load(out);
    EXPECT_EQ(m->weight_dtype(), mix.emb);
    const std::string again = dir.file(std::string(mix.type) + "-again.gguf");
    r = run_cli("convert " + quote(out) + " " + quote(again) + " --type " + mix.type);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::vector<int32_t> tokens = {1, 2, 3, 4, 5};
    EXPECT_EQ(all_logits(*m, tokens), all_logits(*Model::load(again), tokens)) << mix.type;
  }
  auto r = run_cli("convert " + quote(pth) + " " + quote(dir.file("x.gguf")) + " --type q3_k");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--type must be"), std::string::npos) << r.err;
}

// A model whose widths are multiples of 256 (C = 256, F = 1024, V = 512): q4_k_m puts every
// big matrix in Q4_K and the head in Q6_K with no fallback, and the model runs on the K-quant
// kernels token by token (decode) and as a sequence (prefill), both close to f32's logits.
// The official init's embedding (±1e-4) is below what an f16 super-scale resolves and its
// att.output / ffn.value are zero, so those are replaced by trained-like magnitudes first.
TEST(ConvertGolden, KQuantMixOnSuperBlockWidths) {
  TempDir dir;
  const std::string fresh = dir.file("fresh.pth");
  auto r = run_cli("init --layers 2 --embd 256 --vocab-size 512 --head-size 64 --threads 1 -o " +
                   quote(fresh));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  TensorFile src = read_tensor_file(fresh);
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const std::string name :
       {"emb.weight", "blocks.0.att.output.weight", "blocks.1.att.output.weight",
        "blocks.0.ffn.value.weight", "blocks.1.ffn.value.weight"}) {
    const TensorView v = src.get(name);
    auto buf = std::make_shared<std::vector<float>>(size_t(v.numel()));
    const float scale = name == "emb.weight" ? 0.5f : 0.03f;
    for (float& x : *buf) x = scale * nd(rng);
    src.tensors[name] = TensorView{DType::F32, v.shape, buf->data()};
    src.owners.push_back(buf);
  }
  const std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8};
  auto logits_of = [&](DType type, bool mix, const std::string& file) {
    GgufModelOptions o;
    o.type = type;
    o.llama_mix = mix;
    write_gguf_raw(file, rwkv7_to_gguf(src, o));
    return Model::load(file);
  };
  const auto base = all_logits(*logits_of(DType::F32, false, dir.file("f32.gguf")), tokens);
  const struct {
    DType type;
    double rel;
  } cases[] = {{DType::Q4_K, 0.12},
               {DType::Q5_K, 0.07},
               {DType::Q6_K, 0.04}};  // measured 0.083, 0.046, 0.027
  for (const auto& c : cases) {
    const std::string out = dir.file(dtype_name(c.type) + ".gguf");
    auto m = logits_of(c.type, true, out);
    for (const GgufTensor& t : read_gguf_raw(MappedFile::open(out)).tensors) {
      if (t.name == "output.weight") {
        EXPECT_EQ(t.dtype, DType::Q6_K);
      } else if (t.ne.size() == 2 && t.ne[0] % 256 == 0 && t.ne[1] % 256 == 0) {
        EXPECT_EQ(t.dtype, c.type) << t.name;  // the big matrices (LoRA factors are narrower)
      }
    }
    const auto seq = all_logits(*m, tokens);
    std::vector<float> step;
    State s = m->new_state();
    for (int32_t tok : tokens) {
      const auto l = m->forward(std::vector<int32_t>{tok}, s, Logits::All);
      step.insert(step.end(), l.begin(), l.end());
    }
    ASSERT_EQ(seq.size(), base.size());
    ASSERT_EQ(step.size(), base.size());
    double e_seq = 0, e_step = 0, ref = 0;
    for (size_t i = 0; i < base.size(); ++i) {
      e_seq += (seq[i] - base[i]) * double(seq[i] - base[i]);
      e_step += (step[i] - base[i]) * double(step[i] - base[i]);
      ref += double(base[i]) * base[i];
    }
    std::printf("[ logits ] C=256 %s: relative RMS error %.4f (sequence), %.4f (token by token)\n",
                dtype_name(c.type).c_str(), std::sqrt(e_seq / ref), std::sqrt(e_step / ref));
    EXPECT_LT(std::sqrt(e_seq / ref), c.rel) << dtype_name(c.type) << " sequence";
    EXPECT_LT(std::sqrt(e_step / ref), c.rel) << dtype_name(c.type) << " token by token";
  }
}

// Every written type, with and without the World vocabulary, passes tools/gguf_check.py: an
// independent Python reader with ggml's gguf.cpp rules (alignment, types, whole blocks, bounds)
// and llama.cpp's rwkv7 loader expectations (keys, every tensor name and ggml shape). A
// truncated copy and a file of another architecture must fail it.
TEST(ConvertGolden, WrittenFilesPassTheIndependentGgufCheck) {
  RWKV7_REQUIRE_SHARED(pth, "golden/rand-L2-D128.pth");
  RWKV7_REQUIRE_SHARED(vocab, "vocab/rwkv_vocab_v20230424.txt");
  RWKV7_REQUIRE_SHARED(tiny, "models/tiny-rwkv7-834K.pth");
  if (std::system("python3 -c 'import struct' >/dev/null 2>&1") != 0) {
    if (testing::under_ci()) FAIL() << "python3 is needed for tools/gguf_check.py";
    GTEST_SKIP() << "python3 not installed: tools/gguf_check.py not run";
  }
  TempDir dir;
  const std::string checker = std::string(RWKV7_SOURCE_DIR) + "/tools/gguf_check.py";
  auto check = [&](const std::string& file, const std::string& type,
                   const std::string& flags = "") {
    return testing::run_command("python3 " + quote(checker) + " " + quote(file) +
                                (type.empty() ? "" : " --expect-type " + type) + " " + flags);
  };
  // A random model with 1000 tokens has no vocabulary to write: llama.cpp cannot load it, and
  // the checker says so unless told that is expected.
  for (const char* type : {"f32", "f16", "bf16", "q8_0", "q4_0", "q5_0", "q5_1", "q4_k_m", "q5_k_m",
                           "q6_k", "iq4_nl"}) {
    const std::string out = dir.file(std::string(type) + ".gguf");
    auto r = run_cli("convert " + quote(pth) + " " + quote(out) + " --type " + type);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("no tokenizer"), std::string::npos) << "no warning: " << r.err;
    // q4_k_m: its matrices are q4_k
    auto c = check(
        out,
        std::string(type).size() == 6 && type[5] == 'm' ? std::string(type).substr(0, 4) : type,
        "--no-tokenizer-ok");
    EXPECT_EQ(c.exit_code, 0) << c.out << c.err;
    EXPECT_NE(c.out.find(": ok"), std::string::npos) << c.out;
  }
  auto refused = check(dir.file("f32.gguf"), "");
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_NE(refused.out.find("tokenizer.ggml.model"), std::string::npos) << refused.out;
  // A byte-level model (V = 256) gets the 256 bytes as its tokenizer, which llama.cpp loads.
  {
    const std::string out = dir.file("tiny.gguf");
    auto r = run_cli("convert " + quote(tiny) + " " + quote(out) + " --type q8_0");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err.find("no tokenizer"), std::string::npos) << r.err;
    auto c = check(out, "q8_0");
    EXPECT_EQ(c.exit_code, 0) << c.out << c.err;
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
  // Bounds relative to f32: 8-bit 0.5%, 4-bit 2% (q4_0 is the old, looser 25%: it rounds the
  // head too), 5- and 6-bit in between. On this model (C = 128, F = 512) only the 512-column
  // ffn.value matrices can be K-quants; the rest take llama-quantize's fallbacks.
  const struct {
    const char* name;
    DType type;
    bool mix;
    double bound;
  } formats[] = {{"f32", DType::F32, false, 0},       {"q8_0", DType::Q8_0, false, 0.005},
                 {"q6_k", DType::Q6_K, true, 0.005},  {"q5_k_m", DType::Q5_K, true, 0.01},
                 {"q5_1", DType::Q5_1, false, 0.01},  {"q5_0", DType::Q5_0, false, 0.01},
                 {"q4_k_m", DType::Q4_K, true, 0.02}, {"iq4_nl", DType::IQ4_NL, false, 0.02},
                 {"q4_0", DType::Q4_0, false, 0.25}};
  for (const auto& fmt : formats) {
    const std::string out = dir.file(std::string(fmt.name) + ".gguf");
    GgufModelOptions o;
    o.type = fmt.type;
    o.llama_mix = fmt.mix;
    write_gguf_raw(out, rwkv7_to_gguf(src, o));
    const double ppl = evaluate_loss(*Model::load(out), tokens, 1024).perplexity;
    if (fmt.type == DType::F32) base = ppl;
    std::printf("[ perplexity ] tiny-rwkv7-834K %-6s: %.4f (%+.2f%% vs f32), %zu tokens\n",
                fmt.name, ppl, 100 * (ppl / base - 1), tokens.size() - 1);
    EXPECT_TRUE(std::isfinite(ppl));
    if (fmt.type != DType::F32) {
      EXPECT_LT(std::fabs(ppl / base - 1), fmt.bound) << fmt.name;
    }
  }
  // The f32 GGUF is the .pth model exactly.
  EXPECT_NEAR(
      evaluate_loss(*Model::load(pth), std::span(tokens).first(2000), 1024).loss,
      evaluate_loss(*Model::load(dir.file("f32.gguf")), std::span(tokens).first(2000), 1024).loss,
      1e-12);
}

}  // namespace
}  // namespace rwkv7
