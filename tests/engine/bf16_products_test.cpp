// A model loaded with LoadOptions::precision = "bf16" (bf16 products of the large matrices on
// CPUs with AVX512_BF16). SPEC §7 judges such kernels by their logit error against the fp32
// result: here against the official reference's logits (../shared/golden), with a bound from
// bf16's rounding; and a sequence's logits must not depend on its batch or on the chunking.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backends/cpu/gemm_bf16_kernels.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/context.hpp"
#include "rwkv7/model.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

std::shared_ptr<const Model> load(const std::string& path, const std::string& precision,
                                  int64_t chunk = 256) {
  LoadOptions o;
  o.precision = precision;
  o.chunk = chunk;
  return Model::load(path, o);
}

double stddev(const std::vector<float>& v) {
  double m = 0, s = 0;
  for (float x : v) m += x;
  m /= double(v.size());
  for (float x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size()));
}

TEST(Bf16Products, RefusedPrecisionNamesTheValue) {
  RWKV7_REQUIRE_SHARED(path, "golden/rand-L2-D128.pth");
  try {
    load(path, "fp16");
    FAIL() << "precision fp16 was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("fp16"), std::string::npos) << e.what();
  }
}

// Logits over the golden prompt: within bf16 rounding of the reference's (each product's
// operands rounded to 8 significant bits, errors of ~2^-9 relative growing through the
// layers), and farther from it than the fp32 products are (the rounding really happens).
TEST(Bf16Products, LogitsStayWithinBf16RoundingOfTheReference) {
  if (!cpu::bf16_dot_available()) GTEST_SKIP() << "no AVX512_BF16 here: bf16 products run fp32";
  for (const char* name : {"tiny-rwkv7-834K", "rand-L3-D256-bf16", "rand-L2-D128"}) {
    SCOPED_TRACE(name);
    RWKV7_REQUIRE_SHARED(golden_path, std::string("golden/") + name + ".golden.safetensors");
    TensorFile g = read_safetensors(golden_path);
    const std::string ckpt = std::string(name) == "tiny-rwkv7-834K"
                                 ? testing::shared_file("models/tiny-rwkv7-834K.pth")
                                 : testing::shared_file(std::string("golden/") + name + ".pth");
    ASSERT_FALSE(ckpt.empty());
    const TensorView& tv = g.get("tokens");
    std::vector<int32_t> tokens(static_cast<const int32_t*>(tv.data),
                                static_cast<const int32_t*>(tv.data) + tv.numel());
    const std::vector<float> want = to_f32(g.get("logits"));
    double err[2] = {0, 0};
    const char* precisions[2] = {"fp32", "bf16"};
    for (int i = 0; i < 2; ++i) {
      auto model = load(ckpt, precisions[i]);
      ASSERT_EQ(model->product_precision(), precisions[i]);
      State st = model->new_state();
      const std::vector<float> got = model->forward(tokens, st, Logits::All);
      ASSERT_EQ(got.size(), want.size());
      for (size_t e = 0; e < got.size(); ++e)
        err[i] = std::max(err[i], std::fabs(double(got[e]) - want[e]));
    }
    const double scale = std::max(1.0, stddev(want));
    std::printf("%s: max |dlogit| / max(1, std) fp32 %.3g, bf16 %.3g\n", name, err[0] / scale,
                err[1] / scale);
    EXPECT_LE(err[1], 0.05 * scale);
    EXPECT_GT(err[1], 10 * err[0]) << "bf16 products should round (fp32 error " << err[0] << ")";
  }
}

// A sequence decoded inside a batch of 12 gets bitwise the logits it gets alone (every product,
// the LoRA factors' too, is the same bits at any count), and prefill in one chunk equals prefill
// a token at a time within fp32 rounding (the WKV's two forms round differently).
TEST(Bf16Products, SequenceInABatchAndInChunksEqualsItsRunAlone) {
  if (!cpu::bf16_dot_available()) GTEST_SKIP() << "no AVX512_BF16 here: bf16 products run fp32";
  RWKV7_REQUIRE_SHARED(path, "golden/rand-L3-D256-bf16.pth");
  auto model = load(path, "bf16");
  ASSERT_EQ(model->product_precision(), "bf16");
  Context ctx(2);
  const int n = 12, steps = 5;
  const int64_t V = model->config().vocab_size;
  auto close = [](const std::vector<float>& a, const std::vector<float>& b, const char* what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    double scale = 0;
    for (float x : a) scale = std::max(scale, double(std::fabs(x)));
    for (size_t v = 0; v < a.size(); ++v)
      ASSERT_NEAR(b[v], a[v], 1e-4 * std::max(1.0, scale)) << what << " logit " << v;
  };
  std::vector<State> alone(n, model->new_state()), together(n, model->new_state());
  std::vector<std::vector<float>> logits_together(n);
  std::vector<int32_t> tokens(n);
  for (int i = 0; i < n; ++i) tokens[size_t(i)] = int32_t((11 * i + 5) % V);
  for (int step = 0; step < steps; ++step) {
    std::vector<SequenceRequest> batch;
    for (int i = 0; i < n; ++i)
      batch.push_back({std::span<const int32_t>(&tokens[size_t(i)], 1), &together[size_t(i)],
                       Logits::Last, &logits_together[size_t(i)]});
    model->forward(ctx, batch);
    for (int i = 0; i < n; ++i) {
      const auto a = model->forward(ctx, std::span<const int32_t>(&tokens[size_t(i)], 1),
                                    alone[size_t(i)], Logits::Last);
      ASSERT_EQ(a, logits_together[size_t(i)])
          << "sequence " << i << " step " << step << ": its batch changed its logits";
      tokens[size_t(i)] = int32_t(std::max_element(a.begin(), a.end()) - a.begin());
    }
  }
  // 40 prompt tokens: one pass of 40 positions, or 40 passes of one.
  std::vector<int32_t> prompt(40);
  for (size_t t = 0; t < prompt.size(); ++t) prompt[t] = int32_t((7 * t + 3) % size_t(V));
  auto one_at_a_time = load(path, "bf16", 1);
  State s1 = model->new_state(), s2 = one_at_a_time->new_state();
  close(model->forward(ctx, prompt, s1, Logits::All),
        one_at_a_time->forward(ctx, prompt, s2, Logits::All), "chunk 256 vs 1");
}

}  // namespace
}  // namespace rwkv7
