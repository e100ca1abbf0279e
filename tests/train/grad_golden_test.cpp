// Whole-model loss and gradients against the official trainer (../shared/golden/
// rand-L2-D128.grads.safetensors): loss within 1e-5, every gradient within 1e-3 × that
// tensor's max |grad| (SPEC §7).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "core/thread_pool.hpp"
#include "io/tensor_io.hpp"
#include "model/backward.hpp"
#include "rwkv7/error.hpp"
#include "test_support.hpp"

namespace rwkv7::train {
namespace {

struct GoldenGrads {
  std::vector<std::vector<int32_t>> rows;
  double loss = 0;
  TensorFile file;
};

GoldenGrads read_golden_grads(const std::string& path) {
  GoldenGrads g;
  g.file = read_safetensors(path);
  const TensorView& t = g.file.get("tokens");
  const auto* ids = static_cast<const int32_t*>(t.data);
  for (int64_t b = 0; b < t.shape[0]; ++b)
    g.rows.emplace_back(ids + b * t.shape[1], ids + (b + 1) * t.shape[1]);
  g.loss = std::stod(g.file.metadata.at("loss"));
  return g;
}

// Worst |Δ| / max|golden| over all tensors; fails any tensor beyond 1e-3.
double compare_grads(const GoldenGrads& g, const Gradients& grads, bool verbose) {
  double worst = 0;
  size_t seen = 0;
  for (const std::string& gname : g.file.order) {
    if (gname.rfind("grad.", 0) != 0) continue;
    const std::string name = gname.substr(5);
    auto it = grads.find(name);
    EXPECT_NE(it, grads.end()) << "no gradient for " << name;
    if (it == grads.end()) continue;
    ++seen;
    const TensorView& gv = g.file.get(gname);
    EXPECT_EQ(shape_numel(gv.shape), shape_numel(it->second.shape)) << name;
    const std::vector<float> want = to_f32(gv);
    double mx = 0, err = 0;
    for (float w : want) mx = std::max(mx, double(std::abs(w)));
    for (size_t i = 0; i < want.size(); ++i)
      err = std::max(err, double(std::abs(want[i] - it->second.data[i])));
    const double rel = err / std::max(mx, 1e-30);
    worst = std::max(worst, rel);
    if (verbose) std::printf("  %-40s max|g| %.3e  rel err %.2e\n", name.c_str(), mx, rel);
    EXPECT_LE(rel, 1e-3) << name << ": max |Δ| " << err << ", max |grad| " << mx;
  }
  EXPECT_EQ(seen, grads.size()) << "golden file and our gradients name different tensors";
  return worst;
}

TEST(GradGolden, LossAndGradientsMatchReferenceTrainer) {
  RWKV7_REQUIRE_SHARED(grads_path, "golden/rand-L2-D128.grads.safetensors");
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  const GoldenGrads g = read_golden_grads(grads_path);
  const TrainParams p = params_from_file(read_tensor_file(model_path));
  ThreadPool pool(2);
  auto be = make_cpu_backend(&pool);
  for (int64_t ck : {1, 5, 32}) {  // checkpoint intervals must not change the result
    GradOptions o;
    o.wkv_checkpoint = ck;
    const GradResult r = loss_and_gradients(p, g.rows, *be, &pool, o);
    EXPECT_EQ(r.positions, 2 * 33);
    EXPECT_NEAR(r.loss, g.loss, 1e-5);
    const double worst = compare_grads(g, r.grads, ck == 32);
    std::printf("checkpoint %lld: loss %.8f (golden %.8f, |Δ| %.2e), worst grad rel err %.2e\n",
                (long long)ck, r.loss, g.loss, std::abs(r.loss - g.loss), worst);
  }
}

// The plain double-accumulating reference backend gives the same gradients as the SIMD +
// threaded one (the fast dense products are checked against the plain loops).
TEST(GradGolden, ReferenceBackendAgrees) {
  RWKV7_REQUIRE_SHARED(grads_path, "golden/rand-L2-D128.grads.safetensors");
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  const GoldenGrads g = read_golden_grads(grads_path);
  const TrainParams p = params_from_file(read_tensor_file(model_path));
  const GradResult r = loss_and_gradients(p, g.rows, *make_reference_backend());
  EXPECT_NEAR(r.loss, g.loss, 1e-5);
  compare_grads(g, r.grads, false);
}

// L2Wrap leaves the loss alone and moves only the head / upstream gradients by the
// arg-max terms: with it off the result is the golden one, with it on the head gradient
// changes while the loss does not.
TEST(GradGolden, L2WrapChangesGradientsNotLoss) {
  RWKV7_REQUIRE_SHARED(grads_path, "golden/rand-L2-D128.grads.safetensors");
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  const GoldenGrads g = read_golden_grads(grads_path);
  const TrainParams p = params_from_file(read_tensor_file(model_path));
  ThreadPool pool(2);
  auto be = make_cpu_backend(&pool);
  GradOptions on;
  on.l2wrap = true;
  const GradResult r0 = loss_and_gradients(p, g.rows, *be, &pool);
  const GradResult r1 = loss_and_gradients(p, g.rows, *be, &pool, on);
  EXPECT_EQ(r0.loss, r1.loss);
  const auto& h0 = r0.grads.at("head.weight").data;
  const auto& h1 = r1.grads.at("head.weight").data;
  double diff = 0;
  for (size_t i = 0; i < h0.size(); ++i) diff = std::max(diff, double(std::abs(h0[i] - h1[i])));
  EXPECT_GT(diff, 0.0);
}

TEST(GradGolden, RejectsBadRows) {
  RWKV7_REQUIRE_SHARED(model_path, "golden/rand-L2-D128.pth");
  const TrainParams p = params_from_file(read_tensor_file(model_path));
  auto be = make_reference_backend();
  EXPECT_THROW(loss_and_gradients(p, {{1, 2, 3}, {1, 2}}, *be), Error);
  EXPECT_THROW(loss_and_gradients(p, {{1}}, *be), Error);
  EXPECT_THROW(loss_and_gradients(p, {{1, 100000}}, *be), Error);
  EXPECT_THROW(loss_and_gradients(p, {}, *be), Error);
}

}  // namespace
}  // namespace rwkv7::train
