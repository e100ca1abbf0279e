// The RWKV-7 graph (SPEC §3-4) over a ragged batch: the rows of all sequences of one pass are
// stacked so every weight product is one matrix-matrix call; token shift and WKV run per
// sequence.
#include "model/forward.hpp"

#include <algorithm>
#include <array>
#include <cmath>

#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

constexpr float kLnEps = 1e-5f;
constexpr float kGroupNormEps = 64e-5f;

using Buf = std::vector<float>;
using Workspace = ForwardScratch;

struct Pass {
  const ModelWeights& w;
  const Backend& be;
  const std::vector<Segment>& segs;
  int64_t R;  // rows in this pass
  Workspace& ws;

  void mm(const Matrix& w, const float* x, float* y) const { be.matmul(MatmulArgs{w, x, y, R}); }

  // fn(row) for every row of the pass, rows spread over the backend's threads.
  template <class F>
  void each_row(const F& fn) const {
    be.parallel_rows(R, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) fn(r);
    });
  }

  // prev[row] for the token shift: the carried state for a segment's first row, else row-1.
  // Writes out[r] = x[r] + (prev - x[r]) * mix[c] for every given mix, then updates `carry`.
  void shift_mix(const Buf& x, int64_t layer, std::vector<float> State::*carry,
                 std::initializer_list<std::pair<const std::vector<float>*, Buf*>> mixes) const {
    const int64_t C = w.config.n_embd;
    std::vector<const float*>& prev = ws.prev;
    prev.resize(size_t(R));
    for (const Segment& s : segs) {
      const float* state_row = ((*s.state).*carry).data() + layer * C;
      for (int64_t r = s.row0; r < s.row0 + s.rows; ++r)
        prev[size_t(r)] = r == s.row0 ? state_row : x.data() + (r - 1) * C;
    }
    each_row([&](int64_t r) {
      const float* cur = x.data() + r * C;
      const float* p = prev[size_t(r)];
      for (auto [mix, out] : mixes) {
        float* o = out->data() + r * C;
        const float* mx = mix->data();
        for (int64_t c = 0; c < C; ++c) o[c] = cur[c] + (p[c] - cur[c]) * mx[c];
      }
    });
    for (const Segment& s : segs) {
      float* state_row = ((*s.state).*carry).data() + layer * C;
      std::copy_n(x.data() + (s.row0 + s.rows - 1) * C, C, state_row);
    }
  }

  void time_mix(int64_t layer, Buf& x, Buf& v_first) const {
    const LayerWeights& L = w.layers[size_t(layer)];
    const ModelConfig& c = w.config;
    const PointwiseOps& pw = be.pointwise();
    const int64_t C = c.n_embd, H = c.n_head, N = c.head_size;
    ws.reset();
    const size_t n = size_t(R * C);
    Buf &xa = ws.get(n), &xr = ws.get(n), &xw = ws.get(n), &xk = ws.get(n), &xv = ws.get(n),
        &xa2 = ws.get(n), &xg = ws.get(n);
    each_row([&](int64_t r) {
      layer_norm(&x[size_t(r * C)], L.ln1_w.data(), L.ln1_b.data(), C, kLnEps, &xa[size_t(r * C)]);
    });
    shift_mix(xa, layer, &State::att_shift,
              {{&L.x_r, &xr},
               {&L.x_w, &xw},
               {&L.x_k, &xk},
               {&L.x_v, &xv},
               {&L.x_a, &xa2},
               {&L.x_g, &xg}});

    Buf &r = ws.get(n), &k = ws.get(n), &v = ws.get(n), &decay = ws.get(n), &a = ws.get(n),
        &g = ws.get(n);
    // LoRA hidden rows [R, D] and their outputs [R, C], one buffer each so that all products
    // of a stage are independent (one parallel region when decoding).
    Buf &low_w = ws.get(size_t(R * c.d_decay)), &low_a = ws.get(size_t(R * c.d_aaa)),
        &low_v = ws.get(size_t(R * c.d_value)), &low_g = ws.get(size_t(R * c.d_gate));
    Buf &z_w = ws.get(n), &z_a = ws.get(n), &z_v = ws.get(n);
    auto row = [C](Buf& b, int64_t i) { return b.data() + i * C; };
    const bool residual = layer > 0;  // layer 0's value is v_first itself
    const MatmulArgs first[] = {
        {L.receptance, xr.data(), r.data(), R}, {L.key, xk.data(), k.data(), R},
        {L.value, xv.data(), v.data(), R},      {L.w1.m, xw.data(), low_w.data(), R},
        {L.a1.m, xa2.data(), low_a.data(), R},  {L.g1.m, xg.data(), low_g.data(), R},
        {L.v1.m, xv.data(), low_v.data(), R}};
    be.matmul_many(std::span<const MatmulArgs>(first, residual ? 7 : 6));
    each_row([&](int64_t i) {
      pw.tanh(&low_w[size_t(i * c.d_decay)], size_t(c.d_decay));
      pw.sigmoid(&low_g[size_t(i * c.d_gate)], size_t(c.d_gate));
    });
    const MatmulArgs second[] = {{L.w2.m, low_w.data(), z_w.data(), R},
                                 {L.a2.m, low_a.data(), z_a.data(), R},
                                 {L.g2.m, low_g.data(), g.data(), R},
                                 {L.v2.m, low_v.data(), z_v.data(), R}};
    be.matmul_many(std::span<const MatmulArgs>(second, residual ? 4 : 3));
    // decay = exp(-e^-0.5 · σ(w0 + tanh(xw·w1)·w2)); in-context rate a = σ(a0 + xa·a1·a2);
    // value residual towards layer 0's value: v += (v_first - v) · σ(v0 + xv·v1·v2)
    each_row([&](int64_t i) {
      pw.decay(L.w0.data(), row(z_w, i), row(decay, i), size_t(C));
      pw.sigmoid_bias(L.a0.data(), row(z_a, i), row(a, i), size_t(C));
      if (residual)
        pw.value_residual(L.v0.data(), row(z_v, i), row(v_first, i), row(v, i), size_t(C));
    });
    if (!residual) v_first = v;
    Buf& z = z_w;  // free again: the output product lands here

    // kk = per-head L2-normalised k*k_k; k scaled by the rate; WKV inputs a = -kk, b = kk*a
    Buf &wa = ws.get(n), &wb = ws.get(n);
    each_row([&](int64_t i) {
      for (int64_t h = 0; h < H; ++h) {
        const int64_t o = i * C + h * N;
        double norm = 0;
        for (int64_t j = 0; j < N; ++j) {
          float kk = k[size_t(o + j)] * L.k_k[size_t(h * N + j)];
          wa[size_t(o + j)] = kk;
          norm += double(kk) * kk;
        }
        const float inv = 1.0f / std::max(float(std::sqrt(norm)), 1e-12f);
        for (int64_t j = 0; j < N; ++j) {
          const size_t e = size_t(o + j);
          const float kk = wa[e] * inv;
          wa[e] = -kk;
          wb[e] = kk * a[e];
          k[e] = k[e] * (1.0f + (a[e] - 1.0f) * L.k_a[size_t(h * N + j)]);
        }
      }
    });
    Buf& y = ws.get(n);
    for (const Segment& s : segs) {
      const int64_t o = s.row0 * C;
      be.wkv7(Wkv7Args{s.rows, H, N, &r[size_t(o)], &decay[size_t(o)], &k[size_t(o)], &v[size_t(o)],
                       &wa[size_t(o)], &wb[size_t(o)], s.state->wkv.data() + layer * H * N * N,
                       &y[size_t(o)]});
    }
    each_row([&](int64_t i) {
      float* yr = row(y, i);
      group_norm(yr, L.ln_x_w.data(), L.ln_x_b.data(), C, H, kGroupNormEps, yr);
      for (int64_t h = 0; h < H; ++h) {
        const int64_t o = i * C + h * N;
        float bonus = 0;
        for (int64_t j = 0; j < N; ++j)
          bonus += r[size_t(o + j)] * k[size_t(o + j)] * L.r_k[size_t(h * N + j)];
        for (int64_t j = 0; j < N; ++j) yr[h * N + j] += bonus * v[size_t(o + j)];
      }
      const float* gr = row(g, i);
      for (int64_t j = 0; j < C; ++j) yr[j] *= gr[j];
    });
    mm(L.output, y.data(), z.data());
    each_row([&](int64_t i) {
      float* xr_ = row(x, i);
      const float* zr = row(z, i);
      for (int64_t j = 0; j < C; ++j) xr_[j] += zr[j];
    });
  }

  void channel_mix(int64_t layer, Buf& x) const {
    const LayerWeights& L = w.layers[size_t(layer)];
    const int64_t C = w.config.n_embd, F = w.config.ffn_dim;
    ws.reset();
    Buf &xf = ws.get(size_t(R * C)), &xk = ws.get(size_t(R * C));
    each_row([&](int64_t r) {
      layer_norm(&x[size_t(r * C)], L.ln2_w.data(), L.ln2_b.data(), C, kLnEps, &xf[size_t(r * C)]);
    });
    shift_mix(xf, layer, &State::ffn_shift, {{&L.ffn_x_k, &xk}});
    Buf& hidden = ws.get(size_t(R * F));
    mm(L.ffn_key, xk.data(), hidden.data());
    const PointwiseOps& pw = be.pointwise();
    each_row([&](int64_t r) { pw.relu_square(&hidden[size_t(r * F)], size_t(F)); });
    mm(L.ffn_value, hidden.data(), xf.data());
    each_row([&](int64_t r) {
      for (int64_t j = r * C; j < (r + 1) * C; ++j) x[size_t(j)] += xf[size_t(j)];
    });
  }
};

}  // namespace

