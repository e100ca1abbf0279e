// `rwkv7 grad` end to end: the golden rows in, the reference trainer's loss and gradients out.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "cli/cli_support.hpp"
#include "io/tensor_io.hpp"
#include "test_support.hpp"

namespace rwkv7::testing {
namespace {

std::string rows_arg(const TensorView& t) {
  const auto* ids = static_cast<const int32_t*>(t.data);
  std::string s;
  for (int64_t b = 0; b < t.shape[0]; ++b) {
    if (b) s += ';';
    for (int64_t i = 0; i < t.shape[1]; ++i) {
      if (i) s += ',';
      s += std::to_string(ids[b * t.shape[1] + i]);
    }
  }
  return s;
}

// `rwkv7 grad <flags>` on the golden rows gives the golden loss and gradients: within
// `relative` of each tensor's largest value (SPEC §7: 1e-3 in fp32), the loss within
// `loss_tolerance`. Returns the largest relative difference seen.
double expect_golden_gradients(const std::string& grads_path, const std::string& model_path,
                               const std::string& flags, double relative = 1e-3,
                               double loss_tolerance = 1e-5) {
  SCOPED_TRACE("flags: " + flags);
  const TensorFile golden = read_safetensors(grads_path);
  TempDir dir;
  const std::string out = dir.file("g.safetensors");
  const CliResult r =
      run_cli("grad -m " + quote(model_path) + " --tokens " +
              quote(rows_arg(golden.get("tokens"))) + " -o " + quote(out) + " " + flags);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return 0;
  const TensorFile got = read_safetensors(out);
  const std::vector<float> loss = to_f32(got.get("loss"));
  EXPECT_EQ(loss.size(), 1u);
  if (loss.size() != 1) return 0;
  EXPECT_NEAR(loss[0], std::stod(golden.metadata.at("loss")), loss_tolerance);
  size_t compared = 0;
  double worst = 0;
  for (const std::string& name : golden.order) {
    if (name.rfind("grad.", 0) != 0) continue;
    EXPECT_TRUE(got.has(name)) << name;
    if (!got.has(name)) continue;
    EXPECT_EQ(got.get(name).shape, golden.get(name).shape) << name;
    const std::vector<float> want = to_f32(golden.get(name)), have = to_f32(got.get(name));
    EXPECT_EQ(want.size(), have.size()) << name;
    if (want.size() != have.size()) continue;
    double mx = 0, err = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      mx = std::max(mx, double(std::abs(want[i])));
      err = std::max(err, double(std::abs(want[i] - have[i])));
    }
    EXPECT_LE(err, relative * mx) << name;
    worst = std::max(worst, err / std::max(mx, 1e-30));
    ++compared;
  }
  EXPECT_EQ(compared + 1, got.order.size());  // every golden gradient, plus `loss`
  EXPECT_FALSE(got.has("grad.blocks.0.att.v0"));
  return worst;
}

TEST(GradCli, MatchesGoldenGradients) {
  RWKV7_REQUIRE_SHARED(grads_path, "golden/rand-L2-D128.grads.safetensors");
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  expect_golden_gradients(grads_path, model_path, "");
}

// The golden rows (33 positions) in segments of 10 (the last 3 long) with the state and its
// gradient carried, and with per-layer recompute: still the official trainer's gradients.
TEST(GradCli, SegmentsAndCheckpointedLayersMatchGoldenGradients) {
  RWKV7_REQUIRE_SHARED(grads_path, "golden/rand-L2-D128.grads.safetensors");
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  expect_golden_gradients(grads_path, model_path, "--segment 10");
  expect_golden_gradients(grads_path, model_path, "--segment 7 --checkpoint-layers");
}

// --precision bf16: every product's operands rounded to bf16 (2^-9 relative each), sums in
// fp32: the official fp32 gradients up to that rounding, and measurably not equal to them.
TEST(GradCli, Bf16PrecisionIsTheGoldenGradientsUpToBf16Rounding) {
  RWKV7_REQUIRE_SHARED(grads_path, "golden/rand-L2-D128.grads.safetensors");
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  const double bf16_step = 1.0 / 256;
  const double worst = expect_golden_gradients(grads_path, model_path, "--precision bf16",
                                               16 * bf16_step, 0.02);  // loss ≈ 5.5 nats
  EXPECT_GT(worst, 1e-4) << "the bf16 gradients are the fp32 ones: nothing was rounded";
  TempDir dir;
  const CliResult bad = run_cli("grad -m " + quote(model_path) + " --tokens 1,2 -o " +
                                quote(dir.file("x")) + " --precision half");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--precision"), std::string::npos) << bad.err;
}

TEST(GradCli, RejectsBadRows) {
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  TempDir dir;
  const std::string base = "grad -m " + quote(model_path) + " -o " + quote(dir.file("x")) + " ";
  CliResult r = run_cli(base + "--tokens '1,2,3;4,5'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("equal lengths"), std::string::npos) << r.err;
  r = run_cli(base + "--tokens '7'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("at least 2"), std::string::npos) << r.err;
  r = run_cli(base + "--tokens '1,1000'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("outside the vocabulary"), std::string::npos) << r.err;
  r = run_cli(base + "--tokens '1,x'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(dir.file("x")));
}

}  // namespace
}  // namespace rwkv7::testing
