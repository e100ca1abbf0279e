// The CUDA backend on a GPU: every kernel against its host twin (src/ops/cuda_host_ops.cpp) on
// random inputs, every golden file in every mode (fp32 within the SPEC tolerance, bf16/fp16 within
// the stated ones), and greedy tokens equal to the CPU backend on the tiny real model. Skips when
// no CUDA device is usable (so it can sit in the CPU test binary too).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "backends/cuda/device_ops.hpp"
#include "golden_runner.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

using dev::DeviceOps;
using dev::WType;

#define REQUIRE_CUDA()                                                    \
  if (!dev::cuda_available()) GTEST_SKIP() << "no CUDA device; skipping"; \
  auto gpu = dev::make_cuda_ops();                                        \
  auto host = dev::make_host_ops();

// Relative L2 bounds for bf16 / fp16 product inputs (see tests/model/cuda_model_host_test.cpp).
constexpr double kBf16RelTol = 3e-2;
constexpr double kF16RelTol = 4e-3;

// A device copy of a host vector; the host twin works on the host vector itself.
template <class T>
struct Mirror {
  DeviceOps& ops;
  std::vector<T> h;
  T* d = nullptr;
  Mirror(DeviceOps& o, std::vector<T> v) : ops(o), h(std::move(v)) {
    d = static_cast<T*>(ops.alloc(h.size() * sizeof(T)));
    ops.upload(d, h.data(), h.size() * sizeof(T));
  }
  ~Mirror() { ops.release(d); }
  std::vector<T> back() {
    std::vector<T> out(h.size());
    ops.download(out.data(), d, h.size() * sizeof(T));
    return out;
  }
};

// max |a - b| / max(1e-6, max |b|)
double rel_max(const std::vector<float>& a, const std::vector<float>& b) {
  return testing::max_diff(a, b) / std::max(1e-6, testing::max_abs(b));
}

std::vector<float> randv(size_t n, std::mt19937& rng, float lo = -1, float hi = 1) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(CudaKernels, GemmMatchesHostTwinInEveryType) {
  REQUIRE_CUDA();
  std::mt19937 rng(1);
  for (WType t : {WType::F32, WType::BF16, WType::F16}) {
    for (int64_t R : {1, 3, 7, 64, 300}) {
      for (bool acc : {false, true}) {
        for (dev::Act act : {dev::Act::None, dev::Act::Tanh, dev::Act::ReluSquare}) {
          const int64_t out = 96, in = 160;
          auto wf = randv(size_t(out * in), rng);
          std::vector<uint16_t> whalf(t == WType::F32 ? 0 : wf.size());
          void* wh = t == WType::F32 ? static_cast<void*>(wf.data()) : whalf.data();
          host->upload_as(t, wh, wf.data(), wf.size());
          void* wd = gpu->alloc(wf.size() * dev::wtype_size(t));
          gpu->upload_as(t, wd, wf.data(), wf.size());
          Mirror<float> x(*gpu, randv(size_t(R * in), rng)), y(*gpu, randv(size_t(R * out), rng));
          // two jobs in one group (the decode path groups products)
          Mirror<float> y2(*gpu, randv(size_t(R * out), rng));
          const dev::GemmJob jd[2] = {{{t, out, in, wd}, x.d, y.d, acc, act},
                                      {{t, out, in, wd}, x.d, y2.d, false, dev::Act::None}};
          const dev::GemmJob jh[2] = {
              {{t, out, in, wh}, x.h.data(), y.h.data(), acc, act},
              {{t, out, in, wh}, x.h.data(), y2.h.data(), false, dev::Act::None}};
          gpu->gemm_many(jd, 2, R);
          host->gemm_many(jh, 2, R);
          // An activation computed one ulp apart (tanhf vs std::tanh) can flip the rounding of
          // an input to bf16/fp16: one input off by one ulp of that type, ≤ 2^-8 relative.
          const double tol = t != WType::F32 && act != dev::Act::None ? 1e-3 : 1e-5;
          EXPECT_LE(rel_max(y.back(), y.h), tol)
              << int(t) << " R " << R << " acc " << acc << " act " << int(act);
          EXPECT_LE(rel_max(y2.back(), y2.h), 1e-5) << int(t) << " R " << R;
          gpu->release(wd);
        }
      }
    }
  }
}

