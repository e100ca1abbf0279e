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

// `rwkv7 grad <flags>` on the golden rows gives the golden loss and gradients.
void expect_golden_gradients(const std::string& grads_path, const std::string& model_path,
                             const std::string& flags) {
  SCOPED_TRACE("flags: " + flags);
  const TensorFile golden = read_safetensors(grads_path);
  TempDir dir;
  const std::string out = dir.file("g.safetensors");
  const CliResult r =
      run_cli("grad -m " + quote(model_path) + " --tokens " +
              quote(rows_arg(golden.get("tokens"))) + " -o " + quote(out) + " " + flags);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const TensorFile got = read_safetensors(out);
  const std::vector<float> loss = to_f32(got.get("loss"));
  ASSERT_EQ(loss.size(), 1u);
  EXPECT_NEAR(loss[0], std::stod(golden.metadata.at("loss")), 1e-5);
  size_t compared = 0;
  for (const std::string& name : golden.order) {
    if (name.rfind("grad.", 0) != 0) continue;
    ASSERT_TRUE(got.has(name)) << name;
    EXPECT_EQ(got.get(name).shape, golden.get(name).shape) << name;
    const std::vector<float> want = to_f32(golden.get(name)), have = to_f32(got.get(name));
    ASSERT_EQ(want.size(), have.size()) << name;
    double mx = 0, err = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      mx = std::max(mx, double(std::abs(want[i])));
      err = std::max(err, double(std::abs(want[i] - have[i])));
    }
    EXPECT_LE(err, 1e-3 * mx) << name;
    ++compared;
  }
  EXPECT_EQ(compared + 1, got.order.size());  // every golden gradient, plus `loss`
  EXPECT_FALSE(got.has("grad.blocks.0.att.v0"));
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
