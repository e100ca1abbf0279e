// Exact backward of the RWKV-7 training graph (train_forward.cpp), layer by layer in reverse.
// `dx` is always the gradient w.r.t. the residual stream at the current point.
#include "model/backward.hpp"

#include <algorithm>
#include <cmath>
#include <functional>

#include "core/thread_pool.hpp"
#include "model/graph.hpp"
#include "model/train_internal.hpp"
#include "ops/backward_ops.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::train {

using detail::Acts;
using detail::Buf;
using detail::LayerActs;
using detail::Products;
using detail::ProductWeight;
using detail::WeightGrad;

namespace {

constexpr size_t kNameMax = 160;

// Acts::grad_slots' order (std::less: a total order over pointers to different tensors).
bool slot_before(const Acts::GradSlot& s, float* data) { return std::less<float*>{}(s.data, data); }

// The slot of the gradient at `data` when nothing filled it yet in this call (it counts as
// filled from now), else null.
const Acts::GradSlot* take_untouched(Acts& A, float* data) {
  auto it = std::lower_bound(A.grad_slots.begin(), A.grad_slots.end(), data, slot_before);
  if (it == A.grad_slots.end() || it->data != data || !it->untouched) return nullptr;
  it->untouched = false;
  return &*it;
}

// data[0, count) = 0, the big ones (head, embedding) over the pool.
void zero_floats(float* data, int64_t count, ThreadPool* pool) {
  constexpr int64_t kMinPart = 1 << 16;
  if (pool && count >= 2 * kMinPart) {
    pool->parallel_for(count, kMinPart,
                       [&](int64_t i0, int64_t i1) { std::fill(data + i0, data + i1, 0.0f); });
  } else {
    std::fill(data, data + count, 0.0f);
  }
}

std::string_view join(char (&buf)[kNameMax], std::string_view a, std::string_view b) {
  if (a.size() + b.size() > kNameMax) throw Error("parameter name too long: " + std::string(a));
  std::copy(a.begin(), a.end(), buf);
  std::copy(b.begin(), b.end(), buf + a.size());
  return std::string_view(buf, a.size() + b.size());
}

struct Backward {
  const TrainParams& p;
  const Products& mm;
  ThreadPool* pool;
  const GradOptions& opts;
  Acts& A;
  Gradients& grads;

  Buf& zeros(size_t n) const { return A.zeros(n); }

  // prefix + suffix looked up through a stack buffer: no std::string per use.
  const float* P(std::string_view a, std::string_view b = {}) const {
    char buf[kNameMax];
    return p.get(join(buf, a, b));
  }
  // A product's weight: P(a, b) and its kept bf16 copy, if any.
  ProductWeight W(std::string_view a, std::string_view b = {}) const {
    char buf[kNameMax];
    const std::string_view name = join(buf, a, b);
    return {p.get(name), p.bf16_of(name)};
  }
  // The gradient of a product's weight (written by the product when it is the first to fill
  // it), or null when GradOptions::frozen says it is not wanted (the product then skips
  // computing it; finish_gradients zeroes its tensor).
  WeightGrad GW(std::string_view a, std::string_view b = {}) const {
    if (opts.frozen) {
      char buf[kNameMax];
      if ((*opts.frozen)(join(buf, a, b))) return {};
    }
    float* g = find(a, b);
    return {g, take_untouched(A, g) != nullptr};
  }
  // The gradient an op adds to (zeroed first if nothing was added to it yet).
  float* G(std::string_view a, std::string_view b = {}) const {
    float* g = find(a, b);
    if (const Acts::GradSlot* slot = take_untouched(A, g)) zero_floats(g, slot->count, pool);
    return g;
  }
  float* find(std::string_view a, std::string_view b) const {
    char buf[kNameMax];
    const std::string_view key = join(buf, a, b);
    auto it = grads.find(key);
    if (it == grads.end()) throw Error("gradient: no buffer for '" + std::string(key) + "'");
    return it->second.data.data();
  }

  // A parameter's gradient an op sums over the rows: where it goes (null: not wanted), length.
  struct RowSum {
    float* out;
    int64_t n;
  };
  static constexpr int64_t kMinRowsPerPart = 16;

  // Runs fn(part, r0, r1, sums) over row ranges covering [0, R) in parallel on the pool. An op
  // that sums parameter gradients over its rows writes them into zeroed per-part copies
  // (`sums[i]`, null where RowSum::out is), added to the real ones afterwards in part order:
  // the result depends on the pool's size, not on timing.
  void rows(int64_t R, std::initializer_list<RowSum> sums,
            FunctionRef<void(int, int64_t, int64_t, float* const*)> fn) const {
    constexpr size_t kMaxSums = 2;
    float* outs[kMaxSums] = {};
    const int parts = pool ? pool->size() : 1;
    if (parts == 1 || R < 2 * kMinRowsPerPart) {
      size_t i = 0;
      for (const RowSum& s : sums) outs[i++] = s.out;
      fn(0, 0, R, outs);
      return;
    }
    size_t total = 0;
    for (const RowSum& s : sums) total += s.out ? size_t(s.n) : 0;
    A.part_sums.resize(size_t(parts));
    for (Buf& b : A.part_sums) b.assign(total, 0.0f);
    pool->parallel_parts(R, kMinRowsPerPart, [&](int part, int64_t r0, int64_t r1) {
      float* mine[kMaxSums] = {};
      size_t i = 0, off = 0;
      for (const RowSum& s : sums) {
        if (s.out) mine[i] = A.part_sums[size_t(part)].data() + off, off += size_t(s.n);
        ++i;
      }
      fn(part, r0, r1, mine);
    });
    for (const Buf& b : A.part_sums) {
      size_t off = 0;
      for (const RowSum& s : sums) {
        if (!s.out) continue;
        for (int64_t j = 0; j < s.n; ++j) s.out[j] += b[off + size_t(j)];
        off += size_t(s.n);
      }
    }
  }

