// Training dropout (--dropout): the masks (rate, scale, determinism), the gradient of the
// loss with dropout against finite differences, and the same gradients whole, in segments,
// with recomputed layers and split over data-parallel ranks.
#include "model/dropout.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "model/backward.hpp"
#include "rwkv7/error.hpp"
#include "tiny_params.hpp"

namespace rwkv7::train {
namespace {

using testing::random_rows;
using testing::tiny_random_params;

TEST(Dropout, DropsAboutPAndScalesTheRestDeterministically) {
  const int64_t R = 96, C = 64;
  Dropout d{0.25f, 7, 32, 0, 32};
  std::vector<float> x(size_t(R * C), 1.0f), y = x;
  d.apply(x.data(), R, C, Dropout::AfterTimeMix, 3);
  d.apply(y.data(), R, C, Dropout::AfterTimeMix, 3);
  EXPECT_EQ(x, y) << "the same seed, site and layer draw the same mask";
  int64_t zeros = 0;
  for (int64_t i = 0; i < R * C; ++i) {
    const bool kept = d.keeps(Dropout::AfterTimeMix, 3, i / C, i % C, C);
    EXPECT_EQ(x[size_t(i)], kept ? 1.0f / 0.75f : 0.0f) << i;
    zeros += !kept;
  }
  // 6144 draws: the fraction dropped is 0.25 within 4 standard deviations (0.022).
  EXPECT_NEAR(double(zeros) / double(R * C), 0.25, 0.022);
  std::vector<float> other(size_t(R * C), 1.0f), layer(size_t(R * C), 1.0f);
  Dropout{0.25f, 8, 32, 0, 32}.apply(other.data(), R, C, Dropout::AfterTimeMix, 3);
  d.apply(layer.data(), R, C, Dropout::AfterTimeMix, 4);
  EXPECT_NE(other, x) << "another seed, another mask";
  EXPECT_NE(layer, x) << "another layer, another mask";
  // A segment of rows (positions 10..19 of rows of 32) draws the whole row's mask there.
  Dropout seg{0.25f, 7, 10, 10, 32};
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t i = 0; i < 10; ++i)
      for (int64_t c = 0; c < C; c += 7)
        EXPECT_EQ(seg.keeps(Dropout::Embedding, 0, b * 10 + i, c, C),
                  d.keeps(Dropout::Embedding, 0, b * 32 + 10 + i, c, C));
}

GradResult grads(const TrainParams& p, const std::vector<std::vector<int32_t>>& rows, float drop,
                 int64_t segment = 0, bool checkpoint = false, int64_t first_row = 0,
                 const Backend* be = nullptr) {
  auto ref = make_reference_backend();
  GradOptions o;
  o.dropout = drop;
  o.dropout_seed = 1234;
  o.dropout_first_row = first_row;
  o.segment = segment;
  o.checkpoint_layers = checkpoint;
  return loss_and_gradients(p, rows, be ? *be : *ref, nullptr, o);
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::abs(x)));
  return m;
}

// Along a random direction over three parameters (embedding, a time-mix and a channel-mix
// matrix), the directional derivative of the loss with dropout (fixed masks: a fixed function
// of the weights) against a central finite difference.
TEST(Dropout, GradientMatchesFiniteDifferences) {
  const TrainParams p = tiny_random_params(2, 32, 16, 40, 5);
  const auto rows = random_rows(2, 13, 40, 61);
  const float prob = 0.3f;
  const GradResult g = grads(p, rows, prob);
  std::mt19937 rng{62};
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const char* name :
       {"emb.weight", "blocks.0.att.output.weight", "blocks.1.ffn.value.weight"}) {
    std::vector<float> dir(p.tensors.at(name).data.size());
    double analytic = 0;
    for (size_t i = 0; i < dir.size(); ++i) {
      dir[i] = nd(rng);
      analytic += double(dir[i]) * g.grads.at(name).data[i];
    }
    const double h = 2e-3;  // the loss is fp32: a smaller step loses the difference
    auto shifted = [&](double sign) {
      TrainParams q = p;
      auto& t = q.tensors.at(name).data;
      for (size_t i = 0; i < t.size(); ++i) t[i] += float(sign * h) * dir[i];
      return grads(q, rows, prob).loss;
    };
    const double numeric = (shifted(1) - shifted(-1)) / (2 * h);
    EXPECT_GT(std::abs(numeric), 1e-4) << name;
    EXPECT_NEAR(analytic, numeric, 2e-2 * std::abs(numeric) + 1e-5) << name;
  }
  // Dropout is on: the loss and gradients differ from those without it.
  const GradResult off = grads(p, rows, 0.0f);
  EXPECT_NE(off.loss, g.loss);
}

void expect_same_grads(const GradResult& a, const GradResult& b, double rel, const char* what) {
  EXPECT_NEAR(a.loss, b.loss, 1e-5 * std::abs(a.loss)) << what;
  for (const auto& [name, t] : a.grads) {
    const auto& u = b.grads.at(name).data;
    double err = 0;
    for (size_t i = 0; i < u.size(); ++i) err = std::max(err, double(std::abs(t.data[i] - u[i])));
    EXPECT_LE(err, rel * max_abs(t.data) + 1e-7) << what << ": " << name;
  }
}

TEST(Dropout, SegmentsAndRecomputedLayersDrawTheWholeRowsMasks) {
  const TrainParams p = tiny_random_params(2, 32, 16, 40, 5);
  const auto rows = random_rows(2, 30, 40, 63);
  const GradResult whole = grads(p, rows, 0.2f);
  expect_same_grads(whole, grads(p, rows, 0.2f, 7), 1e-4, "segments of 7");
  expect_same_grads(whole, grads(p, rows, 0.2f, 0, true), 1e-5, "checkpointed layers");
}

// Two ranks, each with half of the rows and its place in the batch, average to the whole
// batch's gradients (the masks follow the global row, not the rank's).
TEST(Dropout, RanksWithTheirRowOffsetsAverageToTheWholeBatch) {
  const TrainParams p = tiny_random_params(2, 32, 16, 40, 5);
  const auto rows = random_rows(4, 12, 40, 64);
  const GradResult whole = grads(p, rows, 0.25f);
  const std::vector<std::vector<int32_t>> first(rows.begin(), rows.begin() + 2),
      second(rows.begin() + 2, rows.end());
  const GradResult a = grads(p, first, 0.25f, 0, false, 0);
  GradResult avg = grads(p, second, 0.25f, 0, false, 2);
  avg.loss = 0.5 * (avg.loss + a.loss);
  for (auto& [name, t] : avg.grads)
    for (size_t i = 0; i < t.data.size(); ++i)
      t.data[i] = 0.5f * (t.data[i] + a.grads.at(name).data[i]);
  expect_same_grads(whole, avg, 1e-5, "two ranks");
  // Without the offset the second half would draw the first half's masks: not the same.
  const GradResult wrong = grads(p, second, 0.25f, 0, false, 0);
  const GradResult right = grads(p, second, 0.25f, 0, false, 2);
  EXPECT_NE(wrong.loss, right.loss);
}

TEST(Dropout, OutOfRangeProbabilityIsRefused) {
  const TrainParams p = tiny_random_params(1, 32, 16, 40, 5);
  const auto rows = random_rows(1, 5, 40, 65);
  EXPECT_THROW(grads(p, rows, 1.0f), Error);
  EXPECT_THROW(grads(p, rows, -0.1f), Error);
}

}  // namespace
}  // namespace rwkv7::train
