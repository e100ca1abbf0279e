// Highway multi-target kernels: this file is compiled once per target ISA.
// The WKV-7 backward of one head (math: backends/reference/wkv7_train_scalar.hpp). The state
// and its gradient are kept row-major, S[i][·] (one value row i over the keys j, padded to whole
// vectors), so that per step every key-indexed gradient (dr, dk, dw, db, da) is a vertical
// accumulation over the rows and only dsa_i = dS[i]·b and dv_i = dS[i]·k need horizontal sums
// (two per row per step). sa_i = S_{t-1}[i]·a is kept from the recomputed forward.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/wkv7_backward_kernels.cpp"
#include "backends/cpu/wkv7_backward_kernels.hpp"

#include <algorithm>

#include "hwy/aligned_allocator.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr size_t kMaxRowVecs = 8;

// Buffers of one thread, kept between calls (a training step allocates nothing once warm).
struct BackwardScratch {
  hwy::AlignedFreeUniquePtr<float[]> mem;
  size_t size = 0;
  float* get(size_t n) {
    if (n > size) {
      mem = hwy::AllocateAligned<float>(n);
      size = n;
    }
    return mem.get();
  }
};

// One step's key-indexed inputs, padded with zeros to Np lanes (so padded lanes of S and dS
// stay zero: their decay, a, b, k and r are zero).
struct StepInputs {
  float *w, *a, *b, *k, *r;
  void load(const Wkv7TrainArgs<float>& p, int64_t o, size_t N) const {
    std::copy_n(p.decay + o, N, w);
    std::copy_n(p.a + o, N, a);
    std::copy_n(p.b + o, N, b);
    std::copy_n(p.k + o, N, k);
    std::copy_n(p.r + o, N, r);
  }
};

// S_next[i] = S_prev[i]·diag(w) + sa_i·b + v_i·k with sa_i = S_prev[i]·a, for the N rows
// (S_next may be S_prev); sa_i stored in `sa` when given.
template <size_t NV>
HWY_INLINE void ForwardStep(const float* prev, float* next, const StepInputs& in, const float* v,
                            size_t N, size_t Np, float* sa) {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d);
  for (size_t i = 0; i < N; ++i) {
    const float* row = prev + i * Np;
    auto acc = hn::Zero(d);
    for (size_t q = 0; q < NV; ++q)
      acc = hn::MulAdd(hn::Load(d, row + q * L), hn::Load(d, in.a + q * L), acc);
    const float sai = hn::GetLane(hn::SumOfLanes(d, acc));
    if (sa) sa[i] = sai;
    const auto vsa = hn::Set(d, sai), vv = hn::Set(d, v[i]);
    for (size_t q = 0; q < NV; ++q) {
      auto s = hn::Mul(hn::Load(d, row + q * L), hn::Load(d, in.w + q * L));
      s = hn::MulAdd(vsa, hn::Load(d, in.b + q * L), s);
      s = hn::MulAdd(vv, hn::Load(d, in.k + q * L), s);
      hn::Store(s, d, next + i * Np + q * L);
    }
  }
}

// One step back (prev = S_{t-1}, cur = S_t, dS = d loss / d S_t on entry, d / d S_{t-1} on
// exit). Key-indexed gradients go to `keyed` [5][Np] (dr, dw, dk, db, da), dv_i added to dv.
template <size_t NV>
HWY_INLINE void BackwardStep(const float* prev, const float* cur, const float* sa, float* dS,
                             const StepInputs& in, const float* dy, const float* v, size_t N,
                             size_t Np, float* dv, float* keyed) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  const size_t L = hn::Lanes(d);
  V dr[NV], dw[NV], dk[NV], db[NV], da[NV];
  for (size_t q = 0; q < NV; ++q) dr[q] = dw[q] = dk[q] = db[q] = da[q] = hn::Zero(d);
  for (size_t i = 0; i < N; ++i) {
    const V vdy = hn::Set(d, dy[i]), vv = hn::Set(d, v[i]), vsa = hn::Set(d, sa[i]);
    float* dSi = dS + i * Np;
    V g[NV];
    auto pb = hn::Zero(d), pk = hn::Zero(d);
    for (size_t q = 0; q < NV; ++q) {  // dS[i] += dy_i·r; dsa_i = dS[i]·b; dv_i = dS[i]·k
      g[q] = hn::MulAdd(vdy, hn::Load(d, in.r + q * L), hn::Load(d, dSi + q * L));
      pb = hn::MulAdd(g[q], hn::Load(d, in.b + q * L), pb);
      pk = hn::MulAdd(g[q], hn::Load(d, in.k + q * L), pk);
    }
    const float dsa = hn::GetLane(hn::SumOfLanes(d, pb));
    if (dv) dv[i] += hn::GetLane(hn::SumOfLanes(d, pk));
    const V vdsa = hn::Set(d, dsa);
    const float *Pi = prev + i * Np, *Ci = cur + i * Np;
    for (size_t q = 0; q < NV; ++q) {
      const V P = hn::Load(d, Pi + q * L);
      dr[q] = hn::MulAdd(vdy, hn::Load(d, Ci + q * L), dr[q]);
      dw[q] = hn::MulAdd(g[q], P, dw[q]);
      dk[q] = hn::MulAdd(vv, g[q], dk[q]);
      db[q] = hn::MulAdd(vsa, g[q], db[q]);
      da[q] = hn::MulAdd(vdsa, P, da[q]);
      hn::Store(
          hn::MulAdd(vdsa, hn::Load(d, in.a + q * L), hn::Mul(g[q], hn::Load(d, in.w + q * L))), d,
          dSi + q * L);
    }
  }
  for (size_t q = 0; q < NV; ++q) {
    hn::Store(dr[q], d, keyed + 0 * Np + q * L);
    hn::Store(dw[q], d, keyed + 1 * Np + q * L);
    hn::Store(dk[q], d, keyed + 2 * Np + q * L);
    hn::Store(db[q], d, keyed + 3 * Np + q * L);
    hn::Store(da[q], d, keyed + 4 * Np + q * L);
  }
}

