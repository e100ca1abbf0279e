// The cpu backend's SIMD WKV-7 backward against the reference backend's (the scalar recurrence
// in double), on every Highway target this CPU runs: head sizes that fill whole vectors and
// ones that leave padded lanes, checkpoint intervals that split the sequence unevenly, with and
// without an initial state and a final-state gradient, several sequences in one call.
// (The scalar recurrence itself is checked by finite differences: BackwardOps.Wkv7.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "core/thread_pool.hpp"
#include "hwy/targets.h"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

struct Sequence {
  std::vector<float> r, decay, k, v, a, b, s0, dy, ds_final;
};

// Inputs as RWKV-7 feeds them: decay in (0.55, 1), a = -kk, b = kk·rate with ‖kk‖ = 1 per head.
Sequence random_sequence(int64_t T, int64_t H, int64_t N, std::mt19937& rng) {
  const int64_t C = H * N;
  std::uniform_real_distribution<float> u01(0.55f, 1.0f);
  Sequence s;
  s.r = testing::randn(size_t(T * C), rng);
  s.k = testing::randn(size_t(T * C), rng, 0.3f);
  s.v = testing::randn(size_t(T * C), rng);
  s.dy = testing::randn(size_t(T * C), rng);
  s.s0 = testing::randn(size_t(H * N * N), rng, 0.1f);
  s.ds_final = testing::randn(size_t(H * N * N), rng, 0.1f);
  const std::vector<float> kk = testing::randn(size_t(T * C), rng);
  s.decay.resize(size_t(T * C)), s.a.resize(size_t(T * C)), s.b.resize(size_t(T * C));
  for (int64_t row = 0; row < T * H; ++row) {
    double norm = 0;
    for (int64_t j = 0; j < N; ++j)
      norm += double(kk[size_t(row * N + j)]) * kk[size_t(row * N + j)];
    for (int64_t j = 0; j < N; ++j) {
      const size_t i = size_t(row * N + j);
      const float unit = float(kk[i] / std::sqrt(norm));
      s.a[i] = -unit;
      s.b[i] = unit * u01(rng);
      s.decay[i] = u01(rng);
    }
  }
  return s;
}

// The gradient buffers of one sequence, pre-filled with `base` (outputs are added to).
struct Grads {
  std::vector<float> dr, ddecay, dk, dv, da, db, ds0;
  Grads(size_t n, size_t nn, float base)
      : dr(n, base),
        ddecay(n, base),
        dk(n, base),
        dv(n, base),
        da(n, base),
        db(n, base),
        ds0(nn, base) {}
};

Wkv7TrainArgs<float> args_of(const Sequence& s, Grads& g, int64_t T, int64_t H, int64_t N,
                             int64_t checkpoint, bool with_states, bool all_outputs) {
  Wkv7TrainArgs<float> p{
      T,          H,          N,          s.r.data(), s.decay.data(),
      s.k.data(), s.v.data(), s.a.data(), s.b.data(), with_states ? s.s0.data() : nullptr};
  p.dy = s.dy.data();
  p.ds_final = with_states ? s.ds_final.data() : nullptr;
  p.dr = g.dr.data(), p.ddecay = g.ddecay.data(), p.dk = g.dk.data(), p.dv = g.dv.data();
  p.da = g.da.data(), p.db = g.db.data(), p.ds0 = g.ds0.data();
  if (!all_outputs) p.dk = nullptr, p.ds0 = nullptr;  // outputs not wanted stay untouched
  p.checkpoint = checkpoint;
  return p;
}

TEST(BackendWkv7Backward, CpuEqualsReferenceOnEveryTarget) {
  struct Case {
    int64_t N, T, checkpoint;
    bool with_states, all_outputs;
  };
  const Case cases[] = {{64, 37, 8, true, true}, {64, 5, 32, false, true}, {24, 37, 4, true, false},
                        {4, 17, 1, true, true},  {40, 9, 32, true, true},  {16, 1, 3, false, true},
                        {128, 6, 4, true, true}};
  auto reference = make_reference_backend();
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(&pool);
  for (const Case& c : cases) {
    const int64_t H = 3, B = 2, n = c.T * H * c.N, nn = H * c.N * c.N;
    std::mt19937 rng{unsigned(c.N * 100 + c.T)};
    std::vector<Sequence> seqs;
    for (int64_t b = 0; b < B; ++b) seqs.push_back(random_sequence(c.T, H, c.N, rng));
    std::vector<Grads> want;
    std::vector<Wkv7TrainArgs<float>> list;
    for (int64_t b = 0; b < B; ++b) want.emplace_back(size_t(n), size_t(nn), 0.5f);
    for (int64_t b = 0; b < B; ++b)
      list.push_back(args_of(seqs[size_t(b)], want[size_t(b)], c.T, H, c.N, c.checkpoint,
                             c.with_states, c.all_outputs));
    reference->wkv7_backward(list);
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      std::vector<Grads> got;
      for (int64_t b = 0; b < B; ++b) got.emplace_back(size_t(n), size_t(nn), 0.5f);
      list.clear();
      for (int64_t b = 0; b < B; ++b)
        list.push_back(args_of(seqs[size_t(b)], got[size_t(b)], c.T, H, c.N, c.checkpoint,
                               c.with_states, c.all_outputs));
      cpu->wkv7_backward(list);
      const std::string what = std::string(hwy::TargetName(target)) + " N " + std::to_string(c.N) +
                               " T " + std::to_string(c.T) + " checkpoint " +
                               std::to_string(c.checkpoint);
      for (int64_t b = 0; b < B; ++b) {
        const Grads &w = want[size_t(b)], &g = got[size_t(b)];
        const std::pair<const char*,
                        std::pair<const std::vector<float>*, const std::vector<float>*>>
            outs[] = {{"dr", {&w.dr, &g.dr}},   {"ddecay", {&w.ddecay, &g.ddecay}},
                      {"dk", {&w.dk, &g.dk}},   {"dv", {&w.dv, &g.dv}},
                      {"da", {&w.da, &g.da}},   {"db", {&w.db, &g.db}},
                      {"ds0", {&w.ds0, &g.ds0}}};
        for (const auto& [name, pair] : outs) {
          const std::vector<float>&ref = *pair.first, &fast = *pair.second;
          for (size_t i = 0; i < ref.size(); ++i) {
            // fp32 sums of N-term products over up to T steps vs the double oracle.
            ASSERT_NEAR(fast[i], ref[i], 2e-4 * std::max(1.0f, std::fabs(ref[i])))
                << what << " row " << b << " " << name << "[" << i << "]";
          }
        }
        if (!c.all_outputs) {  // not wanted: left as they were
          EXPECT_TRUE(std::all_of(g.dk.begin(), g.dk.end(), [](float x) { return x == 0.5f; }));
          EXPECT_TRUE(std::all_of(g.ds0.begin(), g.ds0.end(), [](float x) { return x == 0.5f; }));
        }
      }
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

}  // namespace
}  // namespace rwkv7
