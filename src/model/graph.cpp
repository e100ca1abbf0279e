// The RWKV-7 graph (SPEC §3-4): the rows of all sequences of one pass are stacked so every
// weight product is one matrix-matrix call; token shift and WKV run per sequence. The ops are
// those of src/ops (forward and backward side by side), maps on the backend's SIMD table.
#include "model/graph.hpp"

#include <algorithm>

#include "model/block_order.hpp"
#include "ops/backward_ops.hpp"

namespace rwkv7 {

using Buf = std::vector<float>;
using train::BiasSigmoidKind;

template <class F>
void GraphPass::each_row_range(const F& fn) const {
  be.parallel_rows(R, [&](int64_t r0, int64_t r1) { fn(r0, r1); });
}

// A stage's output: a scratch buffer, or the kept activation when training.
Buf& GraphPass::buffer(LayerActs* keep, Buf LayerActs::*field, size_t n) const {
  if (!keep) return ws.get(n);
  Buf& b = keep->*field;
  b.resize(n);
  return b;
}

void GraphPass::layer_norm_rows(const float* x, const std::vector<float>& weight,
                                const std::vector<float>& bias, float* y, float* stats) const {
  const int64_t C = w.config.n_embd;
  each_row_range([&](int64_t r0, int64_t r1) {
    train::norm_forward<float>({r1 - r0, C, 1, kLnEps, x + r0 * C, weight.data(), bias.data(),
                                y + r0 * C, stats ? stats + r0 * 2 : nullptr});
  });
}

void GraphPass::embed(const int32_t* tokens, float* x, float* emb_out, float* stats) const {
  const int64_t C = w.config.n_embd;
  float* raw = emb_out ? emb_out : x;
  each_row_range([&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = 0; j < C; ++j)
        raw[r * C + j] = load_as_f32(w.emb.dtype, w.emb.data, size_t(int64_t(tokens[r]) * C + j));
  });
  layer_norm_rows(raw, w.ln0_w, w.ln0_b, x, stats);
}

// prev[row] for the token shift: the carried state for a segment's first row, else row-1.
// Writes out[r] = x[r] + (prev - x[r]) * mix[c] for every given mix, then updates `carry`.
void GraphPass::shift_mix(const Buf& x, int64_t layer, std::vector<float> State::*carry,
                          std::initializer_list<std::pair<const Buf*, Buf*>> mixes) const {
  const int64_t C = w.config.n_embd;
  std::vector<const float*>& prev = ws.prev;
  prev.resize(size_t(R));
  for (const Segment& s : segs) {
    const float* state_row = ((*s.state).*carry).data() + layer * C;
    for (int64_t r = s.row0; r < s.row0 + s.rows; ++r)
      prev[size_t(r)] = r == s.row0 ? state_row : x.data() + (r - 1) * C;
  }
  each_row_range([&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* cur = x.data() + r * C;
      const float* p = prev[size_t(r)];
      for (auto [mix, out] : mixes) {
        float* o = out->data() + r * C;
        const float* mx = mix->data();
        for (int64_t c = 0; c < C; ++c) o[c] = cur[c] + (p[c] - cur[c]) * mx[c];
      }
    }
  });
  for (const Segment& s : segs) {
    float* state_row = ((*s.state).*carry).data() + layer * C;
    std::copy_n(x.data() + (s.row0 + s.rows - 1) * C, C, state_row);
  }
}

// The stages of model/block_order.hpp on the backend. Inference takes each stage's output from
// the pass's scratch (reused from the next layer on); training keeps them in the layer's
// LayerActs for backward.cpp (separate buffers instead of in-place updates).
class GraphPass::LayerStages {
 public:
  // Keeps each layer's activations in (*keep_all)[layer] when given, else in keep_one.
  LayerStages(const GraphPass& g, Buf& x, Buf& v_first, std::vector<LayerActs>* keep_all,
              LayerActs* keep_one = nullptr)
      : g_(g), x_(x), v_first_(v_first), keep_all_(keep_all), keep_one_(keep_one) {}

  void begin_layer(int64_t l) {
    layer_ = l;
    L_ = &g_.w.layers[size_t(l)];
    keep_ = keep_all_ ? &(*keep_all_)[size_t(l)] : keep_one_;
  }