template <size_t NV>
void HeadBackwardFixed(const Wkv7TrainArgs<float>& p, size_t h, size_t Np) {
  const size_t N = size_t(p.N), NN = N * N, C = size_t(p.H) * N, T = size_t(p.S);
  const size_t K = size_t(std::max<int64_t>(1, p.checkpoint)), chunks = (T + K - 1) / K;
  const size_t NNp = N * Np;
  thread_local BackwardScratch scratch;
  // Every block a whole number of Np-float rows: aligned for the vector loads.
  float* mem = scratch.get(chunks * NNp + (K + 1) * NNp + K * Np + NNp + 5 * Np + 5 * Np);
  float *ck = mem, *states = ck + chunks * NNp, *sas = states + (K + 1) * NNp;
  float *dS = sas + K * Np, *inputs = dS + NNp, *keyed = inputs + 5 * Np;
  std::fill(inputs, inputs + 5 * Np, 0.0f);
  const StepInputs in{inputs, inputs + Np, inputs + 2 * Np, inputs + 3 * Np, inputs + 4 * Np};
  auto load_rows = [&](float* to, const float* from) {  // [N, N] → [N, Np], padding zeroed
    for (size_t i = 0; i < N; ++i) {
      std::fill(to + i * Np, to + (i + 1) * Np, 0.0f);
      if (from) std::copy_n(from + i * N, N, to + i * Np);
    }
  };
  // Checkpoints: the state before steps 0, K, 2K, ... (the last chunk's is not stepped past).
  load_rows(ck, p.s0 ? p.s0 + h * NN : nullptr);
  for (size_t c = 1; c < chunks; ++c) {
    std::copy_n(ck + (c - 1) * NNp, NNp, ck + c * NNp);
    for (size_t t = (c - 1) * K; t < c * K; ++t) {
      const size_t o = t * C + h * N;
      in.load(p, int64_t(o), N);
      ForwardStep<NV>(ck + c * NNp, ck + c * NNp, in, p.v + o, N, Np, nullptr);
    }
  }
  load_rows(dS, p.ds_final ? p.ds_final + h * NN : nullptr);
  for (size_t c = chunks; c-- > 0;) {
    const size_t t0 = c * K, t1 = std::min(T, t0 + K);
    // states[m] = state before step t0 + m, states[m + 1] after it; sas[m] its sa.
    std::copy_n(ck + c * NNp, NNp, states);
    for (size_t t = t0; t < t1; ++t) {
      const size_t m = t - t0, o = t * C + h * N;
      in.load(p, int64_t(o), N);
      ForwardStep<NV>(states + m * NNp, states + (m + 1) * NNp, in, p.v + o, N, Np, sas + m * N);
    }
    for (size_t t = t1; t-- > t0;) {
      const size_t m = t - t0, o = t * C + h * N;
      in.load(p, int64_t(o), N);
      BackwardStep<NV>(states + m * NNp, states + (m + 1) * NNp, sas + m * N, dS, in, p.dy + o,
                       p.v + o, N, Np, p.dv ? p.dv + o : nullptr, keyed);
      float* outs[5] = {p.dr, p.ddecay, p.dk, p.db, p.da};
      for (size_t g = 0; g < 5; ++g)
        if (outs[g])
          for (size_t j = 0; j < N; ++j) outs[g][o + j] += keyed[g * Np + j];
    }
  }
  if (p.ds0)
    for (size_t i = 0; i < N; ++i)
      for (size_t j = 0; j < N; ++j) p.ds0[h * NN + i * N + j] += dS[i * Np + j];
}

bool Wkv7HeadBackward(const Wkv7TrainArgs<float>& p, int64_t h) {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d), N = size_t(p.N);
  const size_t nv = (N + L - 1) / L;
  if (nv == 0 || nv > kMaxRowVecs || p.S <= 0) return false;
  switch (nv) {
#define RWKV7_WKV_BACK_CASE(n)                 \
  case n:                                      \
    HeadBackwardFixed<n>(p, size_t(h), n * L); \
    break;
    RWKV7_WKV_BACK_CASE(1)
    RWKV7_WKV_BACK_CASE(2)
    RWKV7_WKV_BACK_CASE(3)
    RWKV7_WKV_BACK_CASE(4)
    RWKV7_WKV_BACK_CASE(5)
    RWKV7_WKV_BACK_CASE(6)
    RWKV7_WKV_BACK_CASE(7)
    RWKV7_WKV_BACK_CASE(8)
#undef RWKV7_WKV_BACK_CASE
  }
  return true;
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(Wkv7HeadBackward);

bool wkv7_head_backward(const Wkv7TrainArgs<float>& p, int64_t h) {
  return HWY_DYNAMIC_DISPATCH(Wkv7HeadBackward)(p, h);
}

}  // namespace rwkv7::cpu
#endif
