// GradOptions::loss_from: only late positions count. Checked against soft targets that are
// zero before the cut and one-hot after it (the same loss summed, another mean), whole and in
// segments; a cut that leaves nothing is refused.
#include <gtest/gtest.h>

#include <cmath>

#include "model/backward.hpp"
#include "rwkv7/error.hpp"
#include "tiny_params.hpp"

namespace rwkv7::train {
namespace {

using testing::random_rows;
using testing::tiny_random_params;

TEST(LossFrom, EqualsSoftTargetsZeroBeforeTheCutAlsoInSegments) {
  const TrainParams p = tiny_random_params(2, 32, 16, 40, 5);
  const int64_t V = p.config.vocab_size, T = 24, from = 17;
  const auto rows = random_rows(2, T + 1, V, 71);
  std::vector<float> late(size_t(2 * T * V), 0.0f);
  for (size_t b = 0; b < rows.size(); ++b)
    for (int64_t t = from; t < T; ++t)
      late[(b * size_t(T) + size_t(t)) * size_t(V) + size_t(rows[b][size_t(t + 1)])] = 1.0f;
  auto be = make_reference_backend();
  GradOptions soft;
  soft.soft_targets = &late;
  const GradResult want = loss_and_gradients(p, rows, *be, nullptr, soft);
  const double scale = double(T) / double(T - from);  // mean over the counted positions only
  for (int64_t segment : {0, 5}) {
    GradOptions o;
    o.loss_from = from;
    o.segment = segment;
    const GradResult got = loss_and_gradients(p, rows, *be, nullptr, o);
    EXPECT_EQ(got.positions, 2 * (T - from));
    EXPECT_NEAR(got.loss, want.loss * scale, 1e-5 * got.loss) << "segment " << segment;
    for (const auto& [name, g] : want.grads) {
      const auto& h = got.grads.at(name).data;
      double mx = 0, err = 0;
      for (size_t i = 0; i < h.size(); ++i) {
        mx = std::max(mx, std::abs(double(g.data[i]) * scale));
        err = std::max(err, std::abs(double(h[i]) - double(g.data[i]) * scale));
      }
      EXPECT_LE(err, 1e-4 * mx + 1e-8) << name << ", segment " << segment;
    }
  }
  GradOptions o;  // a cut that leaves no position is refused
  o.loss_from = T;
  EXPECT_THROW(loss_and_gradients(p, rows, *be, nullptr, o), Error);
}

}  // namespace
}  // namespace rwkv7::train