  // The row-wise backward ops of ops/backward_ops.hpp, their rows split over the pool.
  template <class T>
  static T* at_row(T* p, int64_t r0, int64_t width) {
    return p ? p + r0 * width : nullptr;
  }
  void act_back(const ActArgs<float>& a, int64_t R) const {  // a.n = R × width
    const int64_t w = a.n / R;
    rows(R, {}, [&](int, int64_t r0, int64_t r1, float* const*) {
      act_backward<float>({(r1 - r0) * w, a.act, at_row(a.x, r0, w), at_row(a.y, r0, w),
                           at_row(a.dy, r0, w), at_row(a.dx, r0, w)});
    });
  }
  void mul_back(const MulArgs<float>& a, int64_t R) const {  // a.n = R × width
    const int64_t w = a.n / R;
    rows(R, {}, [&](int, int64_t r0, int64_t r1, float* const*) {
      mul_backward<float>({(r1 - r0) * w, at_row(a.p, r0, w), at_row(a.q, r0, w),
                           at_row(a.y, r0, w), at_row(a.dy, r0, w), at_row(a.dp, r0, w),
                           at_row(a.dq, r0, w)});
    });
  }
  void norm_back(const NormArgs<float>& a) const {
    rows(a.R, {{a.dw, a.n}, {a.db, a.n}}, [&](int, int64_t r0, int64_t r1, float* const* s) {
      NormArgs<float> q = a;
      q.R = r1 - r0, q.x = at_row(a.x, r0, a.n), q.y = at_row(a.y, r0, a.n);
      q.stats = at_row(a.stats, r0, 2 * a.groups), q.dy = at_row(a.dy, r0, a.n);
      q.dx = at_row(a.dx, r0, a.n), q.dw = s[0], q.db = s[1];
      norm_backward<float>(q);
    });
  }
  void bias_sigmoid_back(const BiasSigmoidArgs<float>& a) const {
    rows(a.R, {{a.dbias, a.C}}, [&](int, int64_t r0, int64_t r1, float* const* s) {
      BiasSigmoidArgs<float> q = a;
      q.R = r1 - r0, q.z = at_row(a.z, r0, a.C), q.y = at_row(a.y, r0, a.C);
      q.dy = at_row(a.dy, r0, a.C), q.dz = at_row(a.dz, r0, a.C), q.dbias = s[0];
      bias_sigmoid_backward<float>(q);
    });
  }
  void value_residual_back(const ValueResidualArgs<float>& a) const {
    rows(a.R, {{a.dv0, a.C}}, [&](int, int64_t r0, int64_t r1, float* const* s) {
      ValueResidualArgs<float> q = a;
      q.R = r1 - r0, q.v = at_row(a.v, r0, a.C), q.v_first = at_row(a.v_first, r0, a.C);
      q.z = at_row(a.z, r0, a.C), q.y = at_row(a.y, r0, a.C), q.dy = at_row(a.dy, r0, a.C);
      q.dv = at_row(a.dv, r0, a.C), q.dv_first = at_row(a.dv_first, r0, a.C);
      q.dz = at_row(a.dz, r0, a.C), q.dv0 = s[0];
      value_residual_backward<float>(q);
    });
  }
  void wkv_inputs_back(const WkvInputsArgs<float>& a) const {
    const int64_t C = a.H * a.N;
    rows(a.R, {{a.dk_k, C}, {a.dk_a, C}}, [&](int, int64_t r0, int64_t r1, float* const* s) {
      WkvInputsArgs<float> q = a;
      q.R = r1 - r0, q.k = at_row(a.k, r0, C), q.a = at_row(a.a, r0, C);
      q.wa = at_row(a.wa, r0, C), q.wb = at_row(a.wb, r0, C), q.k_out = at_row(a.k_out, r0, C);
      q.dwa = at_row(a.dwa, r0, C), q.dwb = at_row(a.dwb, r0, C);
      q.dk_out = at_row(a.dk_out, r0, C), q.dk = at_row(a.dk, r0, C);
      q.da = at_row(a.da, r0, C), q.dk_k = s[0], q.dk_a = s[1];
      wkv_inputs_backward<float>(q);
    });
  }
  void bonus_back(const BonusArgs<float>& a) const {
    const int64_t C = a.H * a.N;
    rows(a.R, {{a.dr_k, C}}, [&](int, int64_t r0, int64_t r1, float* const* s) {
      BonusArgs<float> q = a;
      q.R = r1 - r0, q.r = at_row(a.r, r0, C), q.k = at_row(a.k, r0, C);
      q.v = at_row(a.v, r0, C), q.y = at_row(a.y, r0, C), q.dy = at_row(a.dy, r0, C);
      q.dr = at_row(a.dr, r0, C), q.dk = at_row(a.dk, r0, C), q.dv = at_row(a.dv, r0, C);
      q.dr_k = s[0];
      bonus_backward<float>(q);
    });
  }
  // The token shift couples each row to the one before it: a range that starts inside a
  // sequence reads that row as its prev0, and the gradient for it goes to a per-part buffer,
  // added to dx after the parallel region (rows of one range never touch another's).
  void shift_mix_back(const ShiftMixArgs<float>& a) const {
    const int64_t S = a.S, C = a.C;
    const int parts = pool ? pool->size() : 1;
    A.part_edges.resize(size_t(parts));
    A.part_edge_rows.assign(size_t(parts), -1);
    rows(a.B * S, {{a.dmix, C}}, [&](int part, int64_t r0, int64_t r1, float* const* s) {
      for (int64_t r = r0; r < r1;) {
        const int64_t b = r / S, end = std::min(r1, (b + 1) * S);
        const float* prev0 = at_row(a.prev0, b, C);
        float* dprev0 = at_row(a.dprev0, b, C);
        if (r % S != 0) {  // the range's first row, inside sequence b
          prev0 = a.x + (r - 1) * C;
          dprev0 = nullptr;
          if (a.dx) {
            Buf& edge = A.part_edges[size_t(part)];
            edge.assign(size_t(C), 0.0f);
            A.part_edge_rows[size_t(part)] = r - 1;
            dprev0 = edge.data();
          }
        }
        shift_mix_backward<float>({1, end - r, C, a.x + r * C, prev0, a.mix, nullptr,
                                   at_row(a.dy, r, C), at_row(a.dx, r, C), s[0], dprev0});
        r = end;
      }
    });
    for (size_t part = 0; part < size_t(parts); ++part) {
      const int64_t row = A.part_edge_rows[part];
      if (row < 0) continue;
      const Buf& edge = A.part_edges[part];
      for (int64_t j = 0; j < C; ++j) a.dx[row * C + j] += edge[size_t(j)];
    }
  }

