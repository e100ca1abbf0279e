#include "rwkv7/sampler.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "rwkv7/context.hpp"
#include "rwkv7/error.hpp"

namespace {

using rwkv7::Error;
using rwkv7::Sampler;
using rwkv7::SamplerOptions;

std::vector<float> random_logits(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

TEST(SamplerGreedy, TemperatureZeroPicksArgMax) {
  SamplerOptions o;
  o.temperature = 0.0f;
  Sampler s(o);
  for (unsigned seed = 0; seed < 20; ++seed) {
    auto logits = random_logits(65536, seed);
    EXPECT_EQ(s.sample(logits), argmax(logits));
  }
  std::vector<float> tie = {1.0f, 5.0f, 2.0f, 5.0f};
  EXPECT_EQ(s.sample(tie), 1);  // lowest id on ties
}

TEST(SamplerGreedy, TopK1AndTinyTopPEqualGreedy) {
  for (unsigned seed = 0; seed < 20; ++seed) {
    auto logits = random_logits(5000, seed + 100);
    SamplerOptions k1;
    k1.top_k = 1;
    k1.seed = seed;
    Sampler sk(k1);
    SamplerOptions p0;
    p0.top_p = 1e-6f;
    p0.seed = seed;
    Sampler sp(p0);
    SamplerOptions p0t = p0;
    p0t.temperature = 3.0f;
    Sampler spt(p0t);
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(sk.sample(logits), argmax(logits));
      EXPECT_EQ(sp.sample(logits), argmax(logits));
      EXPECT_EQ(spt.sample(logits), argmax(logits));
    }
  }
  SamplerOptions zero;
  zero.top_p = 0.0f;  // still keeps one token
  Sampler s0(zero);
  std::vector<float> l = {0.0f, 1.0f, 3.0f, 2.0f};
  EXPECT_EQ(s0.sample(l), 2);
}

TEST(SamplerFilter, TopKAndTopPKeepOnlyTheMostProbable) {
  // probs ~ softmax(log([0.5, 0.3, 0.15, 0.05]))
  std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplerOptions k2;
  k2.top_k = 2;
  k2.seed = 1;
  Sampler sk(k2);
  SamplerOptions p;
  p.top_p = 0.7f;  // 0.5 < 0.7 <= 0.8: keeps ids 0 and 1
  p.seed = 2;
  Sampler sp(p);
  std::vector<int> seen_k(4, 0), seen_p(4, 0);
  for (int i = 0; i < 2000; ++i) {
    ++seen_k[sk.sample(l)];
    ++seen_p[sp.sample(l)];
  }
  EXPECT_GT(seen_k[0], 0);
  EXPECT_GT(seen_k[1], 0);
  EXPECT_EQ(seen_k[2] + seen_k[3], 0);
  EXPECT_GT(seen_p[0], 0);
  EXPECT_GT(seen_p[1], 0);
  EXPECT_EQ(seen_p[2] + seen_p[3], 0);
  // Renormalised 0.5 : 0.3 -> 0.625 of the draws are id 0 (loose bound).
  EXPECT_NEAR(seen_p[0] / 2000.0, 0.625, 0.05);
}

TEST(SamplerFilter, TopPOnLargeVocabularyKeepsTheRightSet) {
  // 1000 tokens: one dominant (prob ~0.9) and many small. top_p = 0.95 must keep the dominant
  // one and some of the others, never the least probable ones.
  std::vector<float> l(1000);
  for (size_t i = 0; i < l.size(); ++i) l[i] = -0.01f * static_cast<float>(i);
  l[500] = 10.0f;
  SamplerOptions o;
  o.top_p = 0.95f;
  o.seed = 3;
  Sampler s(o);
  // Probabilities of the kept set (sorted): compute the expected cut by hand.
  std::vector<double> p(l.size());
  double z = 0;
  for (size_t i = 0; i < l.size(); ++i) z += (p[i] = std::exp(static_cast<double>(l[i]) - 10.0));
  double cum = p[500] / z;
  size_t kept_small = 0;  // small ones are in id order 0,1,2,... (decreasing prob)
  while (cum < 0.95) cum += p[kept_small++] / z;
  for (int i = 0; i < 3000; ++i) {
    int32_t t = s.sample(l);
    EXPECT_TRUE(t == 500 || static_cast<size_t>(t) < kept_small) << t << " kept " << kept_small;
  }
}

TEST(SamplerPenalty, ChangesArgMaxAsComputedByHand) {
  SamplerOptions o;
  o.temperature = 0.0f;
  o.presence_penalty = 0.5f;
  o.frequency_penalty = 0.25f;
  o.penalty_decay = 0.5f;
  Sampler s(o);
  std::vector<float> l = {2.0f, 1.6f, 1.0f};
  EXPECT_EQ(s.sample(l), 0);
  s.accept(0);  // counts {0: 1}  -> logit0 = 2 - (0.5 + 0.25) = 1.25 < 1.6
  EXPECT_EQ(s.sample(l), 1);
  s.accept(1);  // counts {0: 0.5, 1: 1} -> l0 = 2 - 0.625 = 1.375, l1 = 1.6 - 0.75 = 0.85
  EXPECT_EQ(s.sample(l), 0);
  s.accept(2);  // counts {0: 0.25, 1: 0.5, 2: 1} -> l0 = 1.4375, l1 = 0.975, l2 = 0.25
  EXPECT_EQ(s.sample(l), 0);
  s.accept(0);  // counts {0: 1.125, 1: 0.25, 2: 0.5} -> l0 = 2 - 0.78125 = 1.21875, l1 = 1.6 -
                // 0.5625 = 1.0375
  EXPECT_EQ(s.sample(l), 0);
  std::vector<float> l2 = {2.0f, 1.25f, 1.0f};  // l1 = 1.25 - 0.5625 = 0.6875 ; l0 = 1.21875
  EXPECT_EQ(s.sample(l2), 0);
  std::vector<float> l3 = {2.0f, 1.8f, 1.0f};  // l1 = 1.8 - 0.5625 = 1.2375 > 1.21875
  EXPECT_EQ(s.sample(l3), 1);
  s.reset();
  EXPECT_EQ(s.sample(l3), 0);
  // Tokens past the end of the logits are ignored by the penalty.
  s.accept(99);
  EXPECT_EQ(s.sample(l3), 0);
}

TEST(SamplerPenalty, OccurrenceCountsDecay) {
  // Default decay 0.996: after accept(7) then n other tokens, count[7] = 0.996^n, so the
  // frequency penalty on 7 shrinks exactly like that. Probe with a two-token race.
  SamplerOptions o;
  o.temperature = 0.0f;
  o.frequency_penalty = 1.0f;
  Sampler s(o);
  s.accept(0);
  for (int i = 0; i < 100; ++i) s.accept(5);
  const double count = std::pow(0.996, 100);  // ~0.6698
  const float margin = 0.002f;
  std::vector<float> just_above = {static_cast<float>(count) + margin, 0.0f};
  std::vector<float> just_below = {static_cast<float>(count) - margin, 0.0f};
  EXPECT_EQ(s.sample(just_above), 0);
  EXPECT_EQ(s.sample(just_below), 1);
}

TEST(SamplerRandom, SameSeedSameSequence) {
  auto logits = random_logits(65536, 9);
  for (float t : {1.0f, 0.7f}) {
    SamplerOptions o;
    o.temperature = t;
    o.top_p = 0.9f;
    o.top_k = 100;
    o.seed = 42;
    Sampler a(o), b(o);
    o.seed = 43;
    Sampler c(o);
    std::vector<int32_t> sa, sb, sc;
    for (int i = 0; i < 200; ++i) {
      sa.push_back(a.sample(logits));
      sb.push_back(b.sample(logits));
      sc.push_back(c.sample(logits));
    }
    EXPECT_EQ(sa, sb);
    EXPECT_NE(sa, sc);
  }
}

TEST(SamplerRandom, ChiSquareMatchesDistribution) {
  const std::vector<double> p = {0.4, 0.25, 0.2, 0.1, 0.05};
  std::vector<float> l;
  for (double x : p) l.push_back(static_cast<float>(std::log(x) + 3.0));  // shift is irrelevant
  SamplerOptions o;
  o.seed = 2024;
  Sampler s(o);
  const int n = 50000;
  std::vector<int> counts(p.size(), 0);
  for (int i = 0; i < n; ++i) ++counts[s.sample(l)];
  double chi2 = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double e = n * p[i];
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
  }
  // 4 degrees of freedom: P(chi2 > 18.47) = 0.001.
  EXPECT_LT(chi2, 18.47) << "counts " << counts[0] << " " << counts[1] << " " << counts[2];
}

