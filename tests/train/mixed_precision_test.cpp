// Mixed-precision training (products in bf16, sums in fp32, everything else fp32): the
// gradients are the fp32 ones up to bf16 rounding of the products' operands, and the
// reference backend's bf16 mode (double sums of the same rounded operands) agrees with the cpu
// backend's (VDPBF16PS where the CPU has AVX512_BF16, the rounded fp32 kernels elsewhere).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "core/dtype.hpp"
#include "core/thread_pool.hpp"
#include "hwy/targets.h"
#include "model/backward.hpp"
#include "rwkv7/error.hpp"
#include "tiny_params.hpp"

namespace rwkv7 {
namespace {

// One rounding of an operand to bf16 moves it by up to 2^-9 relative; a gradient is a chain of
// a few products through the layers, each with two rounded operands.
constexpr double kBf16Epsilon = 1.0 / 256;

train::GradResult gradients(const train::TrainParams& p,
                            const std::vector<std::vector<int32_t>>& rows, ProductPrecision pr,
                            bool reference) {
  ThreadPool pool(2);
  auto be = reference ? make_reference_backend(pr) : make_cpu_backend(&pool, pr);
  return train::loss_and_gradients(p, rows, *be, &pool);
}

TEST(MixedPrecision, Bf16GradientsAreTheFp32OnesUpToBf16Rounding) {
  const train::TrainParams p = testing::tiny_random_params(2, 64, 16, 80, 3, 0.2f);
  const auto rows = testing::random_rows(2, 41, 80, 9);
  const train::GradResult f32 = gradients(p, rows, ProductPrecision::F32, false);
  const train::GradResult b16 = gradients(p, rows, ProductPrecision::BF16, false);
  std::string worst_name;
  const double gap = testing::worst_relative_difference(f32.grads, b16.grads, &worst_name);
  EXPECT_LT(gap, 16 * kBf16Epsilon) << worst_name;  // measured 0.028
  // The products did round: fp32 against fp32 differs by ~1e-6 (summation order only).
  EXPECT_GT(gap, 1e-4) << "bf16 gradients equal the fp32 ones: the products did not round";
  EXPECT_NEAR(b16.loss, f32.loss, 2 * kBf16Epsilon * f32.loss);
  EXPECT_NE(b16.loss, f32.loss);
}

TEST(MixedPrecision, CpuBf16EqualsReferenceBf16) {
  const train::TrainParams p = testing::tiny_random_params(2, 64, 16, 80, 4, 0.2f);
  const auto rows = testing::random_rows(2, 33, 80, 10);
  const train::GradResult cpu = gradients(p, rows, ProductPrecision::BF16, false);
  const train::GradResult ref = gradients(p, rows, ProductPrecision::BF16, true);
  const train::GradResult ref32 = gradients(p, rows, ProductPrecision::F32, true);
  // bf16 gradients are not continuous in the inputs: an activation a few fp32 ulps away rounds
  // to a neighbouring bf16 value, so the reference itself moves by ~1e-2 of a tensor's largest
  // gradient when every parameter moves by 4e-7 (fp32 gradients: ~1e-5). The cpu backend sums
  // in other orders (fp32 against the reference's double; VDPBF16PS pairs or the fp32 kernels'
  // tiles) and so lands within that spread of the reference: 6e-5 with VDPBF16PS, 1.5e-3 on the
  // AVX2 / SSE4 fallback, measured. It must stay within it, and far closer than fp32 is (0.04):
  // a product that did not round its operands would be off by a share of that.
  train::TrainParams nudged = p;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& [name, t] : nudged.tensors)
    for (float& x : t.data) x *= 1.0f + 4e-7f * u(rng);
  const train::GradResult ref_nudged = gradients(nudged, rows, ProductPrecision::BF16, true);
  const double spread = testing::worst_relative_difference(ref.grads, ref_nudged.grads);
  const double to_fp32 = testing::worst_relative_difference(ref32.grads, ref.grads);
  std::string worst_name;
  const double gap = testing::worst_relative_difference(ref.grads, cpu.grads, &worst_name);
  EXPECT_LT(gap, spread) << worst_name << " (the reference's own spread: " << spread << ")";
  EXPECT_LT(gap, to_fp32 / 10) << worst_name << " (bf16 vs fp32: " << to_fp32 << ")";
  EXPECT_NEAR(cpu.loss, ref.loss, 1e-5 * ref.loss);
}

// What `rwkv7 train --precision bf16` does: the products read bf16 copies of the weights
// (TrainParams::keep_bf16_weights) instead of rounding the fp32 values each time. The gradients
// are the same, bit for bit, on every target (VDPBF16PS pairs made from the copies; the AVX2
// fallback's panels widened from them). And the copies are what the products read: copies of
// other values change the loss.
TEST(MixedPrecision, KeptBf16WeightsGiveTheSameGradients) {
  const train::TrainParams p = testing::tiny_random_params(2, 64, 16, 80, 5, 0.2f);
  const auto rows = testing::random_rows(2, 41, 80, 11);
  train::TrainParams kept = p;
  kept.keep_bf16_weights();
  // Six matrices per layer and the head; not the embedding (a lookup) nor the LoRA factors.
  EXPECT_EQ(kept.bf16_weights.size(), 2u * 6 + 1);
  EXPECT_NE(kept.bf16_of("head.weight"), nullptr);
  EXPECT_NE(kept.bf16_of("blocks.1.ffn.value.weight"), nullptr);
  EXPECT_EQ(kept.bf16_of("emb.weight"), nullptr);
  EXPECT_EQ(kept.bf16_of("blocks.1.att.w1"), nullptr);
  train::TrainParams other = kept;  // copies of the weights halved
  for (auto& [name, copy] : other.bf16_weights)
    for (uint16_t& h : copy) h = f32_to_bf16(0.5f * bf16_to_f32(h));
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const std::string what = hwy::TargetName(target);
    const train::GradResult rounded = gradients(p, rows, ProductPrecision::BF16, false);
    const train::GradResult read = gradients(kept, rows, ProductPrecision::BF16, false);
    EXPECT_EQ(read.loss, rounded.loss) << what;
    for (const auto& [name, g] : rounded.grads)
      EXPECT_EQ(read.grads.at(name).data, g.data) << what << " " << name;
    // Each copy is read: halving any one of them alone changes the loss.
    for (const auto& [name, copy] : kept.bf16_weights) {
      train::TrainParams one = kept;
      one.bf16_weights[name] = other.bf16_weights.at(name);
      EXPECT_NE(gradients(one, rows, ProductPrecision::BF16, false).loss, rounded.loss)
          << what << ": the products did not read the copy of " << name;
    }
    // fp32 products ignore the copies.
    const train::GradResult f32 = gradients(other, rows, ProductPrecision::F32, false);
    EXPECT_EQ(f32.loss, gradients(p, rows, ProductPrecision::F32, false).loss) << what;
  }
  hwy::SetSupportedTargetsForTest(0);
  // A copy that no longer matches its matrix's size is refused by name, not read past its end.
  train::TrainParams short_copy = kept;
  short_copy.bf16_weights["blocks.0.att.value.weight"].pop_back();
  try {
    gradients(short_copy, rows, ProductPrecision::BF16, false);
    ADD_FAILURE() << "a bf16 copy of the wrong size was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.0.att.value.weight"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace rwkv7
