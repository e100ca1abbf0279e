// The learned state projection's training math: soft targets in the model's loss (equal to
// the hard targets for one-hot distributions, also in segments), the initial-state gradient
// under soft targets against finite differences, the projection's chain rule against finite
// differences, and a short fit on the shipped model that lowers the KL it starts from.
#include "rwkv7/state_learn.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include "io/tensor_io.hpp"
#include "model/backward.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/tokenizer.hpp"
#include "test_support.hpp"
#include "tiny_params.hpp"
#include "train/state_learn_internal.hpp"
#include "train/state_tuning.hpp"

namespace rwkv7::train {
namespace {

using testing::noisy_states;
using testing::random_rows;
using testing::tiny_random_params;

// Random peaked distributions [B, T-1, V] (softmax of 3·N(0, 1) logits; each row sums to 1).
std::vector<float> random_distributions(int64_t positions, int64_t V, uint64_t seed) {
  std::mt19937 rng{uint32_t(seed)};
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> p(size_t(positions * V));
  for (int64_t r = 0; r < positions; ++r) {
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += p[size_t(r * V + v)] = std::exp(nd(rng));
    for (int64_t v = 0; v < V; ++v) p[size_t(r * V + v)] = float(p[size_t(r * V + v)] / sum);
  }
  return p;
}

TEST(StateLearn, OneHotSoftTargetsEqualTheNextTokensAlsoInSegments) {
  const TrainParams p = tiny_random_params(2, 32, 16, 40, 5);
  const int64_t V = p.config.vocab_size;
  const auto rows = random_rows(2, 21, V, 31);
  std::vector<float> one_hot(size_t(2 * 20 * V), 0.0f);
  for (size_t b = 0; b < rows.size(); ++b)
    for (size_t t = 0; t + 1 < rows[b].size(); ++t)
      one_hot[(b * 20 + t) * size_t(V) + size_t(rows[b][t + 1])] = 1.0f;
  auto be = make_reference_backend();
  const GradResult hard = loss_and_gradients(p, rows, *be);
  for (int64_t segment : {0, 7}) {
    GradOptions o;
    o.soft_targets = &one_hot;
    o.segment = segment;
    const GradResult soft = loss_and_gradients(p, rows, *be, nullptr, o);
    EXPECT_NEAR(soft.loss, hard.loss, 1e-5 * hard.loss) << "segment " << segment;
    for (const auto& [name, g] : hard.grads) {
      const auto& s = soft.grads.at(name).data;
      double mx = 0, err = 0;
      for (size_t i = 0; i < g.data.size(); ++i) {
        mx = std::max(mx, double(std::abs(g.data[i])));
        err = std::max(err, double(std::abs(g.data[i] - s[i])));
      }
      EXPECT_LE(err, 1e-4 * mx + 1e-7) << name << ", segment " << segment;
    }
  }
}

TEST(StateLearn, SoftTargetsOfTheWrongSizeAreRefused) {
  const TrainParams p = tiny_random_params(1, 32, 16, 40, 5);
  const auto rows = random_rows(2, 9, 40, 1);
  std::vector<float> short_probs(10, 0.0f);
  GradOptions o;
  o.soft_targets = &short_probs;
  auto be = make_reference_backend();
  EXPECT_THROW(loss_and_gradients(p, rows, *be, nullptr, o), Error);
}

// The gradient the fit uses: d (soft-target loss) / d initial WKV, along a random direction,
// against a central finite difference of the loss.
TEST(StateLearn, SoftTargetStateGradientMatchesFiniteDifferences) {
  const TrainParams p = tiny_random_params(2, 32, 16, 40, 5);
  const int64_t V = p.config.vocab_size;
  const auto rows = random_rows(2, 17, V, 41);
  const std::vector<float> probs = random_distributions(2 * 16, V, 42);
  const std::vector<State> starts = noisy_states(p.config, 2, 43);
  auto be = make_reference_backend();
  auto loss = [&](const std::vector<State>& s, std::vector<State>* d) {
    GradOptions o;
    o.soft_targets = &probs;
    o.initial_states = &s;
    o.initial_state_grads = d;
    return loss_and_gradients(p, rows, *be, nullptr, o).loss;
  };
  std::vector<State> grads;
  loss(starts, &grads);
  std::mt19937 rng{44};
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<State> dir = starts;
  double analytic = 0;
  for (size_t b = 0; b < dir.size(); ++b)
    for (size_t i = 0; i < dir[b].wkv.size(); ++i) {
      dir[b].wkv[i] = nd(rng);
      analytic += double(dir[b].wkv[i]) * grads[b].wkv[i];
    }
  const double h = 1e-2;
  auto shifted = [&](double sign) {
    std::vector<State> s = starts;
    for (size_t b = 0; b < s.size(); ++b)
      for (size_t i = 0; i < s[b].wkv.size(); ++i) s[b].wkv[i] += float(sign * h) * dir[b].wkv[i];
    return loss(s, nullptr);
  };
  const double numeric = (shifted(1) - shifted(-1)) / (2 * h);
  EXPECT_GT(std::abs(numeric), 1e-4);
  EXPECT_NEAR(analytic, numeric, 2e-2 * std::abs(numeric) + 1e-5);
}

// The chain rule of S' = D·(E·S) (and of the key side) against finite differences in double
// precision, with the loss Σ W ⊙ S' for a fixed random W (so d loss / d S' = W).
TEST(StateLearn, ProjectionGradientsMatchFiniteDifferences) {
  for (bool key_side : {false, true}) {
    StateProjection p;
    p.n_layer = 2, p.n_head = 2, p.head_size = 5, p.rank = 3, p.key_side = key_side;
    std::mt19937 rng{7};
    p.encoder = testing::randn(size_t(2 * 2 * 3 * 5), rng);
    p.decoder = testing::randn(size_t(2 * 2 * 5 * 3), rng);
    State s;
    s.n_layer = 2, s.n_embd = 10, s.n_head = 2, s.head_size = 5;
    s.att_shift.assign(20, 0.0f);
    s.ffn_shift.assign(20, 0.0f);
    s.wkv = testing::randn(size_t(2 * 2 * 5 * 5), rng);
    const std::vector<float> W = testing::randn(s.wkv.size(), rng);
    auto loss = [&](const StateProjection& q) {
      const State out = project_state(s, q);
      double l = 0;
      for (size_t i = 0; i < W.size(); ++i) l += double(W[i]) * out.wkv[i];
      return l;
    };
    std::vector<double> gE(p.encoder.size(), 0.0), gD(p.decoder.size(), 0.0);
    add_projection_grads(p, s.wkv, W, gE, gD);
    for (auto [values, grads] :
         {std::pair{&StateProjection::encoder, &gE}, std::pair{&StateProjection::decoder, &gD}}) {
      for (size_t i = 0; i < (p.*values).size(); i += 7) {
        const float h = 1e-2f;
        StateProjection plus = p, minus = p;
        (plus.*values)[i] += h;
        (minus.*values)[i] -= h;
        const double numeric = (loss(plus) - loss(minus)) / (2 * double(h));
        EXPECT_NEAR((*grads)[i], numeric, 1e-3 * (1 + std::abs(numeric)))
            << (values == &StateProjection::encoder ? "encoder" : "decoder") << " " << i
            << (key_side ? " (key side)" : "");
      }
    }
  }
}

// A short fit on the shipped Shakespeare model lowers the KL of its starting point (the
// principal subspace) on the sampled states, and the projection it writes loads and compresses.
TEST(StateLearn, FitLowersTheKlOfThePrincipalSubspace) {
  RWKV7_REQUIRE_SHARED(text_path, "data/tinyshakespeare.txt");
  const std::string model = std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";
  std::ifstream in(text_path, std::ios::binary);
  std::string text(20000, '\0');
  in.read(text.data(), std::streamsize(text.size()));
  std::vector<int32_t> ids;
  for (unsigned char ch : text) ids.push_back(int32_t(ch));  // a byte-level model
  ProjectionFitOptions o;
  o.rank = 4;
  o.samples = 12;
  o.min_prefix = 64, o.max_prefix = 512;
  o.continue_tokens = 32;
  o.steps = 24;
  o.batch = 4;
  o.lr = 3e-3;
  o.threads = 2;
  ProjectionFitReport r;
  const StateProjection p = fit_state_projection(model, ids, o, &r);
  std::printf("KL on the samples: principal subspace %.5f, after %lld steps %.5f\n", r.kl_start,
              (long long)o.steps, r.kl_end);
  EXPECT_GT(r.kl_start, 0);
  EXPECT_LT(r.kl_end, r.kl_start);
  EXPECT_EQ(r.step_kl.size(), size_t(o.steps));
  EXPECT_EQ(p.rank, 4);
  EXPECT_EQ(p.n_layer, 4);
  EXPECT_FALSE(p.model_fingerprint.empty());
}

}  // namespace
}  // namespace rwkv7::train