TEST(SamplerRandom, TemperatureSharpensAsPowerOfProbs) {
  // T = 0.5: p ** 2 renormalised -> {0.64, 0.16, 0.16, 0.04} / 1.0 from {0.8,0.4,0.4,0.2}/1.8
  const std::vector<double> p = {0.8 / 1.8, 0.4 / 1.8, 0.4 / 1.8, 0.2 / 1.8};
  std::vector<float> l;
  for (double x : p) l.push_back(static_cast<float>(std::log(x)));
  SamplerOptions o;
  o.temperature = 0.5f;
  o.seed = 5;
  Sampler s(o);
  std::vector<double> q = {0.64, 0.16, 0.16, 0.04};
  const int n = 40000;
  std::vector<int> counts(4, 0);
  for (int i = 0; i < n; ++i) ++counts[s.sample(l)];
  double chi2 = 0;
  for (size_t i = 0; i < 4; ++i)
    chi2 += (counts[i] - n * q[i]) * (counts[i] - n * q[i]) / (n * q[i]);
  EXPECT_LT(chi2, 16.27);  // 3 dof, p = 0.001
  // Very small temperature must not underflow into garbage: behaves like greedy.
  o.temperature = 1e-4f;
  Sampler cold(o);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(cold.sample(l), 0);
}