TEST(CudaKernels, LayerNormAndEmbeddingMatchHostTwin) {
  REQUIRE_CUDA();
  std::mt19937 rng(2);
  for (int64_t C : {64, 96, 768, 2048}) {
    const int64_t R = 5, V = 11;
    Mirror<float> x(*gpu, randv(size_t(V * C), rng, -3, 5)), w(*gpu, randv(size_t(C), rng)),
        b(*gpu, randv(size_t(C), rng)), y(*gpu, std::vector<float>(size_t(R * C), NAN));
    Mirror<int32_t> rows(*gpu, {3, 0, 10, 3, 7});
    gpu->layer_norm(x.d, rows.d, R, C, w.d, b.d, 1e-5f, y.d);
    host->layer_norm(x.h.data(), rows.h.data(), R, C, w.h.data(), b.h.data(), 1e-5f, y.h.data());
    EXPECT_LE(rel_max(y.back(), y.h), 1e-5) << "layer_norm C " << C;
    for (WType t : {WType::F32, WType::BF16}) {
      std::vector<uint16_t> eh(t == WType::F32 ? 0 : x.h.size());
      void* emb_h = t == WType::F32 ? static_cast<void*>(x.h.data()) : eh.data();
      host->upload_as(t, emb_h, x.h.data(), x.h.size());
      void* emb_d = gpu->alloc(x.h.size() * dev::wtype_size(t));
      gpu->upload_as(t, emb_d, x.h.data(), x.h.size());
      gpu->embed_ln({t, V, C, emb_d}, rows.d, R, w.d, b.d, 1e-5f, y.d);
      host->embed_ln({t, V, C, emb_h}, rows.h.data(), R, w.h.data(), b.h.data(), 1e-5f, y.h.data());
      EXPECT_LE(rel_max(y.back(), y.h), 1e-5) << "embed_ln C " << C;
      gpu->release(emb_d);
    }
  }
}

// A ragged batch: segments of 3, 1, 5 and 61 rows in slots 2, 0, 1, 3 of a 4-slot pool (61 rows
// span several staged chunks of the WKV kernel).
struct Ragged {
  std::vector<int32_t> row0 = {0, 3, 4, 9}, rows = {3, 1, 5, 61}, slot = {2, 0, 1, 3},
                       last = {2, 3, 8, 69}, prev;
  int64_t R = 70, S = 4, slots = 4;
  Ragged() {
    for (int64_t s = 0; s < S; ++s)
      for (int32_t t = 0; t < rows[size_t(s)]; ++t)
        prev.push_back(t == 0 ? int32_t(-1 - s) : row0[size_t(s)] + t - 1);
  }
  dev::DevSegments view(const int32_t* r0, const int32_t* rs, const int32_t* sl, const int32_t* la,
                        const int32_t* pr) const {
    dev::DevSegments s;
    s.count = S, s.total_rows = R, s.max_rows = 61;
    s.row0 = r0, s.rows = rs, s.slot = sl, s.last_row = la, s.prev = pr;
    return s;
  }
};

