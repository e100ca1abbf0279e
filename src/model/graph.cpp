// The RWKV-7 graph (SPEC §3-4): the rows of all sequences of one pass are stacked so every
// weight product is one matrix-matrix call; token shift and WKV run per sequence. The ops are
// those of src/ops (forward and backward side by side), maps on the backend's SIMD table.
#include "model/graph.hpp"

#include <algorithm>

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

void GraphPass::time_mix(int64_t layer, Buf& x, Buf& v_first, LayerActs* keep) const {
  const LayerWeights& L = w.layers[size_t(layer)];
  const ModelConfig& c = w.config;
  const PointwiseOps& pw = be.pointwise();
  const int64_t C = c.n_embd, H = c.n_head, N = c.head_size;
  using A = LayerActs;
  ws.reset();
  const size_t n = size_t(R * C);
  if (keep) keep->x_in = x;
  Buf& xa = buffer(keep, &A::xa, n);
  layer_norm_rows(x.data(), L.ln1_w, L.ln1_b, xa.data(),
                  keep ? buffer(keep, &A::ln1_stats, size_t(R * 2)).data() : nullptr);
  Buf &xr = buffer(keep, &A::xr, n), &xw = buffer(keep, &A::xw, n), &xk = buffer(keep, &A::xk, n),
      &xv = buffer(keep, &A::xv, n), &xa2 = buffer(keep, &A::xa2, n), &xg = buffer(keep, &A::xg, n);
  shift_mix(
      xa, layer, &State::att_shift,
      {{&L.x_r, &xr}, {&L.x_w, &xw}, {&L.x_k, &xk}, {&L.x_v, &xv}, {&L.x_a, &xa2}, {&L.x_g, &xg}});

  Buf &r = buffer(keep, &A::r, n), &k = buffer(keep, &A::k, n), &v = buffer(keep, &A::v_raw, n),
      &decay = buffer(keep, &A::decay, n), &a = buffer(keep, &A::a, n), &g = buffer(keep, &A::g, n);
  // LoRA hidden rows [R, D] and their outputs [R, C], one buffer each so that all products
  // of a stage are independent (one parallel region when decoding).
  Buf &low_w = buffer(keep, &A::w_low, size_t(R * c.d_decay)),
      &low_a = buffer(keep, &A::a_low, size_t(R * c.d_aaa)),
      &low_v = buffer(keep, &A::v_low, size_t(R * c.d_value)),
      &low_g = buffer(keep, &A::g_low, size_t(R * c.d_gate));
  Buf &z_w = buffer(keep, &A::wz, n), &z_a = buffer(keep, &A::az, n),
      &z_v = buffer(keep, &A::vz, n);
  auto row = [C](Buf& b, int64_t i) { return b.data() + i * C; };
  const bool residual = layer > 0;  // layer 0's value is v_first itself
  const MatmulArgs first[] = {
      {L.receptance, xr.data(), r.data(), R}, {L.key, xk.data(), k.data(), R},
      {L.value, xv.data(), v.data(), R},      {L.w1.m, xw.data(), low_w.data(), R},
      {L.a1.m, xa2.data(), low_a.data(), R},  {L.g1.m, xg.data(), low_g.data(), R},
      {L.v1.m, xv.data(), low_v.data(), R}};
  be.matmul_many(std::span<const MatmulArgs>(first, residual ? 7 : 6));
  // In place: the backward of tanh and σ reads their outputs only.
  each_row_range([&](int64_t r0, int64_t r1) {
    pw.tanh(&low_w[size_t(r0 * c.d_decay)], size_t((r1 - r0) * c.d_decay));
    pw.sigmoid(&low_g[size_t(r0 * c.d_gate)], size_t((r1 - r0) * c.d_gate));
  });
  const MatmulArgs second[] = {{L.w2.m, low_w.data(), z_w.data(), R},
                               {L.a2.m, low_a.data(), z_a.data(), R},
                               {L.g2.m, low_g.data(), g.data(), R},
                               {L.v2.m, low_v.data(), z_v.data(), R}};
  be.matmul_many(std::span<const MatmulArgs>(second, residual ? 4 : 3));
  // decay = exp(-e^-0.5 · σ(w0 + tanh(xw·w1)·w2)); in-context rate a = σ(a0 + xa·a1·a2);
  // value residual towards layer 0's value: v += (v_first - v) · σ(v0 + xv·v1·v2)
  Buf& vr = keep ? buffer(keep, &A::v, n) : v;  // the value after the residual
  each_row_range([&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      pw.decay(L.w0.data(), row(z_w, i), row(decay, i), size_t(C));
      pw.sigmoid_bias(L.a0.data(), row(z_a, i), row(a, i), size_t(C));
      if (keep) std::copy_n(row(v, i), C, row(vr, i));
      if (residual)
        pw.value_residual(L.v0.data(), row(z_v, i), row(v_first, i), row(vr, i), size_t(C));
    }
  });
  if (!residual) v_first = vr;

  // kk = per-head L2-normalised k*k_k; k scaled by the rate (in place unless kept); WKV
  // inputs a = -kk, b = kk*a
  Buf &wa = buffer(keep, &A::wa, n), &wb = buffer(keep, &A::wb, n);
  Buf& kf = keep ? buffer(keep, &A::kf, n) : k;
  each_row_range([&](int64_t r0, int64_t r1) {
    const int64_t o = r0 * C;
    train::wkv_inputs_forward<float>({r1 - r0, H, N, k.data() + o, a.data() + o, L.k_k.data(),
                                      L.k_a.data(), wa.data() + o, wb.data() + o, kf.data() + o});
  });
  Buf& y = buffer(keep, &A::y, n);
  for (const Segment& s : segs) {
    const int64_t o = s.row0 * C;
    be.wkv7(Wkv7Args{s.rows, H, N, &r[size_t(o)], &decay[size_t(o)], &kf[size_t(o)], &vr[size_t(o)],
                     &wa[size_t(o)], &wb[size_t(o)], s.state->wkv.data() + layer * H * N * N,
                     &y[size_t(o)]});
  }
  // GroupNorm per head, plus the bonus (r·(k*r_k))·v, times the gate
  Buf& yb = keep ? buffer(keep, &A::yb, n) : y;
  float* gn_stats = keep ? buffer(keep, &A::gn_stats, size_t(R * H * 2)).data() : nullptr;
  Buf& yg = keep ? buffer(keep, &A::yg, n) : yb;
  each_row_range([&](int64_t r0, int64_t r1) {
    const int64_t o = r0 * C, rows = r1 - r0;
    train::norm_forward<float>({rows, C, H, kGroupNormEps, y.data() + o, L.ln_x_w.data(),
                                L.ln_x_b.data(), yb.data() + o,
                                gn_stats ? gn_stats + r0 * H * 2 : nullptr});
    train::bonus_forward<float>(
        {rows, H, N, r.data() + o, kf.data() + o, vr.data() + o, L.r_k.data(), yb.data() + o});
    train::mul_forward<float>({rows * C, yb.data() + o, g.data() + o, yg.data() + o});
  });
  Buf& out = keep ? ws.get(n) : z_w;  // z_w is free again unless kept
  be.matmul(MatmulArgs{L.output, yg.data(), out.data(), R});
  each_row_range([&](int64_t r0, int64_t r1) {
    for (size_t j = size_t(r0 * C); j < size_t(r1 * C); ++j) x[j] += out[j];
  });
}

