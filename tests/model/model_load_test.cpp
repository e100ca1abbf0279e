// Checkpoints that are not complete RWKV-7 models are refused with the tensor named.
#include <gtest/gtest.h>

#include <filesystem>

#include "cli/cli_support.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/model.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

// Writes the golden checkpoint with one tensor replaced (or removed when replacement is null).
std::string rewrite(const std::string& src, const testing::TempDir& dir, const std::string& name,
                    const TensorView* replacement) {
  TensorFile f = read_pth(src);
  NamedTensors tensors;
  for (const auto& n : f.order) {
    if (n != name) {
      tensors.emplace_back(n, f.get(n));
    } else if (replacement) {
      tensors.emplace_back(n, *replacement);
    }
  }
  const std::string out = dir.file(name + ".safetensors");
  write_safetensors(out, tensors);
  return out;
}

std::string load_error(const std::string& path) {
  try {
    Model::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelLoad, MissingTensorIsNamed) {
  RWKV7_REQUIRE_SHARED(src, "golden/rand-L2-D128.pth");
  testing::TempDir dir;
  const std::string err = load_error(rewrite(src, dir, "blocks.1.att.k_a", nullptr));
  EXPECT_NE(err.find("blocks.1.att.k_a"), std::string::npos) << err;
  EXPECT_NE(err.find("missing"), std::string::npos) << err;
}

TEST(ModelLoad, WrongShapeIsNamedWithBothShapes) {
  RWKV7_REQUIRE_SHARED(src, "golden/rand-L2-D128.pth");
  testing::TempDir dir;
  std::vector<float> data(128 * 100, 0.0f);
  TensorView bad{DType::F32, {100, 128}, data.data()};
  const std::string err = load_error(rewrite(src, dir, "blocks.0.att.key.weight", &bad));
  EXPECT_NE(err.find("blocks.0.att.key.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("[100, 128]"), std::string::npos) << err;
  EXPECT_NE(err.find("[128, 128]"), std::string::npos) << err;
}

TEST(ModelLoad, IntegerWeightsAreRefused) {
  RWKV7_REQUIRE_SHARED(src, "golden/rand-L2-D128.pth");
  testing::TempDir dir;
  std::vector<int32_t> data(128, 0);
  TensorView bad{DType::I32, {128}, data.data()};
  const std::string err = load_error(rewrite(src, dir, "ln_out.weight", &bad));
  EXPECT_NE(err.find("ln_out.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("i32"), std::string::npos) << err;
}

TEST(ModelLoad, HeadsThatDoNotDivideTheWidthAreRefused) {
  RWKV7_REQUIRE_SHARED(src, "golden/rand-L2-D128.pth");
  testing::TempDir dir;
  std::vector<float> data(3 * 64, 0.0f);
  TensorView bad{DType::F32, {3, 64}, data.data()};
  const std::string err = load_error(rewrite(src, dir, "blocks.0.att.r_k", &bad));
  EXPECT_NE(err.find("r_k"), std::string::npos) << err;
}

TEST(ModelLoad, NotAModelAtAll) {
  RWKV7_REQUIRE_SHARED(src, "golden/torch2-format-sample.pth");
  const std::string err = load_error(src);
  EXPECT_NE(err.find("emb.weight"), std::string::npos) << err;
}

TEST(ModelState, CopiedStateContinuesIdentically) {
  RWKV7_REQUIRE_SHARED(src, "models/tiny-rwkv7-834K.pth");
  auto m = Model::load(src);
  const std::vector<int32_t> a = {72, 101, 108, 108, 111}, b = {32, 119, 111, 114, 108, 100};
  State s1 = m->new_state();
  m->forward(a, s1, Logits::None);
  State fork = s1;  // a State is plain data: copying forks the sequence
  auto l1 = m->forward(b, s1);
  auto l2 = m->forward(b, fork);
  ASSERT_EQ(l1.size(), size_t(m->config().vocab_size));
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(s1.wkv, fork.wkv);
  EXPECT_EQ(s1.tokens_consumed, 11);
}

TEST(ModelState, SaveLoadContinueEqualsUninterrupted) {
  RWKV7_REQUIRE_SHARED(src, "golden/rand-L2-D96-hs32-fp16.pth");
  auto m = Model::load(src);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 50; ++i) tokens.push_back((i * 37 + 11) % 300);
  State whole = m->new_state();
  auto want = m->forward(tokens, whole, Logits::All);
  State part = m->new_state();
  auto first = m->forward(std::span<const int32_t>(tokens).first(23), part, Logits::All);
  testing::TempDir dir;
  save_state(dir.file("s.safetensors"), part, *m);
  std::string warning;
  State loaded = load_state(dir.file("s.safetensors"), *m, &warning);
  EXPECT_TRUE(warning.empty()) << warning;
  EXPECT_EQ(loaded.tokens_consumed, 23);
  EXPECT_EQ(loaded.wkv, part.wkv);  // bit-exact through the file
  auto rest = m->forward(std::span<const int32_t>(tokens).subspan(23), loaded, Logits::All);
  first.insert(first.end(), rest.begin(), rest.end());
  ASSERT_EQ(first.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(first[i], want[i], 1e-5) << i;
  EXPECT_EQ(loaded.wkv, whole.wkv);
}

// 3000 positions: chunked sequence mode equals the recurrence run one token at a time.
TEST(ModelLong, ChunkedSequenceModeEqualsTokenByTokenOverLongInputs) {
  RWKV7_REQUIRE_SHARED(src, "models/tiny-rwkv7-834K.pth");
  auto m = Model::load(src);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 3000; ++i) tokens.push_back("the quick brown fox jumps "[i % 26]);
  State seq = m->new_state(), rnn = m->new_state();
  auto last_seq = m->forward(tokens, seq, Logits::Last);
  std::vector<float> last_rnn;
  for (int32_t t : tokens) last_rnn = m->forward(std::span<const int32_t>(&t, 1), rnn);
  ASSERT_EQ(last_seq.size(), size_t(m->config().vocab_size));
  ASSERT_EQ(last_rnn.size(), last_seq.size());
  ASSERT_EQ(seq.wkv.size(), rnn.wkv.size());
  ASSERT_FALSE(seq.wkv.empty());
  for (size_t i = 0; i < last_seq.size(); ++i) ASSERT_NEAR(last_seq[i], last_rnn[i], 1e-3) << i;
  for (size_t i = 0; i < seq.wkv.size(); ++i) ASSERT_NEAR(seq.wkv[i], rnn.wkv[i], 1e-3) << i;
}

}  // namespace
}  // namespace rwkv7