  // Gradients w.r.t. the state after the pass (null: none, the last segment or truncated
  // BPTT) and, accumulated, before it (null: not wanted).
  const std::vector<State>* d_final;
  std::vector<State>* d_initial;

  // Layer l's token-shift rows of the states before the pass, gathered [B, C] (the shift's
  // prev at each row's first position).
  const float* initial_shift_rows(int64_t l, std::vector<float> State::*field) const {
    const int64_t C = p.config.n_embd;
    A.shift_prev.resize(size_t(A.B * C));
    for (int64_t b = 0; b < A.B; ++b)
      std::copy_n((A.initial[size_t(b)].*field).data() + l * C, C, &A.shift_prev[size_t(b * C)]);
    return A.shift_prev.data();
  }
  // A zeroed [B, C] buffer for the shift backward's dprev0, or null when no d_initial.
  float* initial_shift_grads() const {
    if (!d_initial) return nullptr;
    A.shift_dprev.assign(size_t(A.B * p.config.n_embd), 0.0f);
    return A.shift_dprev.data();
  }
  // The state's shift row of layer l is the normed input at each row's last position: its
  // gradient joins that position's; the gathered dprev0 goes to d_initial.
  void shift_state_grads(int64_t l, std::vector<float> State::*field, float* d_normed,
                         const float* dprev0) const {
    const int64_t C = p.config.n_embd;
    for (int64_t b = 0; b < A.B; ++b) {
      if (d_final) {
        const float* g = ((*d_final)[size_t(b)].*field).data() + l * C;
        float* d = d_normed + ((b + 1) * A.T - 1) * C;
        for (int64_t j = 0; j < C; ++j) d[j] += g[j];
      }
      if (dprev0) {
        float* g = ((*d_initial)[size_t(b)].*field).data() + l * C;
        for (int64_t j = 0; j < C; ++j) g[j] += dprev0[b * C + j];
      }
    }
  }

  void channel_mix(int64_t l, const LayerActs& L, Buf& dx) const {
    const ModelConfig& c = p.config;
    const int64_t R = A.R, C = c.n_embd, F = c.ffn_dim;
    const std::string pf = "blocks." + std::to_string(l) + ".";
    A.scratch_next = 0;
    // dx: w.r.t. the stream after this layer's dropout; from here on, before it.
    A.dropout.apply(dx.data(), R, C, Dropout::AfterChannelMix, l);
    Buf &dh = zeros(size_t(R * F)), &dh_pre = zeros(size_t(R * F)), &dxkf = zeros(size_t(R * C)),
        &dxf = zeros(size_t(R * C));
    mm.linear_back(L.h.data(), W(pf, "ffn.value.weight"), dx.data(), R, F, C, dh.data(),
                   GW(pf, "ffn.value.weight"));
    act_back({R * F, Act::ReluSq, L.h_pre.data(), nullptr, dh.data(), dh_pre.data()}, R);
    mm.linear_back(L.xkf.data(), W(pf, "ffn.key.weight"), dh_pre.data(), R, C, F, dxkf.data(),
                   GW(pf, "ffn.key.weight"));
    const float* prev0 = initial_shift_rows(l, &State::ffn_shift);
    float* dprev0 = initial_shift_grads();
    shift_mix_back({A.B, A.T, C, L.xf.data(), prev0, P(pf, "ffn.x_k"), nullptr, dxkf.data(),
                    dxf.data(), G(pf, "ffn.x_k"), dprev0});
    shift_state_grads(l, &State::ffn_shift, dxf.data(), dprev0);
    norm_back({R, C, 1, kLnEps, L.x_mid.data(), P(pf, "ln2.weight"), P(pf, "ln2.bias"), nullptr,
               const_cast<float*>(L.ln2_stats.data()), dxf.data(), dx.data(), G(pf, "ln2.weight"),
               G(pf, "ln2.bias")});
  }

