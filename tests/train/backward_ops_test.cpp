// Each training op's backward against central finite differences in double precision, on
// small random shapes (head sizes 4-16, sequence lengths 1, 3, 17).
#include "ops/backward_ops.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/pointwise_kernels.hpp"
#include "fd_support.hpp"
#include "ops/ops.hpp"

namespace rwkv7::train {
namespace {

using testing::dot;
using testing::fd_check;
using testing::FdInput;
using testing::random_vec;
using testing::Vec;

TEST(BackwardOps, Embedding) {
  std::mt19937_64 rng(1);
  const int64_t R = 6, C = 3, V = 5;
  std::vector<int32_t> tok = {0, 3, 3, 4, 1, 3};
  Vec table = random_vec(V * C, rng), probe = random_vec(R * C, rng), y(R * C), dt(V * C, 0.0);
  auto loss = [&] {
    embedding_forward<double>({R, C, tok.data(), table.data(), y.data()});
    return dot(y, probe);
  };
  loss();
  embedding_backward<double>({R, C, tok.data(), table.data(), y.data(), probe.data(), dt.data()});
  fd_check({{"table", &table, &dt}}, loss);
}

void check_norm(int64_t groups, int64_t g, double eps) {
  std::mt19937_64 rng(2 + groups);
  const int64_t R = 3, n = groups * g;
  Vec x = random_vec(R * n, rng, -2, 3), w = random_vec(n, rng), b = random_vec(n, rng);
  Vec probe = random_vec(R * n, rng), y(R * n), stats(R * groups * 2);
  Vec dx(x.size(), 0.0), dw(n, 0.0), db(n, 0.0);
  auto loss = [&] {
    norm_forward<double>({R, n, groups, eps, x.data(), w.data(), b.data(), y.data(), stats.data()});
    return dot(y, probe);
  };
  loss();
  norm_backward<double>({R, n, groups, eps, x.data(), w.data(), b.data(), y.data(), stats.data(),
                         probe.data(), dx.data(), dw.data(), db.data()});
  fd_check({{"x", &x, &dx}, {"w", &w, &dw}, {"b", &b, &db}}, loss);
}

TEST(BackwardOps, LayerNorm) { check_norm(1, 16, 1e-5); }
TEST(BackwardOps, GroupNorm) {
  check_norm(3, 4, 64e-5);
  check_norm(2, 16, 64e-5);
}

TEST(BackwardOps, ShiftMix) {
  for (int64_t S : {1, 3, 17}) {
    for (bool with_prev : {false, true}) {
      std::mt19937_64 rng(uint64_t(S * 7 + with_prev));
      const int64_t B = 2, C = 5;
      Vec x = random_vec(B * S * C, rng), prev = random_vec(B * C, rng), mix = random_vec(C, rng);
      Vec probe = random_vec(x.size(), rng), y(x.size());
      Vec dx(x.size(), 0.0), dmix(C, 0.0), dprev(B * C, 0.0);
      const double* p0 = with_prev ? prev.data() : nullptr;
      auto loss = [&] {
        shift_mix_forward<double>({B, S, C, x.data(), p0, mix.data(), y.data()});
        return dot(y, probe);
      };
      loss();
      shift_mix_backward<double>({B, S, C, x.data(), p0, mix.data(), y.data(), probe.data(),
                                  dx.data(), dmix.data(), with_prev ? dprev.data() : nullptr});
      std::vector<FdInput> in = {{"x", &x, &dx}, {"mix", &mix, &dmix}};
      if (with_prev) in.push_back({"prev0", &prev, &dprev});
      fd_check(in, loss);
    }
  }
}

TEST(BackwardOps, Linear) {
  for (bool in_out : {false, true}) {
    std::mt19937_64 rng(in_out ? 11 : 12);
    const int64_t R = 4, I = 5, O = 3;
    Vec x = random_vec(R * I, rng), w = random_vec(I * O, rng), probe = random_vec(R * O, rng);
    Vec y(R * O), dx(x.size(), 0.0), dw(w.size(), 0.0);
    auto loss = [&] {
      linear_forward<double>({R, I, O, in_out, x.data(), w.data(), y.data()});
      return dot(y, probe);
    };
    loss();
    linear_backward<double>(
        {R, I, O, in_out, x.data(), w.data(), y.data(), probe.data(), dx.data(), dw.data()});
    fd_check({{"x", &x, &dx}, {"w", &w, &dw}}, loss);
  }
}

TEST(BackwardOps, Activations) {
  for (Act act : {Act::Tanh, Act::Sigmoid, Act::ReluSq}) {
    std::mt19937_64 rng(20 + int(act));
    const int64_t n = 12;
    Vec x = random_vec(n, rng, -2, 2), probe = random_vec(n, rng), y(n), dx(n, 0.0);
    for (double& v : x)
      if (std::abs(v) < 1e-3) v = 0.5;  // relu² is not differentiable at exactly 0
    auto loss = [&] {
      act_forward<double>({n, act, x.data(), y.data()});
      return dot(y, probe);
    };
    loss();
    act_backward<double>({n, act, x.data(), y.data(), probe.data(), dx.data()});
    fd_check({{"x", &x, &dx}}, loss);
  }
}

// The LoRA paths as the model composes them: x·A → (tanh | sigmoid | none) → ·B.
TEST(BackwardOps, LoraPaths) {
  for (int kind = 0; kind < 3; ++kind) {
    std::mt19937_64 rng(30 + uint64_t(kind));
    const int64_t R = 3, C = 6, D = 4;
    Vec x = random_vec(R * C, rng), A = random_vec(C * D, rng), Bm = random_vec(D * C, rng);
    Vec probe = random_vec(R * C, rng), low(R * D), h(R * D), y(R * C);
    auto loss = [&] {
      linear_forward<double>({R, C, D, true, x.data(), A.data(), low.data()});
      if (kind < 2) {
        act_forward<double>({R * D, kind == 0 ? Act::Tanh : Act::Sigmoid, low.data(), h.data()});
      } else {
        h = low;
      }
      linear_forward<double>({R, D, C, true, h.data(), Bm.data(), y.data()});
      return dot(y, probe);
    };
    loss();
    Vec dx(x.size(), 0.0), dA(A.size(), 0.0), dB(Bm.size(), 0.0), dh(h.size(), 0.0),
        dlow(low.size(), 0.0);
    linear_backward<double>(
        {R, D, C, true, h.data(), Bm.data(), y.data(), probe.data(), dh.data(), dB.data()});
    if (kind < 2) {
      act_backward<double>({R * D, kind == 0 ? Act::Tanh : Act::Sigmoid, low.data(), h.data(),
                            dh.data(), dlow.data()});
    } else {
      dlow = dh;
    }
    linear_backward<double>(
        {R, C, D, true, x.data(), A.data(), low.data(), dlow.data(), dx.data(), dA.data()});
    fd_check({{"x", &x, &dx}, {"A", &A, &dA}, {"B", &Bm, &dB}}, loss);
  }
}

TEST(BackwardOps, BiasSigmoidAndDecay) {
  for (auto kind : {BiasSigmoidKind::Sigmoid, BiasSigmoidKind::Decay}) {
    std::mt19937_64 rng(40 + int(kind));
    const int64_t R = 3, C = 7;
    Vec bias = random_vec(C, rng, -3, 3), z = random_vec(R * C, rng, -3, 3);
    Vec probe = random_vec(R * C, rng), y(R * C), dz(z.size(), 0.0), db(C, 0.0);
    auto loss = [&] {
      bias_sigmoid_forward<double>({R, C, kind, bias.data(), z.data(), y.data()});
      return dot(y, probe);
    };
    loss();
    if (kind == BiasSigmoidKind::Decay) {
      for (double d : y) {
        EXPECT_GT(d, std::exp(-std::exp(-0.5)));
        EXPECT_LT(d, 1.0);
      }
    }
    bias_sigmoid_backward<double>(
        {R, C, kind, bias.data(), z.data(), y.data(), probe.data(), dz.data(), db.data()});
    fd_check({{"z", &z, &dz}, {"bias", &bias, &db}}, loss);
  }
}

TEST(BackwardOps, ValueResidual) {
  std::mt19937_64 rng(50);
  const int64_t R = 4, C = 5;
  Vec v = random_vec(R * C, rng), vf = random_vec(R * C, rng), v0 = random_vec(C, rng),
      z = random_vec(R * C, rng), probe = random_vec(R * C, rng), y(R * C);
  Vec dv(v.size(), 0.0), dvf(v.size(), 0.0), dv0(C, 0.0), dz(z.size(), 0.0);
  auto loss = [&] {
    value_residual_forward<double>({R, C, v.data(), vf.data(), v0.data(), z.data(), y.data()});
    return dot(y, probe);
  };
  loss();
  value_residual_backward<double>({R, C, v.data(), vf.data(), v0.data(), z.data(), y.data(),
                                   probe.data(), dv.data(), dvf.data(), dv0.data(), dz.data()});
  fd_check({{"v", &v, &dv}, {"v_first", &vf, &dvf}, {"v0", &v0, &dv0}, {"z", &z, &dz}}, loss);
}

TEST(BackwardOps, WkvInputs) {
  for (int64_t N : {4, 16}) {
    std::mt19937_64 rng(60 + uint64_t(N));
    const int64_t R = 3, H = 2, C = H * N;
    Vec k = random_vec(R * C, rng), a = random_vec(R * C, rng, 0, 1), k_k = random_vec(C, rng),
        k_a = random_vec(C, rng);
    Vec pa = random_vec(R * C, rng), pb = random_vec(R * C, rng), pk = random_vec(R * C, rng);
    Vec wa(R * C), wb(R * C), ko(R * C);
    auto loss = [&] {
      wkv_inputs_forward<double>(
          {R, H, N, k.data(), a.data(), k_k.data(), k_a.data(), wa.data(), wb.data(), ko.data()});
      return dot(wa, pa) + dot(wb, pb) + dot(ko, pk);
    };
    loss();
    Vec dk(k.size(), 0.0), da(a.size(), 0.0), dkk(C, 0.0), dka(C, 0.0);
    wkv_inputs_backward<double>({R, H, N, k.data(), a.data(), k_k.data(), k_a.data(), wa.data(),
                                 wb.data(), ko.data(), pa.data(), pb.data(), pk.data(), dk.data(),
                                 da.data(), dkk.data(), dka.data()});
    fd_check({{"k", &k, &dk}, {"a", &a, &da}, {"k_k", &k_k, &dkk}, {"k_a", &k_a, &dka}}, loss);
  }
}

// A head whose k is all zero sits in the max(norm, 1e-12) clamp: finite values and gradients.
TEST(BackwardOps, WkvInputsClampIsFinite) {
  const int64_t R = 1, H = 1, N = 4;
  std::vector<float> k(4, 0.0f), a(4, 0.5f), k_k(4, 1.0f), k_a(4, 0.3f), wa(4), wb(4), ko(4);
  std::vector<float> d(4, 1.0f), dk(4, 0.0f), da(4, 0.0f), dkk(4, 0.0f), dka(4, 0.0f);
  wkv_inputs_forward<float>(
      {R, H, N, k.data(), a.data(), k_k.data(), k_a.data(), wa.data(), wb.data(), ko.data()});
  wkv_inputs_backward<float>({R, H, N, k.data(), a.data(), k_k.data(), k_a.data(), wa.data(),
                              wb.data(), ko.data(), d.data(), d.data(), d.data(), dk.data(),
                              da.data(), dkk.data(), dka.data()});
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(wa[size_t(j)], 0.0f);
    EXPECT_TRUE(std::isfinite(dk[size_t(j)]));
    EXPECT_TRUE(std::isfinite(da[size_t(j)]));
    EXPECT_EQ(dkk[size_t(j)], 0.0f);
  }
}

// WKV-7 in the way RWKV-7 feeds it (decay in (0.5, 1), a = -kk, b = kk·rate) and with an
// initial state and a final-state gradient; checkpoint intervals that split the sequence
// unevenly.
TEST(BackwardOps, Wkv7) {
  for (int64_t N : {4, 8, 16}) {
    for (int64_t S : {1, 3, 17}) {
      for (int64_t ck : {1, 4, 32}) {
        if (N == 16 && ck != 4) continue;  // keep the run short
        std::mt19937_64 rng(uint64_t(N * 1000 + S * 10 + ck));
        const int64_t H = 2, C = H * N, n = S * C;
        Vec r = random_vec(n, rng), w = random_vec(n, rng, 0.5, 1), k = random_vec(n, rng),
            v = random_vec(n, rng), a = random_vec(n, rng), b = random_vec(n, rng);
        for (int64_t row = 0; row < S * H; ++row) {  // a = -kk, b = kk·rate, ‖kk‖ = 1
          double s = 0;
          for (int64_t j = 0; j < N; ++j) s += a[size_t(row * N + j)] * a[size_t(row * N + j)];
          for (int64_t j = 0; j < N; ++j) {
            const double kk = a[size_t(row * N + j)] / std::sqrt(s);
            a[size_t(row * N + j)] = -kk;
            b[size_t(row * N + j)] = kk * (0.5 + 0.5 * b[size_t(row * N + j)]);
          }
        }
        Vec s0 = random_vec(H * N * N, rng), probe = random_vec(n, rng),
            ps = random_vec(H * N * N, rng), y(n), sf(H * N * N);
        auto loss = [&] {
          Wkv7TrainArgs<double> p{S,        H,        N,        r.data(), w.data(),
                                  k.data(), v.data(), a.data(), b.data(), s0.data()};
          p.y = y.data();
          p.s_final = sf.data();
          wkv7_train_forward(p);
          return dot(y, probe) + dot(sf, ps);
        };
        loss();
        Vec dr(n, 0.0), dw(n, 0.0), dk(n, 0.0), dv(n, 0.0), da(n, 0.0), db(n, 0.0),
            ds0(s0.size(), 0.0);
        Wkv7TrainArgs<double> p{S,        H,        N,        r.data(), w.data(),
                                k.data(), v.data(), a.data(), b.data(), s0.data()};
        p.dy = probe.data();
        p.ds_final = ps.data();
        p.dr = dr.data();
        p.ddecay = dw.data();
        p.dk = dk.data();
        p.dv = dv.data();
        p.da = da.data();
        p.db = db.data();
        p.ds0 = ds0.data();
        p.checkpoint = ck;
        wkv7_train_backward(p);
        SCOPED_TRACE("N=" + std::to_string(N) + " S=" + std::to_string(S) +
                     " checkpoint=" + std::to_string(ck));
        fd_check({{"r", &r, &dr},
                  {"decay", &w, &dw},
                  {"k", &k, &dk},
                  {"v", &v, &dv},
                  {"a", &a, &da},
                  {"b", &b, &db},
                  {"s0", &s0, &ds0}},
                 loss, 1e-6);
      }
    }
  }
}

// The training WKV forward (float) agrees with the reference backend's.
TEST(BackwardOps, Wkv7ForwardMatchesBackend) {
  std::mt19937_64 rng(70);
  const int64_t S = 9, H = 2, N = 8, C = H * N, n = S * C;
  auto f = [&](double lo, double hi) {
    Vec d = random_vec(size_t(n), rng, lo, hi);
    return std::vector<float>(d.begin(), d.end());
  };
  std::vector<float> r = f(-1, 1), w = f(0.5, 1), k = f(-1, 1), v = f(-1, 1), a = f(-0.3, 0.3),
                     b = f(-0.3, 0.3), y1(n), y2(n), s1(H * N * N, 0.0f), s2(H * N * N);
  make_reference_backend()->wkv7(Wkv7Args{S, H, N, r.data(), w.data(), k.data(), v.data(), a.data(),
                                          b.data(), s1.data(), y1.data()});
  Wkv7TrainArgs<float> p{S,        H,        N,        r.data(), w.data(),
                         k.data(), v.data(), a.data(), b.data(), nullptr};
  p.y = y2.data();
  p.s_final = s2.data();
  wkv7_train_forward(p);
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(y1[size_t(i)], y2[size_t(i)], 1e-5);
  for (size_t i = 0; i < s1.size(); ++i) EXPECT_NEAR(s1[i], s2[i], 1e-5);
}

TEST(BackwardOps, Bonus) {
  for (int64_t N : {4, 8}) {
    std::mt19937_64 rng(80 + uint64_t(N));
    const int64_t R = 3, H = 2, C = H * N;
    Vec r = random_vec(R * C, rng), k = random_vec(R * C, rng), v = random_vec(R * C, rng),
        rk = random_vec(C, rng), base = random_vec(R * C, rng), probe = random_vec(R * C, rng),
        y(R * C);
    auto loss = [&] {
      y = base;
      bonus_forward<double>({R, H, N, r.data(), k.data(), v.data(), rk.data(), y.data()});
      return dot(y, probe);
    };
    loss();
    Vec dr(r.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0), drk(C, 0.0);
    bonus_backward<double>({R, H, N, r.data(), k.data(), v.data(), rk.data(), y.data(),
                            probe.data(), dr.data(), dk.data(), dv.data(), drk.data()});
    fd_check({{"r", &r, &dr}, {"k", &k, &dk}, {"v", &v, &dv}, {"r_k", &rk, &drk}}, loss);
  }
}

TEST(BackwardOps, Gate) {
  std::mt19937_64 rng(90);
  const int64_t n = 10;
  Vec p = random_vec(n, rng), q = random_vec(n, rng), probe = random_vec(n, rng), y(n);
  Vec dp(n, 0.0), dq(n, 0.0);
  auto loss = [&] {
    mul_forward<double>({n, p.data(), q.data(), y.data()});
    return dot(y, probe);
  };
  loss();
  mul_backward<double>({n, p.data(), q.data(), y.data(), probe.data(), dp.data(), dq.data()});
  fd_check({{"p", &p, &dp}, {"q", &q, &dq}}, loss);
}

TEST(BackwardOps, CrossEntropy) {
  std::mt19937_64 rng(100);
  const int64_t R = 4, V = 9;
  Vec logits = random_vec(R * V, rng, -3, 3), d(R * V);
  std::vector<int32_t> tgt = {0, 8, 3, 3};
  auto loss = [&] { return cross_entropy<double>({R, V, logits.data(), tgt.data(), nullptr}); };
  cross_entropy<double>({R, V, logits.data(), tgt.data(), d.data()});
  fd_check({{"logits", &logits, &d}}, loss);
}

// Soft targets: the loss is Σ_v p_v·(lse − l_v) per row (computed here independently, from
// log-softmax) and its gradient passes the finite-difference check; with one-hot p it equals
// the hard-target loss and gradient.
TEST(BackwardOps, CrossEntropySoftTargets) {
  std::mt19937_64 rng(102);
  const int64_t R = 3, V = 7;
  Vec logits = random_vec(R * V, rng, -3, 3), p = random_vec(R * V, rng, 0.1, 1), d(R * V);
  for (int64_t r = 0; r < 2; ++r) {  // rows 0 and 1 sum to 1; row 2 keeps its mass (≠ 1)
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += p[size_t(r * V + v)];
    for (int64_t v = 0; v < V; ++v) p[size_t(r * V + v)] /= sum;
  }
  double expected = 0;
  for (int64_t r = 0; r < R; ++r) {
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[size_t(r * V + v)]);
    for (int64_t v = 0; v < V; ++v)
      expected -= p[size_t(r * V + v)] * (logits[size_t(r * V + v)] - std::log(sum));
  }
  std::vector<int32_t> unused(size_t(R), 0);
  auto loss = [&] {
    CrossEntropyArgs<double> a{R, V, logits.data(), unused.data(), nullptr};
    a.soft_targets = p.data();
    return cross_entropy<double>(a);
  };
  EXPECT_NEAR(loss(), expected / double(R), 1e-12);
  CrossEntropyArgs<double> a{R, V, logits.data(), unused.data(), d.data()};
  a.soft_targets = p.data();
  cross_entropy<double>(a);
  fd_check({{"logits", &logits, &d}}, loss);