TEST(SamplerErrors, NonFiniteAndEmptyLogits) {
  Sampler s(SamplerOptions{});
  std::vector<float> empty;
  EXPECT_THROW(s.sample(empty), Error);
  std::vector<float> nan = {0.0f, std::numeric_limits<float>::quiet_NaN(), 1.0f};
  try {
    s.sample(nan);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("logits[1] is NaN"), std::string::npos) << e.what();
  }
  std::vector<float> inf = {0.0f, 1.0f, std::numeric_limits<float>::infinity()};
  try {
    s.sample(inf);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("logits[2] is infinite"), std::string::npos) << e.what();
  }
  SamplerOptions g;
  g.temperature = 0.0f;
  Sampler sg(g);
  EXPECT_THROW(sg.sample(nan), Error);
  std::vector<float> ninf = {-std::numeric_limits<float>::infinity(), 0.0f};
  EXPECT_THROW(sg.sample(ninf), Error);
}

TEST(SamplerErrors, BadOptions) {
  SamplerOptions o;
  o.temperature = -1.0f;
  EXPECT_THROW(Sampler{o}, Error);
  o = {};
  o.top_p = 1.5f;
  EXPECT_THROW(Sampler{o}, Error);
  o = {};
  o.top_k = -2;
  EXPECT_THROW(Sampler{o}, Error);
  o = {};
  o.temperature = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(Sampler{o}, Error);
  Sampler ok(SamplerOptions{});
  EXPECT_THROW(ok.accept(-1), Error);
}

TEST(SamplerRandom, SingleTokenAndKLargerThanV) {
  SamplerOptions o;
  o.top_k = 50;
  Sampler s(o);
  std::vector<float> one = {3.0f};
  EXPECT_EQ(s.sample(one), 0);
  std::vector<float> three = {0.0f, 0.0f, 0.0f};
  for (int i = 0; i < 50; ++i) {
    int32_t t = s.sample(three);
    EXPECT_GE(t, 0);
    EXPECT_LT(t, 3);
  }
}

}  // namespace

namespace {

// Brute force: sort everything, keep the shorter of the top-k and top-p prefixes.
std::set<int32_t> reference_kept(const std::vector<float>& l, int top_k, float top_p) {
  std::vector<double> p(l.size());
  const double m = *std::max_element(l.begin(), l.end());
  double z = 0;
  for (size_t i = 0; i < l.size(); ++i) z += (p[i] = std::exp(static_cast<double>(l[i]) - m));
  std::vector<int32_t> order(l.size());
  for (size_t i = 0; i < l.size(); ++i) order[i] = static_cast<int32_t>(i);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  std::set<int32_t> kept;
  double cum = 0;
  for (int32_t id : order) {
    if (top_k > 0 && static_cast<int>(kept.size()) >= top_k) break;
    if (!kept.empty() && cum >= top_p) break;
    kept.insert(id);
    cum += p[id] / z;
  }
  return kept;
}

TEST(SamplerFilter, MatchesBruteForceKeptSet) {
  for (unsigned seed = 0; seed < 6; ++seed) {
    const auto l = random_logits(3000, 500 + seed);
    for (auto [k, p] : {std::pair{20, 1.0f}, {0, 0.3f}, {25, 0.6f}, {8, 0.05f}}) {
      const auto ref = reference_kept(l, k, p);
      SamplerOptions o;
      o.top_k = k;
      o.top_p = p;
      o.temperature = 8.0f;  // flattens the kept set so every member is drawn
      o.seed = seed;
      Sampler s(o);
      std::set<int32_t> seen;
      for (int i = 0; i < 4000; ++i) seen.insert(s.sample(l));
      if (ref.size() <= 40) {
        EXPECT_EQ(seen, ref) << "k=" << k << " p=" << p;
      } else {
        for (int32_t t : seen) EXPECT_TRUE(ref.count(t)) << t << " k=" << k << " p=" << p;
      }
    }
  }
}

}  // namespace