  // dv_first: gradient w.r.t. layer 0's value, accumulated by layers >= 1.
  void time_mix(int64_t l, const LayerActs& L, Buf& dx, Buf& dv_first) const {
    const ModelConfig& c = p.config;
    const int64_t R = A.R, C = c.n_embd, H = c.n_head, N = c.head_size;
    const size_t RC = size_t(R * C);
    const std::string at = "blocks." + std::to_string(l) + ".att.";
    const std::string pf = "blocks." + std::to_string(l) + ".";
    A.scratch_next = 0;
    A.dropout.apply(dx.data(), R, C, Dropout::AfterTimeMix, l);  // as in channel_mix

    Buf &dyg = zeros(RC), &dyb = zeros(RC), &dg = zeros(RC);
    mm.linear_back(L.yg.data(), W(at, "output.weight"), dx.data(), R, C, C, dyg.data(),
                   GW(at, "output.weight"));
    mul_back({R * C, L.yb.data(), L.g.data(), nullptr, dyg.data(), dyb.data(), dg.data()}, R);
    // gate: g = σ(xg·g1)·g2
    Buf &dxg = zeros(RC), &dg_low = zeros(size_t(R * c.d_gate)),
        &dg_pre = zeros(size_t(R * c.d_gate));
    mm.lora_back(L.g_low.data(), P(at, "g2"), dg.data(), R, c.d_gate, C, dg_low.data(),
                 GW(at, "g2"));
    act_back({R * c.d_gate, Act::Sigmoid, nullptr, const_cast<float*>(L.g_low.data()),
              dg_low.data(), dg_pre.data()},
             R);
    mm.lora_back(L.xg.data(), P(at, "g1"), dg_pre.data(), R, C, c.d_gate, dxg.data(), GW(at, "g1"));

    // yb = GroupNorm(y) + bonus(r, kf, v)
    Buf &dr = zeros(RC), &dkf = zeros(RC), &dv = zeros(RC), &dy = zeros(RC);
    bonus_back({R, H, N, L.r.data(), L.kf.data(), L.v.data(), P(at, "r_k"), nullptr, dyb.data(),
                dr.data(), dkf.data(), dv.data(), G(at, "r_k")});
    norm_back({R, C, H, kGroupNormEps, L.y.data(), P(at, "ln_x.weight"), P(at, "ln_x.bias"),
               nullptr, const_cast<float*>(L.gn_stats.data()), dyb.data(), dy.data(),
               G(at, "ln_x.weight"), G(at, "ln_x.bias")});
    // WKV, every (sequence, head) in parallel, each from its row's state before the pass
    Buf &ddecay = zeros(RC), &dwa = zeros(RC), &dwb = zeros(RC);
    const int64_t HNN = H * N * N;
    std::vector<Wkv7TrainArgs<float>>& wkv = A.wkv_backward_args;
    wkv.clear();
    for (int64_t b = 0; b < A.B; ++b) {
      const size_t o = size_t(b * A.T * C);
      const float* s0 = A.initial[size_t(b)].wkv.data() + l * HNN;
      Wkv7TrainArgs<float> w{A.T,      H,       N,        &L.r[o],  &L.decay[o],
                             &L.kf[o], &L.v[o], &L.wa[o], &L.wb[o], s0};
      if (d_final) w.ds_final = (*d_final)[size_t(b)].wkv.data() + l * HNN;
      if (d_initial) w.ds0 = (*d_initial)[size_t(b)].wkv.data() + l * HNN;
      w.dy = &dy[o];
      w.dr = &dr[o];
      w.ddecay = &ddecay[o];
      w.dk = &dkf[o];
      w.dv = &dv[o];
      w.da = &dwa[o];
      w.db = &dwb[o];
      w.checkpoint = opts.wkv_checkpoint;
      wkv.push_back(w);
    }
    mm.be.wkv7_backward(wkv);
    Buf &dk = zeros(RC), &da = zeros(RC);
    wkv_inputs_back({R, H, N, L.k.data(), L.a.data(), P(at, "k_k"), P(at, "k_a"), nullptr, nullptr,
                     nullptr, dwa.data(), dwb.data(), dkf.data(), dk.data(), da.data(),
                     G(at, "k_k"), G(at, "k_a")});
    // a = σ(a0 + (xa2·a1)·a2)
    Buf &daz = zeros(RC), &da_low = zeros(size_t(R * c.d_aaa)), &dxa2 = zeros(RC);
    bias_sigmoid_back({R, C, BiasSigmoidKind::Sigmoid, P(at, "a0"), L.az.data(),
                       const_cast<float*>(L.a.data()), da.data(), daz.data(), G(at, "a0")});
    mm.lora_back(L.a_low.data(), P(at, "a2"), daz.data(), R, c.d_aaa, C, da_low.data(),
                 GW(at, "a2"));
    mm.lora_back(L.xa2.data(), P(at, "a1"), da_low.data(), R, C, c.d_aaa, dxa2.data(),
                 GW(at, "a1"));
    // value residual (layers >= 1) or v_first itself (layer 0)
    Buf &dv_raw = zeros(RC), &dxv = zeros(RC);
    if (l == 0) {
      for (size_t i = 0; i < RC; ++i) dv_raw[i] = dv[i] + dv_first[i];
    } else {
      Buf &dvz = zeros(RC), &dv_low = zeros(size_t(R * c.d_value));
      value_residual_back({R, C, L.v_raw.data(), A.v_first.data(), P(at, "v0"), L.vz.data(),
                           nullptr, dv.data(), dv_raw.data(), dv_first.data(), G(at, "v0"),
                           dvz.data()});
      mm.lora_back(L.v_low.data(), P(at, "v2"), dvz.data(), R, c.d_value, C, dv_low.data(),
                   GW(at, "v2"));
      mm.lora_back(L.xv.data(), P(at, "v1"), dv_low.data(), R, C, c.d_value, dxv.data(),
                   GW(at, "v1"));
    }
    // decay = exp(-e^-0.5 · σ(w0 + tanh(xw·w1)·w2))
    Buf &dwz = zeros(RC), &dw_low = zeros(size_t(R * c.d_decay)),
        &dw_pre = zeros(size_t(R * c.d_decay)), &dxw = zeros(RC);
    bias_sigmoid_back({R, C, BiasSigmoidKind::Decay, P(at, "w0"), L.wz.data(),
                       const_cast<float*>(L.decay.data()), ddecay.data(), dwz.data(), G(at, "w0")});
    mm.lora_back(L.w_low.data(), P(at, "w2"), dwz.data(), R, c.d_decay, C, dw_low.data(),
                 GW(at, "w2"));
    act_back({R * c.d_decay, Act::Tanh, nullptr, const_cast<float*>(L.w_low.data()), dw_low.data(),
              dw_pre.data()},
             R);
    mm.lora_back(L.xw.data(), P(at, "w1"), dw_pre.data(), R, C, c.d_decay, dxw.data(),
                 GW(at, "w1"));
    // r, k, v projections
    Buf &dxr = zeros(RC), &dxk = zeros(RC);
    mm.linear_back(L.xr.data(), W(at, "receptance.weight"), dr.data(), R, C, C, dxr.data(),
                   GW(at, "receptance.weight"));
    mm.linear_back(L.xk.data(), W(at, "key.weight"), dk.data(), R, C, C, dxk.data(),
                   GW(at, "key.weight"));
    mm.linear_back(L.xv.data(), W(at, "value.weight"), dv_raw.data(), R, C, C, dxv.data(),
                   GW(at, "value.weight"));
    // token shift + mixes into xa, then ln1 into the residual stream
    Buf& dxa = zeros(RC);
    const std::pair<const char*, const Buf*> mixes[] = {
        {"x_r", &dxr}, {"x_w", &dxw}, {"x_k", &dxk}, {"x_v", &dxv}, {"x_a", &dxa2}, {"x_g", &dxg}};
    const float* prev0 = initial_shift_rows(l, &State::att_shift);
    float* dprev0 = initial_shift_grads();
    for (auto [name, d] : mixes) {
      shift_mix_back({A.B, A.T, C, L.xa.data(), prev0, P(at, name), nullptr, d->data(), dxa.data(),
                      G(at, name), dprev0});
    }
    shift_state_grads(l, &State::att_shift, dxa.data(), dprev0);
    norm_back({R, C, 1, kLnEps, L.x_in.data(), P(pf, "ln1.weight"), P(pf, "ln1.bias"), nullptr,
               const_cast<float*>(L.ln1_stats.data()), dxa.data(), dx.data(), G(pf, "ln1.weight"),
               G(pf, "ln1.bias")});
  }
};

// Cross-entropy summed over A.R rows and divided by `mean_over` (all positions of the rows,
// when this pass is one segment of them), its gradient written over the logits in place; rows
// are split over the pool (the exp of every logit dominates).
// This pass's row r = b·A.T + i is position t0 + i of row b: with soft targets ([B, T_full, V]
// distributions, GradOptions::soft_targets) it reads that position's distribution; positions
// before loss_from (GradOptions::loss_from) add nothing to the loss and get no gradient.
struct SoftTargets {
  const float* probs = nullptr;
  int64_t t0 = 0, T_full = 0, loss_from = 0;
};

double loss_and_dlogits(Acts& A, int64_t V, bool l2wrap, int64_t mean_over, ThreadPool* pool,
                        const SoftTargets& soft, const PointwiseOps& ops) {
  const int64_t R = A.R;
  std::vector<double>& part = A.loss_parts;
  part.assign(size_t(R), 0.0);
  auto rows = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* l = A.logits.data() + r * V;
      const int64_t b = r / A.T, t = soft.t0 + r % A.T;
      if (t < soft.loss_from) {
        std::fill_n(l, V, 0.0f);
        part[size_t(r)] = 0;
        continue;
      }
      CrossEntropyArgs<float> a{1, V, l, &A.targets[size_t(r)], l, l2wrap, mean_over};
      if (soft.probs) a.soft_targets = soft.probs + (b * soft.T_full + t) * V;
      part[size_t(r)] = cross_entropy(a, ops);
    }
  };
  if (pool) {
    pool->parallel_for(R, 1, rows);
  } else {
    rows(0, R);
  }
  double total = 0;
  for (double x : part) total += x;
  return total;
}

