// The training forward of RWKV-7 (SPEC §3-4) over B equal-length rows, keeping the
// activations backward.cpp needs. Same math as forward.cpp, written with the training ops so
// that forward and backward use one definition of each op.
#include <algorithm>

#include "model/train_internal.hpp"
#include "model/weights.hpp"
#include "ops/backward_ops.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::train {

using detail::Buf;

const float* TrainParams::get(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw Error("training parameters: tensor '" + name + "' is missing");
  return it->second.data.data();
}

std::vector<std::string> TrainParams::names() const {
  std::vector<std::string> out = {"emb.weight", "blocks.0.ln0.weight", "blocks.0.ln0.bias"};
  for (int64_t l = 0; l < config.n_layer; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    for (const char* n : {"ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"}) out.push_back(p + n);
    for (const char* n : {"x_r",         "x_w",          "x_k",
                          "x_v",         "x_a",          "x_g",
                          "w0",          "w1",           "w2",
                          "a0",          "a1",           "a2",
                          "v0",          "v1",           "v2",
                          "g1",          "g2",           "k_k",
                          "k_a",         "r_k",          "receptance.weight",
                          "key.weight",  "value.weight", "output.weight",
                          "ln_x.weight", "ln_x.bias"}) {
      const std::string s = n;
      if (l == 0 && (s == "v0" || s == "v1" || s == "v2")) continue;
      out.push_back(p + "att." + s);
    }
    for (const char* n : {"x_k", "key.weight", "value.weight"}) out.push_back(p + "ffn." + n);
  }
  for (const char* n : {"ln_out.weight", "ln_out.bias", "head.weight"}) out.push_back(n);
  return out;
}

TrainParams params_from_file(const TensorFile& file) {
  TrainParams p;
  p.config = build_weights(file).config;  // full validation of names and shapes
  for (const std::string& name : p.names()) {
    const TensorView& v = file.get(name);
    FloatTensor t(v.shape);
    t.data = to_f32(v);
    p.tensors.emplace(name, std::move(t));
  }
  return p;
}

namespace detail {

// Every product but the nn.Linear forward is one accumulate-product C += A·B on the backend
// (GemmAccArgs), with A read through strides so that no transposed copy is made.
namespace {

// dst [cols, rows] = srcᵀ, src [rows, cols] with rows ld_src apart; 16×16 tiles keep both
// sides in cache lines.
void transpose(const float* src, int64_t rows, int64_t cols, int64_t ld_src, float* dst,
               int64_t ld_dst) {
  constexpr int64_t B = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += B)
    for (int64_t c0 = 0; c0 < cols; c0 += B)
      for (int64_t r = r0; r < std::min(rows, r0 + B); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + B); ++c)
          dst[c * ld_dst + r] = src[r * ld_src + c];
}

}  // namespace

void Products::linear(const float* x, const float* w, int64_t R, int64_t in, int64_t out,
                      float* y) const {
  // yᵀ [out, R] = w [out, in] · xᵀ [in, R] as an accumulate-product (vectors along R, no
  // horizontal sums), in chunks of weight rows so that yᵀ stays small for the head.
  Buf& xt = *this->xt;
  xt.resize(size_t(in * R));
  transpose(x, R, in, in, xt.data(), R);
  const int64_t chunk = std::max<int64_t>(64, (int64_t(1) << 21) / std::max<int64_t>(1, R));
  Buf& yt = *this->yt;
  yt.resize(size_t(std::min(out, chunk) * R));
  for (int64_t o0 = 0; o0 < out; o0 += chunk) {
    const int64_t on = std::min(chunk, out - o0);
    std::fill_n(yt.data(), on * R, 0.0f);
    be.gemm_acc(GemmAccArgs{on, R, in, w + o0 * in, in, 1, xt.data(), R, yt.data(), R});
    transpose(yt.data(), on, R, R, y + o0, out);
  }
}

void Products::lora(const float* x, const float* m, int64_t R, int64_t in, int64_t out,
                    float* y) const {
  std::fill_n(y, R * out, 0.0f);  // y [R, out] = x [R, in] · m [in, out]
  be.gemm_acc(GemmAccArgs{R, out, in, x, in, 1, m, out, y, out});
}

void Products::atb_add(const float* a, const float* b, int64_t R, int64_t p, int64_t q,
                       float* g) const {
  // g [p, q] += aᵀ·b: A(i, r) = a[r·p + i], B = b [R, q].
  be.gemm_acc(GemmAccArgs{p, q, R, a, 1, p, b, q, g, q});
}