namespace {

// sample_many on T threads equals each sampler's own sample() in turn, seeds and penalties
// included; a bad row is named by its sequence and size mismatches are refused.
TEST(SampleMany, EqualsOneSamplerAfterAnotherOnAnyThreadCount) {
  constexpr size_t kSeqs = 9, kVocab = 2048, kSteps = 6;
  std::vector<std::vector<float>> logits;
  for (size_t i = 0; i < kSeqs; ++i) logits.push_back(random_logits(kVocab, unsigned(100 + i)));
  auto options = [](size_t i) {
    SamplerOptions o;
    o.temperature = i % 3 == 0 ? 0.0f : 0.7f + 0.1f * float(i);
    o.top_p = i % 2 ? 0.9f : 1.0f;
    o.top_k = i % 4 == 1 ? 40 : 0;
    o.presence_penalty = 0.3f;
    o.frequency_penalty = 0.2f;
    o.seed = 1000 + i;
    return o;
  };
  std::vector<Sampler> alone;
  for (size_t i = 0; i < kSeqs; ++i) alone.emplace_back(options(i));
  std::vector<std::vector<int32_t>> want(kSeqs);
  for (size_t step = 0; step < kSteps; ++step)
    for (size_t i = 0; i < kSeqs; ++i) {
      want[i].push_back(alone[i].sample(logits[i]));
      alone[i].accept(want[i].back());
    }
  for (int threads : {1, 2, 3}) {
    rwkv7::Context ctx(threads);
    std::vector<Sampler> many;
    for (size_t i = 0; i < kSeqs; ++i) many.emplace_back(options(i));
    std::vector<Sampler*> list;
    std::vector<std::span<const float>> rows;
    for (size_t i = 0; i < kSeqs; ++i) {
      list.push_back(&many[i]);
      rows.emplace_back(logits[i]);
    }
    for (size_t step = 0; step < kSteps; ++step) {
      const std::vector<int32_t> got = rwkv7::sample_many(ctx, list, rows);
      ASSERT_EQ(got.size(), kSeqs);
      for (size_t i = 0; i < kSeqs; ++i) {
        ASSERT_EQ(got[i], want[i][step]) << "threads " << threads << " seq " << i;
        many[i].accept(got[i]);
      }
    }
  }
}

TEST(SampleMany, NamesTheRowWithBadLogitsAndRefusesMismatchedOrSharedSamplers) {
  rwkv7::Context ctx(2);
  Sampler a(SamplerOptions{.temperature = 0.0f}), b(SamplerOptions{.temperature = 0.0f});
  std::vector<float> good = random_logits(64, 1), bad = random_logits(64, 2);
  bad[17] = std::numeric_limits<float>::quiet_NaN();
  std::vector<Sampler*> list = {&a, &b};
  std::vector<std::span<const float>> rows = {good, bad};
  try {
    rwkv7::sample_many(ctx, list, rows);
    FAIL() << "NaN logits were sampled";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("logits[17]"), std::string::npos) << e.what();
  }
  rows.pop_back();
  EXPECT_THROW(rwkv7::sample_many(ctx, list, rows), Error);
  std::vector<Sampler*> with_null = {&a, nullptr};
  rows.push_back(good);
  EXPECT_THROW(rwkv7::sample_many(ctx, with_null, rows), Error);
  std::vector<Sampler*> shared = {&a, &a};  // one sampler's generator for two rows: a race
  EXPECT_THROW(rwkv7::sample_many(ctx, shared, rows), Error);
}

}  // namespace
