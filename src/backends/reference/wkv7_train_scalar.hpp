#pragma once
// The scalar WKV-7 training recurrence of one head (forward, and the exact backward from
// checkpoints), templated on the float type: float for the ops, double for the reference
// backend and the finite-difference tests. The cpu backend's SIMD backward is tested against it.
// Per head h, with S[i][j] (i = value index, j = key index) and sa = S_{t-1}·a:
//   S_t = S_{t-1}·diag(w) + sa·bᵀ + v·kᵀ,   y = S_t·r
// Backward at step t, with dS the gradient of the loss w.r.t. S_t (later steps included):
//   dS += dy·rᵀ;   dr = S_tᵀ·dy;   dv = dS·k;   dk = dSᵀ·v;   dw_j = Σ_i dS[i][j]·S_{t-1}[i][j]
//   dsa = dS·b;    db = dSᵀ·sa;    da = S_{t-1}ᵀ·dsa;   dS_{t-1} = dS·diag(w) + dsa·aᵀ
#include <algorithm>
#include <cstdint>
#include <vector>

#include "backends/wkv7_train_args.hpp"

namespace rwkv7::wkv7_scalar {

// Advances one head's state S [N, N] over steps [t0, t1). Writes y when given, and the state
// after each step into `after` [(t1 - t0), N, N] when given.
template <class T>
inline void head_steps(const Wkv7TrainArgs<T>& p, int64_t h, T* S, int64_t t0, int64_t t1, T* y,
                       T* after) {
  const int64_t N = p.N, C = p.H * p.N;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t o = t * C + h * N;
    const T *w = p.decay + o, *k = p.k + o, *v = p.v + o, *a = p.a + o, *b = p.b + o, *r = p.r + o;
    for (int64_t i = 0; i < N; ++i) {
      T* Si = S + i * N;
      T sa = 0;
      for (int64_t j = 0; j < N; ++j) sa += Si[j] * a[j];
      T yi = 0;
      for (int64_t j = 0; j < N; ++j) {
        Si[j] = Si[j] * w[j] + sa * b[j] + v[i] * k[j];
        yi += Si[j] * r[j];
      }
      if (y) y[o + i] = yi;
    }
    if (after) std::copy_n(S, N * N, after + (t - t0) * N * N);
  }
}

// Per-thread buffers of the per-head work (heads run on pool threads): kept between calls so
// that a training step allocates nothing once warm.
template <class T>
struct HeadScratch {
  std::vector<T> ck, S, dS, states, sa, dsa;
};
template <class T>
inline HeadScratch<T>& head_scratch() {
  thread_local HeadScratch<T> s;
  return s;
}

template <class T>
inline void head_backward(const Wkv7TrainArgs<T>& p, int64_t h) {
  const int64_t N = p.N, NN = N * N, C = p.H * p.N;
  const int64_t K = std::max<int64_t>(1, p.checkpoint);
  const int64_t chunks = (p.S + K - 1) / K;
  // Checkpoints: the state before steps 0, K, 2K, ...
  HeadScratch<T>& w = head_scratch<T>();
  std::vector<T>&ck = w.ck, &S = w.S, &dS = w.dS, &states = w.states, &sa = w.sa, &dsa = w.dsa;
  ck.assign(size_t(chunks * NN), T(0));
  S.assign(size_t(NN), T(0));
  if (p.s0) std::copy_n(p.s0 + h * NN, NN, S.data());
  for (int64_t c = 0; c < chunks; ++c) {
    std::copy(S.begin(), S.end(), ck.begin() + c * NN);
    if (c + 1 < chunks) head_steps(p, h, S.data(), c * K, (c + 1) * K, (T*)nullptr, (T*)nullptr);
  }
  dS.assign(size_t(NN), T(0));
  states.assign(size_t((K + 1) * NN), T(0));
  if (p.ds_final) std::copy_n(p.ds_final + h * NN, NN, dS.data());
  sa.assign(size_t(N), T(0));
  dsa.assign(size_t(N), T(0));
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * K, t1 = std::min(p.S, t0 + K);
    // states[m] = state before step t0 + m; states[m + 1] = after it.
    std::copy_n(ck.begin() + c * NN, NN, states.begin());
    std::copy_n(ck.begin() + c * NN, NN, S.begin());
    head_steps(p, h, S.data(), t0, t1, (T*)nullptr, states.data() + NN);
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const T* prev = states.data() + (t - t0) * NN;
      const T* cur = prev + NN;
      const int64_t o = t * C + h * N;
      const T *w = p.decay + o, *k = p.k + o, *v = p.v + o, *a = p.a + o, *b = p.b + o,
              *r = p.r + o, *dy = p.dy + o;
      for (int64_t i = 0; i < N; ++i) {
        T* dSi = dS.data() + i * N;
        for (int64_t j = 0; j < N; ++j) dSi[j] += dy[i] * r[j];
        T acc_sa = 0, acc_dsa = 0, acc_dv = 0;
        for (int64_t j = 0; j < N; ++j) {
          acc_sa += prev[i * N + j] * a[j];
          acc_dsa += dSi[j] * b[j];
          acc_dv += dSi[j] * k[j];
        }
        sa[size_t(i)] = acc_sa;
        dsa[size_t(i)] = acc_dsa;
        if (p.dv) p.dv[o + i] += acc_dv;
      }
      for (int64_t j = 0; j < N; ++j) {
        T dr = 0, dk = 0, dw = 0, db = 0, da = 0;
        for (int64_t i = 0; i < N; ++i) {
          const T g = dS[size_t(i * N + j)];
          dr += cur[i * N + j] * dy[i];
          dk += g * v[i];
          dw += g * prev[i * N + j];
          db += g * sa[size_t(i)];
          da += prev[i * N + j] * dsa[size_t(i)];
        }
        if (p.dr) p.dr[o + j] += dr;
        if (p.dk) p.dk[o + j] += dk;
        if (p.ddecay) p.ddecay[o + j] += dw;
        if (p.db) p.db[o + j] += db;
        if (p.da) p.da[o + j] += da;
      }
      for (int64_t i = 0; i < N; ++i)
        for (int64_t j = 0; j < N; ++j)
          dS[size_t(i * N + j)] = dS[size_t(i * N + j)] * w[j] + dsa[size_t(i)] * a[j];
    }
  }
  if (p.ds0)
    for (int64_t e = 0; e < NN; ++e) p.ds0[h * NN + e] += dS[size_t(e)];
}

template <class T>
inline void head_forward(const Wkv7TrainArgs<T>& p, int64_t h) {
  const int64_t NN = p.N * p.N;
  std::vector<T>& S = head_scratch<T>().S;
  S.assign(size_t(NN), T(0));
  if (p.s0) std::copy_n(p.s0 + h * NN, NN, S.data());
  head_steps(p, h, S.data(), 0, p.S, p.y, (T*)nullptr);
  if (p.s_final) std::copy(S.begin(), S.end(), p.s_final + h * NN);
}

}  // namespace rwkv7::wkv7_scalar
