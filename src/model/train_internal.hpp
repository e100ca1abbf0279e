#pragma once
// Shared by train_forward.cpp and backward.cpp: the activations the forward keeps for the
// backward, and the dense products in both directions over a Backend.
#include <deque>
#include <vector>

#include "model/backward.hpp"

namespace rwkv7::train::detail {

using Buf = std::vector<float>;

// Dense products on the backend. nn.Linear weights are [out, in] (y = x·wᵀ); LoRA factors
// are [in, out] (y = x·m). Backward products ACCUMULATE into dx / dw.
struct Products {
  const Backend& be;
  Buf* xt;  // scratch for linear(): [in, R] and a chunk of yᵀ, kept by the caller across calls
  Buf* yt;

  void linear(const float* x, const float* w, int64_t R, int64_t in, int64_t out, float* y) const;
  void lora(const float* x, const float* m, int64_t R, int64_t in, int64_t out, float* y) const;
  // g [p, q] += aᵀ·b with a [R, p], b [R, q]
  void atb_add(const float* a, const float* b, int64_t R, int64_t p, int64_t q, float* g) const;
  void linear_back(const float* x, const float* w, const float* dy, int64_t R, int64_t in,
                   int64_t out, float* dx, float* dw) const;
  void lora_back(const float* x, const float* m, const float* dy, int64_t R, int64_t in,
                 int64_t out, float* dx, float* dm) const;
};

// Everything one layer's backward reads. Shapes: [R, C] unless noted.
struct LayerActs {
  Buf x_in, ln1_stats /*[R,2]*/, xa, xr, xw, xk, xv, xa2, xg;
  Buf r, k, v_raw;
  Buf w_pre, w_low /*[R,Dw]*/, wz, decay;
  Buf v_low /*[R,Dv]*/, vz, v;  // v: after the value residual (= v_raw in layer 0)
  Buf a_low /*[R,Da]*/, az, a;
  Buf g_pre, g_low /*[R,Dg]*/, g;
  Buf wa, wb, kf;               // WKV inputs; kf = k scaled by the rate
  Buf y, gn_stats /*[R,H,2]*/;  // WKV output before GroupNorm
  Buf yb, yg;                   // GroupNorm + bonus; times the gate
  Buf x_mid, ln2_stats, xf, xkf, h_pre /*[R,F]*/, h;
};

struct Acts {
  int64_t B = 0, T = 0, R = 0;           // rows, positions per row (inputs), B·T
  std::vector<int32_t> inputs, targets;  // [R]
  Buf emb, ln0_stats;                    // embedding rows before ln0
  std::vector<LayerActs> layers;
  Buf x_final, lnout_stats, xo;  // before / after ln_out
  Buf logits;                    // [R, V]

  // Backward temporaries, reused from step to step (fresh vectors would be page-faulted in
  // and trimmed back every step). zeros() hands out the next one; a deque keeps references.
  std::deque<Buf> scratch;
  Buf mm_xt, mm_yt;  // Products' scratch
  size_t scratch_next = 0;
  Buf& zeros(size_t n) {
    if (scratch_next == scratch.size()) scratch.emplace_back();
    Buf& b = scratch[scratch_next++];
    b.assign(n, 0.0f);
    return b;
  }
};

// Runs the graph, keeping activations; returns the logits in acts.logits.
void train_forward(const TrainParams& p, const Products& mm, ThreadPool* pool, Acts& acts);

constexpr float kLnEps = 1e-5f;
constexpr float kGroupNormEps = 64e-5f;

}  // namespace rwkv7::train::detail