// `grads`: one tensor per parameter name (re-made, zero, when a name or shape differs; else
// reused and left as they are, each flagged in A.grad_slots until something fills it:
// finish_gradients zeroes those left).
void prepare_gradients(const TrainParams& params, Acts& A, Gradients& grads) {
  if (A.names.empty() || A.names_layers != params.config.n_layer) {  // once: names() builds strings
    A.names = params.names();
    A.names_layers = params.config.n_layer;
  }
  bool reuse = grads.size() == A.names.size();
  for (const std::string& n : A.names) {
    auto it = grads.find(n);
    reuse = reuse && it != grads.end() && it->second.shape == params.tensors.at(n).shape;
  }
  A.grad_slots.clear();
  if (reuse) {
    for (auto& [n, g] : grads)
      A.grad_slots.push_back({g.data.data(), int64_t(g.data.size()), true});
    std::sort(
        A.grad_slots.begin(), A.grad_slots.end(),
        [](const Acts::GradSlot& x, const Acts::GradSlot& y) { return slot_before(x, y.data); });
  } else {
    grads.clear();
    for (const std::string& n : A.names) grads.emplace(n, FloatTensor(params.tensors.at(n).shape));
  }
}

// The gradients nothing filled in this call (frozen, unused): zero.
void finish_gradients(Acts& A, ThreadPool* pool) {
  for (Acts::GradSlot& s : A.grad_slots)
    if (s.untouched) zero_floats(s.data, s.count, pool);
  A.grad_slots.clear();
}