void Products::linear_back(const float* x, const float* w, const float* dy, int64_t R, int64_t in,
                           int64_t out, float* dx, float* dw) const {
  // dx [R, in] += dy [R, out] · w [out, in]
  if (dx) be.gemm_acc(GemmAccArgs{R, in, out, dy, out, 1, w, in, dx, in});
  if (dw) atb_add(dy, x, R, out, in, dw);
}

void Products::lora_back(const float* x, const float* m, const float* dy, int64_t R, int64_t in,
                         int64_t out, float* dx, float* dm) const {
  if (dx) {  // dx [R, in] += dy [R, out] · mᵀ; mᵀ [out, in] is small (a LoRA factor)
    Buf mt(size_t(in * out));
    for (int64_t i = 0; i < in; ++i)
      for (int64_t o = 0; o < out; ++o) mt[size_t(o * in + i)] = m[i * out + o];
    be.gemm_acc(GemmAccArgs{R, in, out, dy, out, 1, mt.data(), in, dx, in});
  }
  if (dm) atb_add(x, dy, R, in, out, dm);
}

void train_forward(const TrainParams& p, const Products& mm, ThreadPool* pool, Acts& A) {
  const ModelConfig& c = p.config;
  const int64_t R = A.R, C = c.n_embd, H = c.n_head, N = c.head_size, F = c.ffn_dim;
  const size_t RC = size_t(R * C);
  auto P = [&](const std::string& n) { return p.get(n); };

  A.emb.resize(RC);
  A.ln0_stats.resize(size_t(R * 2));
  embedding_forward<float>({R, C, A.inputs.data(), P("emb.weight"), A.emb.data()});
  Buf x(RC);
  norm_forward<float>({R, C, 1, detail::kLnEps, A.emb.data(), P("blocks.0.ln0.weight"),
                       P("blocks.0.ln0.bias"), x.data(), A.ln0_stats.data()});

  A.layers.resize(size_t(c.n_layer));  // kept across calls: buffers keep their capacity
  const float* v_first = nullptr;
  for (int64_t l = 0; l < c.n_layer; ++l) {
    LayerActs& L = A.layers[size_t(l)];
    const std::string at = "blocks." + std::to_string(l) + ".att.";
    const std::string pf = "blocks." + std::to_string(l) + ".";
    for (Buf* b :
         {&L.xa, &L.xr, &L.xw, &L.xk, &L.xv, &L.xa2, &L.xg, &L.r, &L.k,  &L.v_raw, &L.wz, &L.decay,
          &L.v,  &L.az, &L.a,  &L.g,  &L.wa, &L.wb,  &L.kf, &L.y, &L.yb, &L.yg,    &L.xf, &L.xkf})
      b->resize(RC);
    L.x_in = x;
    L.ln1_stats.resize(size_t(R * 2));
    norm_forward<float>({R, C, 1, kLnEps, x.data(), P(pf + "ln1.weight"), P(pf + "ln1.bias"),
                         L.xa.data(), L.ln1_stats.data()});
    const std::pair<const char*, Buf*> mixes[] = {{"x_r", &L.xr}, {"x_w", &L.xw},  {"x_k", &L.xk},
                                                  {"x_v", &L.xv}, {"x_a", &L.xa2}, {"x_g", &L.xg}};
    for (auto [name, out] : mixes)
      shift_mix_forward<float>({A.B, A.T, C, L.xa.data(), nullptr, P(at + name), out->data()});

    mm.linear(L.xr.data(), P(at + "receptance.weight"), R, C, C, L.r.data());
    mm.linear(L.xk.data(), P(at + "key.weight"), R, C, C, L.k.data());
    mm.linear(L.xv.data(), P(at + "value.weight"), R, C, C, L.v_raw.data());

    // decay = exp(-e^-0.5 · σ(w0 + tanh(xw·w1)·w2))
    L.w_pre.resize(size_t(R * c.d_decay));
    L.w_low.resize(L.w_pre.size());
    mm.lora(L.xw.data(), P(at + "w1"), R, C, c.d_decay, L.w_pre.data());
    act_forward<float>({R * c.d_decay, Act::Tanh, L.w_pre.data(), L.w_low.data()});
    mm.lora(L.w_low.data(), P(at + "w2"), R, c.d_decay, C, L.wz.data());
    bias_sigmoid_forward<float>(
        {R, C, BiasSigmoidKind::Decay, P(at + "w0"), L.wz.data(), L.decay.data()});

    if (l == 0) {
      L.v = L.v_raw;
      v_first = A.layers[0].v.data();
    } else {
      L.v_low.resize(size_t(R * c.d_value));
      L.vz.resize(RC);
      mm.lora(L.xv.data(), P(at + "v1"), R, C, c.d_value, L.v_low.data());
      mm.lora(L.v_low.data(), P(at + "v2"), R, c.d_value, C, L.vz.data());
      value_residual_forward<float>(
          {R, C, L.v_raw.data(), v_first, P(at + "v0"), L.vz.data(), L.v.data()});
    }

    L.a_low.resize(size_t(R * c.d_aaa));
    mm.lora(L.xa2.data(), P(at + "a1"), R, C, c.d_aaa, L.a_low.data());
    mm.lora(L.a_low.data(), P(at + "a2"), R, c.d_aaa, C, L.az.data());
    bias_sigmoid_forward<float>(
        {R, C, BiasSigmoidKind::Sigmoid, P(at + "a0"), L.az.data(), L.a.data()});

    L.g_pre.resize(size_t(R * c.d_gate));
    L.g_low.resize(L.g_pre.size());
    mm.lora(L.xg.data(), P(at + "g1"), R, C, c.d_gate, L.g_pre.data());
    act_forward<float>({R * c.d_gate, Act::Sigmoid, L.g_pre.data(), L.g_low.data()});
    mm.lora(L.g_low.data(), P(at + "g2"), R, c.d_gate, C, L.g.data());

    wkv_inputs_forward<float>({R, H, N, L.k.data(), L.a.data(), P(at + "k_k"), P(at + "k_a"),
                               L.wa.data(), L.wb.data(), L.kf.data()});
    for (int64_t b = 0; b < A.B; ++b) {
      const size_t o = size_t(b * A.T * C);
      Wkv7TrainArgs<float> w{A.T,      H,       N,        &L.r[o],  &L.decay[o],
                             &L.kf[o], &L.v[o], &L.wa[o], &L.wb[o], nullptr};
      w.y = &L.y[o];
      w.pool = pool;
      wkv7_train_forward(w);
    }
    L.gn_stats.resize(size_t(R * H * 2));
    norm_forward<float>({R, C, H, kGroupNormEps, L.y.data(), P(at + "ln_x.weight"),
                         P(at + "ln_x.bias"), L.yb.data(), L.gn_stats.data()});
    bonus_forward<float>(
        {R, H, N, L.r.data(), L.kf.data(), L.v.data(), P(at + "r_k"), L.yb.data()});
    mul_forward<float>({R * C, L.yb.data(), L.g.data(), L.yg.data()});
    Buf out(RC);
    mm.linear(L.yg.data(), P(at + "output.weight"), R, C, C, out.data());
    for (size_t i = 0; i < RC; ++i) x[i] += out[i];

    // channel mix: x += Wv·relu(Wk·shift_mix(LN2(x)))²
    L.x_mid = x;
    L.ln2_stats.resize(size_t(R * 2));
    norm_forward<float>({R, C, 1, kLnEps, x.data(), P(pf + "ln2.weight"), P(pf + "ln2.bias"),
                         L.xf.data(), L.ln2_stats.data()});
    shift_mix_forward<float>({A.B, A.T, C, L.xf.data(), nullptr, P(pf + "ffn.x_k"), L.xkf.data()});
    L.h_pre.resize(size_t(R * F));
    L.h.resize(L.h_pre.size());
    mm.linear(L.xkf.data(), P(pf + "ffn.key.weight"), R, C, F, L.h_pre.data());
    act_forward<float>({R * F, Act::ReluSq, L.h_pre.data(), L.h.data()});
    mm.linear(L.h.data(), P(pf + "ffn.value.weight"), R, F, C, out.data());
    for (size_t i = 0; i < RC; ++i) x[i] += out[i];
  }

  A.x_final = std::move(x);
  A.xo.resize(RC);
  A.lnout_stats.resize(size_t(R * 2));
  norm_forward<float>({R, C, 1, kLnEps, A.x_final.data(), P("ln_out.weight"), P("ln_out.bias"),
                       A.xo.data(), A.lnout_stats.data()});
  A.logits.resize(size_t(R * c.vocab_size));
  mm.linear(A.xo.data(), P("head.weight"), R, C, c.vocab_size, A.logits.data());
}

}  // namespace detail
}  // namespace rwkv7::train