  void time_mix_inputs() {
    using A = LayerActs;
    g_.ws.reset();
    if (keep_) keep_->x_in = x_;
    xa_ = &buf(&A::xa, n());
    g_.layer_norm_rows(x_.data(), L_->ln1_w, L_->ln1_b, xa_->data(),
                       keep_ ? buf(&A::ln1_stats, size_t(g_.R * 2)).data() : nullptr);
    xr_ = &buf(&A::xr, n()), xw_ = &buf(&A::xw, n()), xk_ = &buf(&A::xk, n());
    xv_ = &buf(&A::xv, n()), xa2_ = &buf(&A::xa2, n()), xg_ = &buf(&A::xg, n());
    g_.shift_mix(*xa_, layer_, &State::att_shift,
                 {{&L_->x_r, xr_},
                  {&L_->x_w, xw_},
                  {&L_->x_k, xk_},
                  {&L_->x_v, xv_},
                  {&L_->x_a, xa2_},
                  {&L_->x_g, xg_}});
  }

  void time_mix_products() {
    using A = LayerActs;
    const ModelConfig& c = g_.w.config;
    const int64_t R = g_.R;
    r_ = &buf(&A::r, n()), k_ = &buf(&A::k, n()), v_ = &buf(&A::v_raw, n());
    // LoRA hidden rows [R, D], one buffer each so that all products of a stage are
    // independent (one parallel region when decoding).
    low_w_ = &buf(&A::w_low, size_t(R * c.d_decay));
    low_a_ = &buf(&A::a_low, size_t(R * c.d_aaa));
    low_v_ = &buf(&A::v_low, size_t(R * c.d_value));
    low_g_ = &buf(&A::g_low, size_t(R * c.d_gate));
    const LayerWeights& L = *L_;
    const MatmulArgs first[] = {
        {L.receptance, xr_->data(), r_->data(), R}, {L.key, xk_->data(), k_->data(), R},
        {L.value, xv_->data(), v_->data(), R},      {L.w1.m, xw_->data(), low_w_->data(), R},
        {L.a1.m, xa2_->data(), low_a_->data(), R},  {L.g1.m, xg_->data(), low_g_->data(), R},
        {L.v1.m, xv_->data(), low_v_->data(), R}};
    g_.be.matmul_many(std::span<const MatmulArgs>(first, residual() ? 7 : 6));
  }

  void lora_up_products() {
    using A = LayerActs;
    const ModelConfig& c = g_.w.config;
    const PointwiseOps& pw = g_.be.pointwise();
    const int64_t R = g_.R;
    // In place: the backward of tanh and σ reads their outputs only.
    g_.each_row_range([&](int64_t r0, int64_t r1) {
      pw.tanh(&(*low_w_)[size_t(r0 * c.d_decay)], size_t((r1 - r0) * c.d_decay));
      pw.sigmoid(&(*low_g_)[size_t(r0 * c.d_gate)], size_t((r1 - r0) * c.d_gate));
    });
    z_w_ = &buf(&A::wz, n()), z_a_ = &buf(&A::az, n()), z_v_ = &buf(&A::vz, n());
    g_ptr_ = &buf(&A::g, n());
    const LayerWeights& L = *L_;
    const MatmulArgs second[] = {{L.w2.m, low_w_->data(), z_w_->data(), R},
                                 {L.a2.m, low_a_->data(), z_a_->data(), R},
                                 {L.g2.m, low_g_->data(), g_ptr_->data(), R},
                                 {L.v2.m, low_v_->data(), z_v_->data(), R}};
    g_.be.matmul_many(std::span<const MatmulArgs>(second, residual() ? 4 : 3));
  }