// From A.dxo (d loss / d xo, [R, C]) back through ln_out, the layers (recomputed one by one
// with checkpoint_layers) and ln0: leaves d loss / d embedding rows (before ln0) in A.demb.
void backward_from_xo(const Backward& bw, const ModelWeights& weights, const Backend& backend) {
  const TrainParams& params = bw.p;
  Acts& A = bw.A;
  const int64_t R = A.R, C = params.config.n_embd;
  Buf& dx = A.dx;
  dx.assign(size_t(R * C), 0.0f);
  bw.norm_back({R, C, 1, kLnEps, A.x_final.data(), params.get("ln_out.weight"),
                params.get("ln_out.bias"), nullptr, const_cast<float*>(A.lnout_stats.data()),
                A.dxo.data(), dx.data(), bw.G("ln_out.weight"), bw.G("ln_out.bias")});
  Buf& dv_first = A.dv_first;
  dv_first.assign(size_t(R * C), 0.0f);
  for (int64_t l = params.config.n_layer - 1; l >= 0; --l) {
    const LayerActs& L =
        A.checkpoint_layers ? detail::recompute_layer(weights, backend, A, l) : A.layers[size_t(l)];
    bw.channel_mix(l, L, dx);
    bw.time_mix(l, L, dx, dv_first);
  }
  A.demb.assign(size_t(R * C), 0.0f);
  bw.norm_back({R, C, 1, kLnEps, A.emb.data(), params.get("blocks.0.ln0.weight"),
                params.get("blocks.0.ln0.bias"), nullptr, const_cast<float*>(A.ln0_stats.data()),
                dx.data(), A.demb.data(), bw.G("blocks.0.ln0.weight"), bw.G("blocks.0.ln0.bias")});
}

// One pass's loss (added to res.loss) and gradients (added to res.grads) after train_forward
// ran over A: from the logits back to the embedding, with the state gradients of Backward.
void backward_segment(const TrainParams& params, const ModelWeights& weights,
                      const Backend& backend, ThreadPool* pool, const GradOptions& opts,
                      int64_t mean_over, const SoftTargets& soft, Acts& A, GradResult& res,
                      const std::vector<State>* d_final, std::vector<State>* d_initial) {
  const ModelConfig& c = params.config;
  const int64_t R = A.R, C = c.n_embd, V = c.vocab_size;
  res.loss += loss_and_dlogits(A, V, opts.l2wrap, mean_over, pool, soft,
                               backend.pointwise());  // A.logits: dlogits
  Products mm{backend};
  Backward bw{params, mm, pool, opts, A, res.grads, d_final, d_initial};
  A.dxo.assign(size_t(R * C), 0.0f);  // [R, C], kept from step to step
  mm.linear_back(A.xo.data(), bw.W("head.weight"), A.logits.data(), R, C, V, A.dxo.data(),
                 bw.GW("head.weight"));
  backward_from_xo(bw, weights, backend);
  A.dropout.apply(A.demb.data(), R, C, Dropout::Embedding, 0);  // d emb before the dropout
  embedding_backward<float>({R, C, A.inputs.data(), params.get("emb.weight"), nullptr,
                             A.demb.data(), bw.G("emb.weight")});
}

}  // namespace