TEST(CudaKernels, ShiftMixAndCarryMatchHostTwin) {
  REQUIRE_CUDA();
  std::mt19937 rng(3);
  Ragged g;
  const int64_t C = 192, L = 2, layer = 1;
  Mirror<int32_t> r0(*gpu, g.row0), rs(*gpu, g.rows), sl(*gpu, g.slot), la(*gpu, g.last),
      pr(*gpu, g.prev);
  const auto sd = g.view(r0.d, rs.d, sl.d, la.d, pr.d);
  const auto sh = g.view(g.row0.data(), g.rows.data(), g.slot.data(), g.last.data(), g.prev.data());
  Mirror<float> x(*gpu, randv(size_t(g.R * C), rng)),
      carry(*gpu, randv(size_t(g.slots * L * C), rng));
  std::vector<std::unique_ptr<Mirror<float>>> mix, out;
  dev::ShiftMixArgs ad, ah;
  ad.x = x.d, ah.x = x.h.data(), ad.C = ah.C = C, ad.nmix = ah.nmix = 6;
  ad.carry = {carry.d, L * C, layer * C};
  ah.carry = {carry.h.data(), L * C, layer * C};
  for (int m = 0; m < 6; ++m) {
    mix.push_back(std::make_unique<Mirror<float>>(*gpu, randv(size_t(C), rng, 0, 1)));
    out.push_back(std::make_unique<Mirror<float>>(*gpu, std::vector<float>(size_t(g.R * C), NAN)));
    ad.mix[m] = mix[m]->d, ad.out[m] = out[m]->d;
    ah.mix[m] = mix[m]->h.data(), ah.out[m] = out[m]->h.data();
  }
  gpu->shift_mix(sd, ad);
  host->shift_mix(sh, ah);
  for (int m = 0; m < 6; ++m) EXPECT_LE(rel_max(out[m]->back(), out[m]->h), 1e-6) << m;
  gpu->store_last_rows(sd, x.d, C, ad.carry);
  host->store_last_rows(sh, x.h.data(), C, ah.carry);
  EXPECT_EQ(carry.back(), carry.h);
  // LayerNorm + shift + mixes + carry in one op
  Mirror<float> lw(*gpu, randv(size_t(C), rng, 0.5f, 1.5f)), lb(*gpu, randv(size_t(C), rng));
  dev::LnShiftArgs ld, lh;
  ld.x = x.d, lh.x = x.h.data(), ld.ln_w = lw.d, lh.ln_w = lw.h.data(), ld.ln_b = lb.d;
  lh.ln_b = lb.h.data(), ld.carry = ad.carry, lh.carry = ah.carry, ld.C = lh.C = C;
  ld.nmix = lh.nmix = 6;
  for (int m = 0; m < 6; ++m) {
    ld.mix[m] = ad.mix[m], ld.out[m] = ad.out[m], lh.mix[m] = ah.mix[m], lh.out[m] = ah.out[m];
  }
  gpu->ln_shift_mix(sd, ld);
  host->ln_shift_mix(sh, lh);
  for (int m = 0; m < 6; ++m)
    EXPECT_LE(rel_max(out[m]->back(), out[m]->h), 1e-5) << "ln_shift " << m;
  EXPECT_LE(rel_max(carry.back(), carry.h), 1e-5) << "ln_shift carry";
  std::vector<float> z = randv(1000, rng, -4, 4);
  for (dev::Act f : {dev::Act::Tanh, dev::Act::Sigmoid, dev::Act::ReluSquare}) {
    Mirror<float> a(*gpu, z);
    gpu->activate(f, a.d, z.size());
    host->activate(f, a.h.data(), z.size());
    EXPECT_LE(rel_max(a.back(), a.h), 1e-6) << int(f);
  }
}