void check_state(const State& s, const ModelConfig& c, const std::string& fingerprint) {
  if (s.n_layer != c.n_layer || s.n_embd != c.n_embd || s.n_head != c.n_head ||
      s.head_size != c.head_size || s.att_shift.size() != size_t(c.n_layer * c.n_embd) ||
      s.ffn_shift.size() != size_t(c.n_layer * c.n_embd) ||
      s.wkv.size() != size_t(c.n_layer * c.n_head * c.head_size * c.head_size)) {
    throw Error("state does not fit this model (state L" + std::to_string(s.n_layer) + " C" +
                std::to_string(s.n_embd) + " H" + std::to_string(s.n_head) + " N" +
                std::to_string(s.head_size) + ", model " + c.shape_string() + ")");
  }
  if (!s.model_fingerprint.empty() && s.model_fingerprint != fingerprint) {
    throw Error("state belongs to other weights of the same shape (state fingerprint " +
                s.model_fingerprint + ", model " + fingerprint + ")");
  }
}

void run_forward(const ModelWeights& w, const Backend& be, int64_t chunk, ForwardScratch& ws,
                 std::span<SequenceRequest> batch) {
  const ModelConfig& c = w.config;
  const int64_t C = c.n_embd, V = c.vocab_size;
  for (size_t b = 0; b < batch.size(); ++b) {
    const SequenceRequest& q = batch[b];
    if (!q.state) throw Error("forward: a sequence has no state");
    for (size_t other = 0; other < b; ++other) {
      if (batch[other].state == q.state) {
        throw Error("forward: sequences " + std::to_string(other) + " and " + std::to_string(b) +
                    " of the batch share one State (each sequence needs its own)");
      }
    }
    check_state(*q.state, c, w.fingerprint);
    for (size_t i = 0; i < q.tokens.size(); ++i) {
      if (q.tokens[i] < 0 || q.tokens[i] >= V) {
        throw Error("token " + std::to_string(q.tokens[i]) + " at position " + std::to_string(i) +
                    " is outside the vocabulary [0, " + std::to_string(V) + ")");
      }
    }
    if (q.logits != Logits::None && !q.logits_out)
      throw Error("forward: logits requested but no output");
    if (q.logits == Logits::Last && q.tokens.empty())
      throw Error("forward: logits of an empty sequence");
    if (q.logits_out) {
      q.logits_out->assign(size_t((q.logits == Logits::All ? q.tokens.size() : 1) * V), 0.0f);
      if (q.logits == Logits::None) q.logits_out->clear();
    }
  }
  std::vector<size_t>& done = ws.done;
  done.assign(batch.size(), 0);
  Buf &x = ws.x, &v_first = ws.v_first;
  for (;;) {
    std::vector<Segment>& segs = ws.segs;
    std::vector<size_t>& seq_of_seg = ws.seq_of_seg;
    segs.clear();
    seq_of_seg.clear();
    int64_t R = 0;
    for (size_t b = 0; b < batch.size(); ++b) {
      const int64_t n = std::min<int64_t>(chunk, int64_t(batch[b].tokens.size() - done[b]));
      if (n <= 0) continue;
      segs.push_back(Segment{batch[b].state, R, n});
      seq_of_seg.push_back(b);
      R += n;
    }
    if (R == 0) break;
    x.resize(size_t(R * C));
    for (size_t s = 0; s < segs.size(); ++s) {
      const SequenceRequest& q = batch[seq_of_seg[s]];
      for (int64_t i = 0; i < segs[s].rows; ++i) {
        float* row = &x[size_t((segs[s].row0 + i) * C)];
        const int32_t tok = q.tokens[done[seq_of_seg[s]] + size_t(i)];
        for (int64_t j = 0; j < C; ++j)
          row[j] = load_as_f32(w.emb.dtype, w.emb.data, size_t(tok * C + j));
        layer_norm(row, w.ln0_w.data(), w.ln0_b.data(), C, kLnEps, row);
      }
    }
    Pass pass{w, be, segs, R, ws};
    for (int64_t l = 0; l < c.n_layer; ++l) {
      pass.time_mix(l, x, v_first);
      pass.channel_mix(l, x);
    }
    // Head only on the rows whose logits were asked for.
    std::vector<std::pair<size_t, int64_t>>& wanted = ws.wanted;  // (segment, row within it)
    wanted.clear();
    for (size_t s = 0; s < segs.size(); ++s) {
      const SequenceRequest& q = batch[seq_of_seg[s]];
      const bool last_pass = done[seq_of_seg[s]] + size_t(segs[s].rows) == q.tokens.size();
      if (q.logits == Logits::All) {
        for (int64_t i = 0; i < segs[s].rows; ++i) wanted.emplace_back(s, i);
      } else if (q.logits == Logits::Last && last_pass) {
        wanted.emplace_back(s, segs[s].rows - 1);
      }
    }
    if (!wanted.empty()) {
      Buf &normed = ws.normed, &logits = ws.logits;
      normed.resize(wanted.size() * size_t(C));
      logits.resize(wanted.size() * size_t(V));
      for (size_t i = 0; i < wanted.size(); ++i) {
        layer_norm(&x[size_t((segs[wanted[i].first].row0 + wanted[i].second) * C)],
                   w.ln_out_w.data(), w.ln_out_b.data(), C, kLnEps, &normed[i * size_t(C)]);
      }
      be.matmul(MatmulArgs{w.head, normed.data(), logits.data(), int64_t(wanted.size())});
      for (size_t i = 0; i < wanted.size(); ++i) {
        const size_t b = seq_of_seg[wanted[i].first];
        const SequenceRequest& q = batch[b];
        const size_t pos = q.logits == Logits::All ? done[b] + size_t(wanted[i].second) : 0;
        std::copy_n(&logits[i * size_t(V)], V, q.logits_out->data() + pos * size_t(V));
      }
    }
    for (size_t s = 0; s < segs.size(); ++s) {
      done[seq_of_seg[s]] += size_t(segs[s].rows);
      segs[s].state->tokens_consumed += segs[s].rows;
    }
  }
}

}  // namespace rwkv7