TrainWorkspace::TrainWorkspace() : acts(std::make_unique<Acts>()) {}
TrainWorkspace::~TrainWorkspace() = default;
TrainWorkspace::TrainWorkspace(TrainWorkspace&&) noexcept = default;
TrainWorkspace& TrainWorkspace::operator=(TrainWorkspace&&) noexcept = default;

GradResult loss_and_gradients(const TrainParams& params,
                              const std::vector<std::vector<int32_t>>& rows, const Backend& backend,
                              ThreadPool* pool, const GradOptions& opts) {
  TrainWorkspace ws;
  GradResult res;
  loss_and_gradients(params, rows, backend, pool, opts, ws, res);
  return res;
}

void loss_and_gradients(const TrainParams& params, const std::vector<std::vector<int32_t>>& rows,
                        const Backend& backend, ThreadPool* pool, const GradOptions& opts,
                        TrainWorkspace& ws, GradResult& res) {
  const ModelConfig& c = params.config;
  if (rows.empty()) throw Error("gradient: no token rows");
  const size_t len = rows[0].size();
  for (size_t b = 0; b < rows.size(); ++b) {
    if (rows[b].size() != len) {
      throw Error("gradient: token rows must have equal lengths (row 0 has " + std::to_string(len) +
                  " tokens, row " + std::to_string(b) + " has " + std::to_string(rows[b].size()) +
                  ")");
    }
    if (rows[b].size() < 2) {
      throw Error("gradient: row " + std::to_string(b) + " has " + std::to_string(rows[b].size()) +
                  " token(s); each row needs at least 2 (inputs and a next token)");
    }
    for (size_t i = 0; i < rows[b].size(); ++i) {
      if (rows[b][i] < 0 || rows[b][i] >= c.vocab_size) {
        throw Error("gradient: token " + std::to_string(rows[b][i]) + " (row " + std::to_string(b) +
                    ", position " + std::to_string(i) + ") is outside the vocabulary [0, " +
                    std::to_string(c.vocab_size) + ")");
      }
    }
  }
  if (opts.wkv_checkpoint < 1) throw Error("gradient: wkv_checkpoint must be at least 1");
  if (opts.loss_from < 0 || opts.loss_from >= int64_t(len) - 1) {
    throw Error("gradient: loss_from " + std::to_string(opts.loss_from) +
                " leaves no predicted position (rows predict " + std::to_string(len - 1) + ")");
  }
  if (!(opts.dropout >= 0 && opts.dropout < 1))
    throw Error("gradient: dropout must be in [0, 1) (got " + std::to_string(opts.dropout) + ")");
  if (opts.segment < 0)
    throw Error("gradient: segment must be 0 (whole rows) or a positive number of positions");
  if (opts.initial_states) {
    if (opts.initial_states->size() != rows.size()) {
      throw Error("gradient: " + std::to_string(opts.initial_states->size()) +
                  " initial states given for " + std::to_string(rows.size()) + " rows");
    }
    for (size_t b = 0; b < rows.size(); ++b)
      detail::check_state_shape((*opts.initial_states)[b], c, "gradient", int64_t(b));
  }

  if (opts.soft_targets) {
    const size_t want = rows.size() * (len - 1) * size_t(c.vocab_size);
    if (opts.soft_targets->size() != want) {
      throw Error("gradient: " + std::to_string(opts.soft_targets->size()) +
                  " soft-target values given; rows × positions × vocabulary is " +
                  std::to_string(want));
    }
    if (opts.l2wrap) throw Error("gradient: soft targets and l2wrap do not go together");
  }
  Acts& A = *ws.acts;
  const int64_t B = int64_t(rows.size()), T = int64_t(len) - 1;
  const int64_t seg = opts.segment > 0 ? std::min(opts.segment, T) : T;
  const int64_t n_seg = (T + seg - 1) / seg;
  const ModelWeights& weights = detail::current_weights(params, A);
  A.checkpoint_layers = opts.checkpoint_layers;
  // Segment k's inputs and targets (positions [k·seg, k·seg + its length) of every row).
  auto load_segment = [&](int64_t k) {
    const int64_t t0 = k * seg, t1 = std::min(T, t0 + seg);
    A.B = B;
    A.T = t1 - t0;
    A.R = B * A.T;
    A.dropout = Dropout{opts.dropout, opts.dropout_seed, A.T, t0, T, opts.dropout_first_row};
    A.inputs.clear();
    A.targets.clear();
    for (const auto& row : rows) {
      A.inputs.insert(A.inputs.end(), row.begin() + t0, row.begin() + t1);
      A.targets.insert(A.targets.end(), row.begin() + t0 + 1, row.begin() + t1 + 1);
    }
  };
  auto zero_states = [&](std::vector<State>& s) {
    if (s.size() != size_t(B) || s[0].n_layer != c.n_layer || s[0].n_embd != c.n_embd ||
        s[0].n_head != c.n_head || s[0].head_size != c.head_size) {
      s.assign(size_t(B), detail::zero_state(c));
      return;
    }
    for (State& x : s) {
      std::fill(x.att_shift.begin(), x.att_shift.end(), 0.0f);
      std::fill(x.ffn_shift.begin(), x.ffn_shift.end(), 0.0f);
      std::fill(x.wkv.begin(), x.wkv.end(), 0.0f);
    }
  };

  // Forward through all but the last segment, keeping only the states at the boundaries.
  A.boundaries.resize(size_t(n_seg));
  if (opts.initial_states) {
    detail::assign_states(A.boundaries[0], *opts.initial_states);
  } else {
    zero_states(A.boundaries[0]);
  }
  for (int64_t k = 0; k + 1 < n_seg; ++k) {
    load_segment(k);
    detail::assign_states(A.states, A.boundaries[size_t(k)]);
    detail::advance_states(weights, backend, A);
    detail::assign_states(A.boundaries[size_t(k + 1)], A.states);
  }

  res.positions = B * (T - opts.loss_from);
  prepare_gradients(params, A, res.grads);

  // Backward through the segments in reverse, each recomputed from its input state; the
  // gradient w.r.t. the state between two segments is the later one's d_initial, then the
  // earlier one's d_final.
  const bool carry_grad = n_seg > 1 && !opts.truncate_bptt;
  res.loss = 0;
  res.state_grad_norms.assign(carry_grad ? size_t(n_seg) : 0, 0.0);
  for (int64_t k = n_seg - 1; k >= 0; --k) {
    load_segment(k);
    std::swap(A.initial, A.boundaries[size_t(k)]);  // not read again: no copy needed
    detail::train_forward(weights, backend, A);
    if (k == n_seg - 1 && opts.final_states) detail::assign_states(*opts.final_states, A.states);
    const bool has_d_final = carry_grad && k < n_seg - 1;
    const bool wants_d_initial = (carry_grad && k > 0) || (k == 0 && opts.initial_state_grads);
    if (has_d_final) std::swap(A.d_final, A.d_initial);
    if (wants_d_initial) zero_states(A.d_initial);
    const SoftTargets soft{opts.soft_targets ? opts.soft_targets->data() : nullptr, k * seg, T,
                           opts.loss_from};
    backward_segment(params, weights, backend, pool, opts, res.positions, soft, A, res,
                     has_d_final ? &A.d_final : nullptr, wants_d_initial ? &A.d_initial : nullptr);
    if (k == 0 && opts.initial_state_grads) {
      detail::assign_states(*opts.initial_state_grads, A.d_initial);
    } else if (wants_d_initial) {
      double sq = 0;
      for (const State& d : A.d_initial)
        for (const std::vector<float>* v : {&d.att_shift, &d.ffn_shift, &d.wkv})
          for (float x : *v) sq += double(x) * double(x);
      res.state_grad_norms[size_t(k)] = std::sqrt(sq);
    }
  }
  finish_gradients(A, pool);
}

