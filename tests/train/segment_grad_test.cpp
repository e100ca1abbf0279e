// Segment training (GradOptions::segment): the gradients of a row run in segments with the
// state carried, recomputed segment by segment in the backward with the state's gradient passed
// back, equal the one-shot gradients of the whole row (SPEC §7 tolerance); truncated BPTT equals
// the sum of per-segment gradients from detached input states; per-layer checkpointing equals
// no checkpointing.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/thread_pool.hpp"
#include "model/backward.hpp"
#include "rwkv7/error.hpp"
#include "tiny_params.hpp"

namespace rwkv7::train {
namespace {

using testing::random_rows;
using testing::tiny_random_params;
using testing::worst_relative_difference;

constexpr double kSpecTolerance = 1e-3;  // SPEC §7: |Δgrad| <= 1e-3 · max |grad| per tensor

GradResult gradients(const TrainParams& p, const std::vector<std::vector<int32_t>>& rows,
                     const GradOptions& opts, ThreadPool* pool) {
  auto be = make_cpu_backend(pool);
  return loss_and_gradients(p, rows, *be, pool, opts);
}

void expect_segments_match_one_shot(int64_t T, std::vector<int64_t> segments, int64_t batch) {
  const TrainParams p = tiny_random_params(2, 32, 16, 40, 3);
  const auto rows = random_rows(batch, T + 1, 40, uint64_t(T));
  ThreadPool pool(2);
  const GradResult whole = gradients(p, rows, {}, &pool);
  for (int64_t S : segments) {
    GradOptions o;
    o.segment = S;
    const GradResult seg = gradients(p, rows, o, &pool);
    std::string where;
    const double rel = worst_relative_difference(whole.grads, seg.grads, &where);
    EXPECT_LE(rel, kSpecTolerance) << "T=" << T << " segment " << S << ", worst at " << where;
    EXPECT_NEAR(seg.loss, whole.loss, 1e-5 * std::abs(whole.loss)) << "segment " << S;
    EXPECT_EQ(seg.positions, whole.positions);
    std::printf("T=%lld segment %lld: worst gradient difference %.3g of max |grad| (%s)\n",
                (long long)T, (long long)S, rel, where.c_str());
  }
}

TEST(SegmentGrad, EqualsOneShotShort) { expect_segments_match_one_shot(300, {64, 100, 299}, 2); }
// L2Wrap's term is scaled by the whole rows' positions in every segment. It is small, so this
// compares more tightly than the SPEC tolerance, and checks that a wrong scale would show.
TEST(SegmentGrad, EqualsOneShotWithL2Wrap) {
  const TrainParams p = tiny_random_params(2, 32, 16, 40, 3);
  const auto rows = random_rows(2, 121, 40, 120);
  ThreadPool pool(2);
  GradOptions plain, wrap, seg;
  wrap.l2wrap = seg.l2wrap = true;
  seg.segment = 50;
  const GradResult a = gradients(p, rows, plain, &pool), b = gradients(p, rows, wrap, &pool),
                   c = gradients(p, rows, seg, &pool);
  const double term = worst_relative_difference(b.grads, a.grads);
  const double err = worst_relative_difference(b.grads, c.grads);
  std::printf("L2Wrap changes the gradients by %.3g; segments differ by %.3g\n", term, err);
  EXPECT_GT(term, 20 * err);  // a segment-sized scale (2.4x the term) would be caught
  EXPECT_LE(err, 1e-5);
}

// The check (slow_tests.cmake): a 4096-position row, segments of 256 and of 1000 (the
// last one 96 long).
TEST(SegmentGrad, EqualsOneShotAt4096) { expect_segments_match_one_shot(4096, {256, 1000}, 1); }

// The state-gradient path can fail without showing in a model whose later positions hardly
// depend on the earlier ones: the segmented gradient must differ from the truncated one by far
// more than the tolerance (so the test above checks the carried gradient, not noise).
TEST(SegmentGrad, CarriedStateGradientMatters) {
  const TrainParams p = tiny_random_params(2, 32, 16, 40, 3);
  const auto rows = random_rows(1, 201, 40, 11);
  ThreadPool pool(2);
  GradOptions carried, truncated;
  carried.segment = truncated.segment = 50;
  truncated.truncate_bptt = true;
  const GradResult a = gradients(p, rows, carried, &pool), b = gradients(p, rows, truncated, &pool);
  EXPECT_NEAR(a.loss, b.loss, 1e-6 * std::abs(a.loss));  // the forward is the same
  EXPECT_GT(worst_relative_difference(a.grads, b.grads), 10 * kSpecTolerance);
  // The state gradient's norm at each of the 4 segment starts (the first is detached).
  ASSERT_EQ(a.state_grad_norms.size(), 4u);
  EXPECT_EQ(a.state_grad_norms[0], 0.0);
  for (size_t k = 1; k < 4; ++k) EXPECT_GT(a.state_grad_norms[k], 0.0) << k;
  EXPECT_TRUE(b.state_grad_norms.empty());
}

// Truncated BPTT = Σ over segments of the gradient of that segment alone, started from the
// (detached) state where the previous segment ended, weighted by its share of the positions.
TEST(SegmentGrad, TruncatedEqualsSumOfDetachedSegments) {
  const int64_t T = 130, S = 50, B = 2;
  const TrainParams p = tiny_random_params(2, 32, 16, 40, 5);
  const auto rows = random_rows(B, T + 1, 40, 7);
  ThreadPool pool(2);
  GradOptions trunc;
  trunc.segment = S;
  trunc.truncate_bptt = true;
  const GradResult got = gradients(p, rows, trunc, &pool);

  Gradients sum;
  double loss = 0;
  for (int64_t t0 = 0; t0 < T; t0 += S) {
    const int64_t t1 = std::min(T, t0 + S);
    std::vector<State> start;
    if (t0 > 0) {  // the state after inputs [0, t0): a one-shot pass over the prefix
      std::vector<std::vector<int32_t>> prefix;
      for (const auto& r : rows) prefix.emplace_back(r.begin(), r.begin() + t0 + 1);
      GradOptions o;
      o.final_states = &start;
      gradients(p, prefix, o, &pool);
    }
    std::vector<std::vector<int32_t>> part;
    for (const auto& r : rows) part.emplace_back(r.begin() + t0, r.begin() + t1 + 1);
    GradOptions o;
    if (t0 > 0) o.initial_states = &start;
    const GradResult g = gradients(p, part, o, &pool);
    const double share = double(t1 - t0) / double(T);
    loss += g.loss * share;
    for (const auto& [name, t] : g.grads) {
      auto [it, fresh] = sum.try_emplace(name, FloatTensor(t.shape));
      for (size_t i = 0; i < t.data.size(); ++i) it->second.data[i] += float(share * t.data[i]);
    }
  }
  std::string where;
  EXPECT_LE(worst_relative_difference(sum, got.grads, &where), kSpecTolerance) << where;
  EXPECT_NEAR(got.loss, loss, 1e-5 * std::abs(loss));
}

// Starting from given states: the final states of a one-shot pass over the whole row equal
// those of a pass over its second half started from the first half's final states.
TEST(SegmentGrad, FinalStatesChainThroughInitialStates) {
  const TrainParams p = tiny_random_params(2, 32, 16, 40, 9);
  const auto rows = random_rows(2, 61, 40, 13);
  ThreadPool pool(2);
  std::vector<State> whole_end, half_end, chained_end;
  GradOptions o;
  o.final_states = &whole_end;
  gradients(p, rows, o, &pool);
  std::vector<std::vector<int32_t>> first, second;
  for (const auto& r : rows) {
    first.emplace_back(r.begin(), r.begin() + 31);
    second.emplace_back(r.begin() + 30, r.end());
  }
  o.final_states = &half_end;
  gradients(p, first, o, &pool);
  o.final_states = &chained_end;
  o.initial_states = &half_end;
  gradients(p, second, o, &pool);
  ASSERT_EQ(whole_end.size(), 2u);
  ASSERT_EQ(chained_end.size(), 2u);
  for (size_t b = 0; b < 2; ++b) {
    const auto near = [](const std::vector<float>& x, const std::vector<float>& y) {
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (std::abs(x[i] - y[i]) > 1e-4f * (1 + std::abs(x[i]))) return false;
      return true;
    };
    EXPECT_TRUE(near(whole_end[b].wkv, chained_end[b].wkv)) << "row " << b;
    EXPECT_TRUE(near(whole_end[b].att_shift, chained_end[b].att_shift)) << "row " << b;
    EXPECT_TRUE(near(whole_end[b].ffn_shift, chained_end[b].ffn_shift)) << "row " << b;
  }
}

TEST(SegmentGrad, CheckpointLayersEqualsKeepingEverything) {
  const TrainParams p = tiny_random_params(3, 32, 16, 40, 15);
  const auto rows = random_rows(2, 97, 40, 17);
  ThreadPool pool(2);
  for (int64_t S : {0, 40}) {
    GradOptions plain, ck;
    plain.segment = ck.segment = S;
    ck.checkpoint_layers = true;
    const GradResult a = gradients(p, rows, plain, &pool), b = gradients(p, rows, ck, &pool);
    std::string where;
    EXPECT_LE(worst_relative_difference(a.grads, b.grads, &where), 1e-6)
        << "segment " << S << ", worst at " << where;
    EXPECT_NEAR(a.loss, b.loss, 1e-9 * std::abs(a.loss));
  }
}

TEST(SegmentGrad, BadOptionsAreErrors) {
  const TrainParams p = tiny_random_params(1, 32, 16, 40, 1);
  const auto rows = random_rows(2, 9, 40, 1);
  ThreadPool pool(1);
  GradOptions o;
  o.segment = -1;
  EXPECT_THROW(gradients(p, rows, o, &pool), Error);
  std::vector<State> one(1);
  GradOptions s;
  s.initial_states = &one;  // two rows
  EXPECT_THROW(gradients(p, rows, s, &pool), Error);
  std::vector<State> wrong(2);  // default states: not the model's shape
  s.initial_states = &wrong;
  EXPECT_THROW(gradients(p, rows, s, &pool), Error);
  s.segment = 3;  // checked before the first segment runs, too
  EXPECT_THROW(gradients(p, rows, s, &pool), Error);
}

}  // namespace
}  // namespace rwkv7::train