TEST(CudaKernels, WkvPrepWkvAndGroupNormMatchHostTwin) {
  REQUIRE_CUDA();
  std::mt19937 rng(4);
  Ragged g;
  Mirror<int32_t> r0(*gpu, g.row0), rs(*gpu, g.rows), sl(*gpu, g.slot), la(*gpu, g.last),
      pr(*gpu, g.prev);
  const auto sd = g.view(r0.d, rs.d, sl.d, la.d, pr.d);
  const auto sh = g.view(g.row0.data(), g.rows.data(), g.slot.data(), g.last.data(), g.prev.data());
  for (int64_t N : {16, 32, 64, 128}) {
    for (bool residual : {false, true}) {
      const int64_t H = N == 16 ? 4 : 3, C = H * N, n = g.R * C, L = 2, layer = 1;
      auto V = [&](float lo, float hi) {
        return std::make_unique<Mirror<float>>(*gpu, randv(size_t(n), rng, lo, hi));
      };
      auto P = [&](float lo, float hi) {
        return std::make_unique<Mirror<float>>(*gpu, randv(size_t(C), rng, lo, hi));
      };
      auto w0 = P(-6, 0), a0 = P(-1, 1), v0 = P(-1, 1), k_k = P(0.5, 1.5), k_a = P(0.5, 1.5);
      auto z_w = V(-2, 2), z_a = V(-2, 2), z_v = V(-2, 2), v_first = V(-1, 1);
      auto decay = V(0, 0), a = V(0, 0), v = V(-1, 1), k = V(-1, 1), wa = V(0, 0), wb = V(0, 0);
      auto r = V(-1, 1), y = V(0, 0), gate = V(0, 1);
      auto lnw = P(0.5, 1.5), lnb = P(-0.5, 0.5), r_k = P(-0.5, 0.5);
      auto dv = [&](auto& m) { return m->d; };
      auto hv = [&](auto& m) { return m->h.data(); };
      dev::WkvPrepArgs pd{g.R,
                          H,
                          N,
                          dv(w0),
                          dv(a0),
                          dv(v0),
                          dv(k_k),
                          dv(k_a),
                          dv(z_w),
                          dv(z_a),
                          residual ? dv(z_v) : nullptr,
                          residual ? dv(v_first) : nullptr,
                          dv(decay),
                          dv(a),
                          dv(v),
                          dv(k),
                          dv(wa),
                          dv(wb)};
      dev::WkvPrepArgs ph{g.R,
                          H,
                          N,
                          hv(w0),
                          hv(a0),
                          hv(v0),
                          hv(k_k),
                          hv(k_a),
                          hv(z_w),
                          hv(z_a),
                          residual ? hv(z_v) : nullptr,
                          residual ? hv(v_first) : nullptr,
                          hv(decay),
                          hv(a),
                          hv(v),
                          hv(k),
                          hv(wa),
                          hv(wb)};
      gpu->wkv_prep(pd);
      host->wkv_prep(ph);
      for (auto* m : {&decay, &a, &v, &k, &wa, &wb}) {
        auto got = (*m)->back();
        EXPECT_LE(rel_max(got, (*m)->h), 2e-6) << "wkv_prep N " << N;
        (*m)->h = got;  // the next stage starts from identical inputs
      }
      auto state = std::make_unique<Mirror<float>>(
          *gpu, randv(size_t(g.slots * L * H * N * N), rng, -0.5f, 0.5f));
      const dev::DevStateView svd{state->d, L * H * N * N, layer * H * N * N};
      const dev::DevStateView svh{state->h.data(), L * H * N * N, layer * H * N * N};
      gpu->wkv7(sd, {H, N, dv(r), dv(decay), dv(k), dv(v), dv(wa), dv(wb), svd, dv(y)});
      host->wkv7(sh, {H, N, hv(r), hv(decay), hv(k), hv(v), hv(wa), hv(wb), svh, hv(y)});
      auto ygot = y->back();
      EXPECT_LE(rel_max(ygot, y->h), 1e-5) << "wkv7 y N " << N;
      EXPECT_LE(rel_max(state->back(), state->h), 1e-5) << "wkv7 state N " << N;
      y->h = ygot;
      gpu->group_norm_bonus(
          {g.R, H, N, 64e-5f, dv(lnw), dv(lnb), dv(r_k), dv(r), dv(k), dv(v), dv(gate), dv(y)});
      host->group_norm_bonus(
          {g.R, H, N, 64e-5f, hv(lnw), hv(lnb), hv(r_k), hv(r), hv(k), hv(v), hv(gate), hv(y)});
      EXPECT_LE(rel_max(y->back(), y->h), 1e-5) << "group_norm_bonus N " << N;
    }
  }
}