  std::vector<int32_t> tgt = {2, 0, 6};
  Vec one_hot(size_t(R * V), 0.0), d_soft(R * V), d_hard(R * V);
  for (int64_t r = 0; r < R; ++r) one_hot[size_t(r * V + tgt[size_t(r)])] = 1;
  CrossEntropyArgs<double> soft{R, V, logits.data(), unused.data(), d_soft.data()};
  soft.soft_targets = one_hot.data();
  const double hard = cross_entropy<double>({R, V, logits.data(), tgt.data(), d_hard.data()});
  EXPECT_NEAR(cross_entropy<double>(soft), hard, 1e-12);
  for (size_t i = 0; i < d_soft.size(); ++i) EXPECT_NEAR(d_soft[i], d_hard[i], 1e-15);
}

// L2Wrap adds 1e-4/R · max_logit to each position's arg-max logit gradient and nothing else;
// the loss value is unchanged.
// The float cross-entropy on a backend's softmax pieces (SIMD exp on the cpu backend) equals
// the scalar one (loss and gradient, in place, with l2wrap); a row with a NaN logit gives a
// NaN loss and writes nothing outside the logits (the l2wrap index stays in the row).
TEST(BackwardOps, CrossEntropyOnBackendOpsEqualsScalar) {
  std::mt19937_64 rng(103);
  const int64_t R = 6, V = 1000;
  const Vec wide = random_vec(R * V, rng, -8, 8);
  const std::vector<float> logits(wide.begin(), wide.end());
  std::vector<int32_t> tgt = {0, 999, 3, 500, 7, 7};
  for (const PointwiseOps* ops : {&scalar_pointwise_ops(), &cpu::simd_pointwise_ops()}) {
    std::vector<float> want = logits, got = logits;
    const double l_want =
        cross_entropy<float>({R, V, want.data(), tgt.data(), want.data(), true, 3 * R});
    const double l_got =
        cross_entropy({R, V, got.data(), tgt.data(), got.data(), true, 3 * R}, *ops);
    EXPECT_NEAR(l_got, l_want, 1e-6 * std::abs(l_want));
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-6 * std::abs(want[i]) + 1e-12) << i;
    for (int64_t V_nan : {int64_t(3), V}) {              // shorter and longer than a vector
      std::vector<float> row(size_t(V_nan) + 1, 0.25f);  // + a sentinel after the row
      row[1] = std::nanf("");
      const int32_t t = 0;
      const double l = cross_entropy({1, V_nan, row.data(), &t, row.data(), true}, *ops);
      EXPECT_TRUE(std::isnan(l)) << V_nan;
      EXPECT_EQ(row[size_t(V_nan)], 0.25f) << "wrote past the row, V " << V_nan;
    }
  }
}

TEST(BackwardOps, CrossEntropyL2WrapTouchesOnlyArgMax) {
  std::mt19937_64 rng(101);
  const int64_t R = 5, V = 11;
  Vec logits = random_vec(R * V, rng, -3, 3), d0(R * V), d1(R * V);
  std::vector<int32_t> tgt = {1, 2, 3, 4, 5};
  const double l0 = cross_entropy<double>({R, V, logits.data(), tgt.data(), d0.data(), false});
  const double l1 = cross_entropy<double>({R, V, logits.data(), tgt.data(), d1.data(), true});
  EXPECT_EQ(l0, l1);
  for (int64_t r = 0; r < R; ++r) {
    int64_t arg = 0;
    for (int64_t v = 1; v < V; ++v)
      if (logits[size_t(r * V + v)] > logits[size_t(r * V + arg)]) arg = v;
    for (int64_t v = 0; v < V; ++v) {
      const size_t i = size_t(r * V + v);
      if (v == arg) {
        EXPECT_NEAR(d1[i] - d0[i], 1e-4 / double(R) * logits[i], 1e-15);
      } else {
        EXPECT_EQ(d1[i], d0[i]);
      }
    }
  }
}

}  // namespace
}  // namespace rwkv7::train