const std::vector<float>& blocks_forward(const TrainParams& params, std::span<const float> emb,
                                         int64_t B, int64_t T, const Backend& backend,
                                         TrainWorkspace& ws) {
  const int64_t C = params.config.n_embd;
  if (B < 1 || T < 1 || emb.size() != size_t(B * T * C)) {
    throw Error("blocks forward: " + std::to_string(emb.size()) + " embedding values for " +
                std::to_string(B) + " rows of " + std::to_string(T) + " positions of width " +
                std::to_string(C));
  }
  Acts& A = *ws.acts;
  A.B = B;
  A.T = T;
  A.R = B * T;
  A.emb.assign(emb.begin(), emb.end());
  A.checkpoint_layers = false;
  A.dropout = Dropout{};  // not for the time-series blocks
  if (A.initial.size() != size_t(B)) A.initial.assign(size_t(B), detail::zero_state(params.config));
  for (State& s : A.initial) {  // every row from the zero state
    std::fill(s.att_shift.begin(), s.att_shift.end(), 0.0f);
    std::fill(s.ffn_shift.begin(), s.ffn_shift.end(), 0.0f);
    std::fill(s.wkv.begin(), s.wkv.end(), 0.0f);
  }
  detail::train_forward_embedded(detail::current_weights(params, A), backend, A);
  return A.xo;
}

void blocks_backward(const TrainParams& params, std::span<const float> dhidden,
                     const Backend& backend, ThreadPool* pool, const GradOptions& opts,
                     TrainWorkspace& ws, Gradients& grads, std::vector<float>& demb) {
  Acts& A = *ws.acts;
  if (dhidden.size() != size_t(A.R * params.config.n_embd) || A.xo.empty())
    throw Error("blocks backward: d hidden must be [R, C] of the last blocks_forward");
  if (opts.wkv_checkpoint < 1) throw Error("gradient: wkv_checkpoint must be at least 1");
  prepare_gradients(params, A, grads);
  Products mm{backend};
  Backward bw{params, mm, pool, opts, A, grads, nullptr, nullptr};
  A.dxo.assign(dhidden.begin(), dhidden.end());
  backward_from_xo(bw, detail::current_weights(params, A), backend);
  finish_gradients(A, pool);  // emb.weight and head.weight: zero
  demb = A.demb;
}

}  // namespace rwkv7::train