class CudaGolden : public ::testing::TestWithParam<testing::GoldenCase> {};

TEST_P(CudaGolden, EveryModeMatchesGolden) {
  REQUIRE_CUDA();
  const testing::GoldenCase c = GetParam();
  RWKV7_REQUIRE_SHARED_PATH(golden_path, std::string("golden/") + c.golden);
  const testing::Golden g = testing::read_golden(golden_path);
  RWKV7_REQUIRE_SHARED_PATH(model_path, std::string(c.model_dir) + "/" + g.checkpoint);
  auto model = Model::load(model_path);
  for (WType t : {WType::F32, WType::BF16, WType::F16}) {
    const char* tn = t == WType::F32 ? "f32" : t == WType::BF16 ? "bf16" : "f16";
    for (const auto& e : testing::run_golden_modes(*model, *gpu, t, g)) {
      std::printf("GOLDEN %s %s %s max|dlogit|/max(1,std) %.3g rel_l2 %.3g state %.3g\n", c.golden,
                  tn, e.mode.c_str(), e.logits, e.rel, e.state);
      if (t == WType::F32) {
        EXPECT_LE(e.logits, 1e-4) << tn << " " << e.mode;
        EXPECT_LE(e.state, 1e-4) << tn << " " << e.mode;
      } else {
        EXPECT_LE(e.rel, t == WType::BF16 ? kBf16RelTol : kF16RelTol) << tn << " " << e.mode;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, CudaGolden, ::testing::ValuesIn(testing::golden_cases()),
                         testing::golden_case_name);

int argmax(const float* p, int64_t n) { return int(std::max_element(p, p + n) - p); }

TEST(CudaGreedy, TinyModelTokensEqualCpuBackend) {
  REQUIRE_CUDA();
  RWKV7_REQUIRE_SHARED_PATH(model_path, "models/tiny-rwkv7-834K.pth");
  auto model = Model::load(model_path);
  const std::string prompt = "The quick brown fox jumps over the lazy dog. Once upon a time";
  const std::vector<int32_t> ptoks(prompt.begin(), prompt.end());
  const int steps = 200;
  const int64_t V = model->config().vocab_size;
  auto greedy_cpu = [&] {
    State st = model->new_state();
    auto logits = model->forward(ptoks, st);
    std::vector<int32_t> out;
    for (int i = 0; i < steps; ++i) {
      out.push_back(argmax(logits.data(), V));
      logits = model->forward(std::span<const int32_t>(&out.back(), 1), st);
    }
    return out;
  };
  auto greedy_dev = [&](WType t) {
    CudaModel cm(build_weights(read_tensor_file(model->path())), *gpu, t);
    cm.reserve_slots(1);
    cm.reset_slot(0);
    std::vector<float> logits;
    std::vector<CudaModel::SlotRequest> q = {{ptoks, 0, Logits::Last, &logits}};
    cm.run(q);
    std::vector<int32_t> out;
    std::vector<float> step(static_cast<size_t>(V));
    for (int i = 0; i < steps; ++i) {
      out.push_back(argmax(i == 0 ? logits.data() : step.data(), V));
      cm.decode(std::span<const int32_t>(&out.back(), 1), step.data(), true);
    }
    return out;
  };
  const auto cpu = greedy_cpu(), f32 = greedy_dev(WType::F32), bf16 = greedy_dev(WType::BF16);
  EXPECT_EQ(f32, cpu);
  size_t same = 0;
  while (same < bf16.size() && bf16[same] == cpu[same]) ++same;
  std::printf("GREEDY tiny: fp32 device == cpu: %s; bf16 first divergence at token %zu of %d\n",
              f32 == cpu ? "yes" : "NO", same, steps);
  std::string text(f32.begin(), f32.end());
  std::printf("GREEDY text (fp32 device): %s\n", text.c_str());
}

}  // namespace
}  // namespace rwkv7