  void wkv_inputs() {
    using A = LayerActs;
    const ModelConfig& c = g_.w.config;
    const PointwiseOps& pw = g_.be.pointwise();
    const int64_t C = c.n_embd, H = c.n_head, N = c.head_size;
    const LayerWeights& L = *L_;
    decay_ = &buf(&A::decay, n()), a_ = &buf(&A::a, n());
    // decay = exp(-e^-0.5 · σ(w0 + tanh(xw·w1)·w2)); in-context rate a = σ(a0 + xa·a1·a2);
    // value residual towards layer 0's value: v += (v_first - v) · σ(v0 + xv·v1·v2)
    vr_ = keep_ ? &buf(&A::v, n()) : v_;  // the value after the residual
    auto row = [C](Buf* b, int64_t i) { return b->data() + i * C; };
    g_.each_row_range([&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i) {
        pw.decay(L.w0.data(), row(z_w_, i), row(decay_, i), size_t(C));
        pw.sigmoid_bias(L.a0.data(), row(z_a_, i), row(a_, i), size_t(C));
        if (keep_) std::copy_n(row(v_, i), C, row(vr_, i));
        if (residual())
          pw.value_residual(L.v0.data(), row(z_v_, i), row(&v_first_, i), row(vr_, i), size_t(C));
      }
    });
    if (!residual()) v_first_ = *vr_;
    // kk = per-head L2-normalised k*k_k; k scaled by the rate (in place unless kept); WKV
    // inputs a = -kk, b = kk*a
    wa_ = &buf(&A::wa, n()), wb_ = &buf(&A::wb, n());
    kf_ = keep_ ? &buf(&A::kf, n()) : k_;
    g_.each_row_range([&](int64_t r0, int64_t r1) {
      const int64_t o = r0 * C;
      train::wkv_inputs_forward<float>({r1 - r0, H, N, k_->data() + o, a_->data() + o, L.k_k.data(),
                                        L.k_a.data(), wa_->data() + o, wb_->data() + o,
                                        kf_->data() + o});
    });
  }

  void wkv() {
    const ModelConfig& c = g_.w.config;
    const int64_t C = c.n_embd, H = c.n_head, N = c.head_size;
    y_ = &buf(&LayerActs::y, n());
    std::vector<Wkv7Args>& list = g_.ws.wkv_args;
    list.clear();
    for (const Segment& s : g_.segs) {
      const size_t o = size_t(s.row0 * C);
      list.push_back(Wkv7Args{s.rows, H, N, &(*r_)[o], &(*decay_)[o], &(*kf_)[o], &(*vr_)[o],
                              &(*wa_)[o], &(*wb_)[o], s.state->wkv.data() + layer_ * H * N * N,
                              &(*y_)[o]});
    }
    g_.be.wkv7_many(list);
  }

  void gate_and_norm() {
    using A = LayerActs;
    const ModelConfig& c = g_.w.config;
    const int64_t C = c.n_embd, H = c.n_head, N = c.head_size;
    const LayerWeights& L = *L_;
    Buf& yb = keep_ ? buf(&A::yb, n()) : *y_;
    float* gn_stats = keep_ ? buf(&A::gn_stats, size_t(g_.R * H * 2)).data() : nullptr;
    yg_ = keep_ ? &buf(&A::yg, n()) : &yb;
    g_.each_row_range([&](int64_t r0, int64_t r1) {
      const int64_t o = r0 * C, rows = r1 - r0;
      train::norm_forward<float>({rows, C, H, kGroupNormEps, y_->data() + o, L.ln_x_w.data(),
                                  L.ln_x_b.data(), yb.data() + o,
                                  gn_stats ? gn_stats + r0 * H * 2 : nullptr});
      train::bonus_forward<float>({rows, H, N, r_->data() + o, kf_->data() + o, vr_->data() + o,
                                   L.r_k.data(), yb.data() + o});
      train::mul_forward<float>({rows * C, yb.data() + o, g_ptr_->data() + o, yg_->data() + o});
    });
  }

  void time_mix_output() {
    Buf& out = keep_ ? g_.ws.get(n()) : *z_w_;  // z_w is free again unless kept
    g_.be.matmul(MatmulArgs{L_->output, yg_->data(), out.data(), g_.R});
    add_to_x(out);
    if (g_.dropout)
      g_.dropout->apply(x_.data(), g_.R, g_.w.config.n_embd, Dropout::AfterTimeMix, layer_);
  }

  void channel_mix_inputs() {
    using A = LayerActs;
    g_.ws.reset();
    if (keep_) keep_->x_mid = x_;
    xf_ = &buf(&A::xf, n()), xkf_ = &buf(&A::xkf, n());
    g_.layer_norm_rows(x_.data(), L_->ln2_w, L_->ln2_b, xf_->data(),
                       keep_ ? buf(&A::ln2_stats, size_t(g_.R * 2)).data() : nullptr);
    g_.shift_mix(*xf_, layer_, &State::ffn_shift, {{&L_->ffn_x_k, xkf_}});
  }

  void channel_mix_key() {
    const int64_t F = g_.w.config.ffn_dim;
    hidden_ = &buf(&LayerActs::h_pre, size_t(g_.R * F));
    g_.be.matmul(MatmulArgs{L_->ffn_key, xkf_->data(), hidden_->data(), g_.R});
    // relu² (in place unless kept)
    h_ = keep_ ? &buf(&LayerActs::h, size_t(g_.R * F)) : hidden_;
    const PointwiseOps& pw = g_.be.pointwise();
    g_.each_row_range([&](int64_t r0, int64_t r1) {
      const size_t b = size_t(r0 * F), e = size_t(r1 * F);
      if (keep_)
        std::copy(hidden_->begin() + ptrdiff_t(b), hidden_->begin() + ptrdiff_t(e),
                  h_->begin() + ptrdiff_t(b));
      pw.relu_square(&(*h_)[b], e - b);
    });
  }

  void channel_mix_output() {
    Buf& out = keep_ ? g_.ws.get(n()) : *xf_;  // xf is free again unless kept
    g_.be.matmul(MatmulArgs{L_->ffn_value, h_->data(), out.data(), g_.R});
    add_to_x(out);
    if (g_.dropout)
      g_.dropout->apply(x_.data(), g_.R, g_.w.config.n_embd, Dropout::AfterChannelMix, layer_);
  }

 private:
  size_t n() const { return size_t(g_.R * g_.w.config.n_embd); }
  bool residual() const { return layer_ > 0; }  // layer 0's value is v_first itself
  Buf& buf(Buf LayerActs::*field, size_t count) { return g_.buffer(keep_, field, count); }
  void add_to_x(const Buf& out) {
    const int64_t C = g_.w.config.n_embd;
    g_.each_row_range([&](int64_t r0, int64_t r1) {
      for (size_t j = size_t(r0 * C); j < size_t(r1 * C); ++j) x_[j] += out[j];
    });
  }

  const GraphPass& g_;
  Buf& x_;
  Buf& v_first_;
  std::vector<LayerActs>* keep_all_;
  LayerActs* keep_one_;
  int64_t layer_ = 0;
  const LayerWeights* L_ = nullptr;
  LayerActs* keep_ = nullptr;
  // This layer's stage outputs (scratch or kept activations).
  Buf *xa_ = nullptr, *xr_ = nullptr, *xw_ = nullptr, *xk_ = nullptr, *xv_ = nullptr,
      *xa2_ = nullptr, *xg_ = nullptr;
  Buf *r_ = nullptr, *k_ = nullptr, *v_ = nullptr, *low_w_ = nullptr, *low_a_ = nullptr,
      *low_v_ = nullptr, *low_g_ = nullptr;
  Buf *z_w_ = nullptr, *z_a_ = nullptr, *z_v_ = nullptr, *g_ptr_ = nullptr;
  Buf *decay_ = nullptr, *a_ = nullptr, *vr_ = nullptr, *wa_ = nullptr, *wb_ = nullptr,
      *kf_ = nullptr, *y_ = nullptr, *yg_ = nullptr;
  Buf *xf_ = nullptr, *xkf_ = nullptr, *hidden_ = nullptr, *h_ = nullptr;
};

void GraphPass::layers(Buf& x, Buf& v_first, std::vector<LayerActs>* keep) const {
  LayerStages stages(*this, x, v_first, keep);
  run_layers(stages, w.config.n_layer);
}

void GraphPass::layer(int64_t l, Buf& x, Buf& v_first, LayerActs* keep) const {
  LayerStages stages(*this, x, v_first, nullptr, keep);
  run_layer(stages, l);
}

}  // namespace rwkv7