void GraphPass::channel_mix(int64_t layer, Buf& x, LayerActs* keep) const {
  const LayerWeights& L = w.layers[size_t(layer)];
  const int64_t C = w.config.n_embd, F = w.config.ffn_dim;
  using A = LayerActs;
  ws.reset();
  if (keep) keep->x_mid = x;
  Buf &xf = buffer(keep, &A::xf, size_t(R * C)), &xk = buffer(keep, &A::xkf, size_t(R * C));
  layer_norm_rows(x.data(), L.ln2_w, L.ln2_b, xf.data(),
                  keep ? buffer(keep, &A::ln2_stats, size_t(R * 2)).data() : nullptr);
  shift_mix(xf, layer, &State::ffn_shift, {{&L.ffn_x_k, &xk}});
  Buf& hidden = buffer(keep, &A::h_pre, size_t(R * F));
  be.matmul(MatmulArgs{L.ffn_key, xk.data(), hidden.data(), R});
  Buf& h = keep ? buffer(keep, &A::h, size_t(R * F)) : hidden;  // relu² (in place unless kept)
  const PointwiseOps& pw = be.pointwise();
  each_row_range([&](int64_t r0, int64_t r1) {
    const size_t b = size_t(r0 * F), e = size_t(r1 * F);
    if (keep)
      std::copy(hidden.begin() + ptrdiff_t(b), hidden.begin() + ptrdiff_t(e),
                h.begin() + ptrdiff_t(b));
    pw.relu_square(&h[b], e - b);
  });
  Buf& out = keep ? ws.get(size_t(R * C)) : xf;  // xf is free again unless kept
  be.matmul(MatmulArgs{L.ffn_value, h.data(), out.data(), R});
  each_row_range([&](int64_t r0, int64_t r1) {
    for (size_t j = size_t(r0 * C); j < size_t(r1 * C); ++j) x[j] += out[j];
  });
}

void GraphPass::layers(Buf& x, Buf& v_first, std::vector<LayerActs>* keep) const {
  for (int64_t l = 0; l < w.config.n_layer; ++l) {
    LayerActs* k = keep ? &(*keep)[size_t(l)] : nullptr;
    time_mix(l, x, v_first, k);
    channel_mix(l, x, k);
  }
}

}  // namespace rwkv7
