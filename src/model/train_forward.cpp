// The training forward of RWKV-7 over B equal-length rows: the graph of model/graph.cpp (the
// one inference runs) with the activations kept for backward.cpp; and the dense products the
// backward runs on the backend.
#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>

#include "core/dtype.hpp"
#include "model/graph.hpp"
#include "model/train_internal.hpp"
#include "model/weights.hpp"
#include "ops/backward_ops.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::train {

using detail::Buf;

const float* TrainParams::get(std::string_view name) const {
  auto it = tensors.find(name);
  if (it == tensors.end())
    throw Error("training parameters: tensor '" + std::string(name) + "' is missing");
  return it->second.data.data();
}

bool is_weight_matrix(std::string_view name, const Shape& shape) {
  constexpr std::string_view suffix = ".weight";
  return shape.size() == 2 && name.size() > suffix.size() && name.ends_with(suffix);
}

const uint16_t* TrainParams::bf16_of(std::string_view name) const {
  auto it = bf16_weights.find(name);
  return it == bf16_weights.end() ? nullptr : it->second.data();
}

void TrainParams::keep_bf16_weights() {
  bf16_weights.clear();
  for (const auto& [name, t] : tensors) {
    if (!is_weight_matrix(name, t.shape) || name == "emb.weight") continue;
    std::vector<uint16_t>& h = bf16_weights[name];
    h.resize(t.data.size());
    for (size_t i = 0; i < h.size(); ++i) h[i] = f32_to_bf16(t.data[i]);
  }
}

std::vector<std::string> TrainParams::names() const {
  // Every parameter the graph uses; layer 0's v0/v1/v2 are not (no gradient, not trained).
  std::vector<std::string> out;
  for_each_parameter(config.n_layer, UnusedCopies::Skip, [&](const ParamSpec& s, int64_t layer) {
    out.emplace_back(ParamName(s, layer).view());
  });
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

// The backward products on the backend's gemm ((+)=, see Products); operands are read through their
// transpose flags, so no transposed copy is made.
void Products::atb(const float* a, const float* b, int64_t R, int64_t p, int64_t q,
                   WeightGrad g) const {
  // g [p, q] (+)= aᵀ·b with a [R, p], b [R, q]
  // (R = 0, an empty sum: the backends write zeros, or add nothing.)
  be.gemm({.M = p,
           .N = q,
           .K = R,
           .a = {a, p, true},
           .b = {b, q},
           .c = g.data,
           .ldc = q,
           .accumulate = !g.overwrite});
}

void Products::linear_back(const float* x, ProductWeight w, const float* dy, int64_t R, int64_t in,
                           int64_t out, float* dx, WeightGrad dw) const {
  // dx [R, in] += dy [R, out] · w [out, in]
  if (dx)
    be.gemm({.M = R,
             .N = in,
             .K = out,
             .a = {dy, out},
             .b = {w.values, in, false, w.bf16},
             .c = dx,
             .ldc = in,
             .accumulate = true});
  if (dw.data) atb(dy, x, R, out, in, dw);  // dw [out, in] (+)= dyᵀ · x
}

void Products::lora_back(const float* x, const float* m, const float* dy, int64_t R, int64_t in,
                         int64_t out, float* dx, WeightGrad dm) const {
  // dx [R, in] += dy [R, out] · mᵀ (m [in, out], read down its rows as matmul reads a weight)
  if (dx)
    be.gemm({.M = R,
             .N = in,
             .K = out,
             .a = {dy, out},
             .b = {m, out, true},
             .c = dx,
             .ldc = in,
             .accumulate = true});
  if (dm.data) atb(x, dy, R, in, out, dm);  // dm [in, out] (+)= xᵀ · dy
}

ModelWeights weights_of(const TrainParams& p) {
  TensorFile f;
  f.path = "parameters being trained";
  for (const auto& [name, t] : p.tensors) f.add(name, t.view());
  return build_weights(std::move(f), WeightOptions{true});
}

namespace {

// Points the graph's product matrices at the parameters' kept bf16 copies (or at none). A
// copy must be as large as its matrix (the products read rows × cols of it).
void attach_bf16_weights(ModelWeights& w, const TrainParams& p) {
  auto attach = [&](Matrix& m, std::string_view name) {
    auto it = p.bf16_weights.find(name);
    m.bf16_rows = nullptr;
    if (it == p.bf16_weights.end()) return;
    if (int64_t(it->second.size()) != m.rows * m.cols)
      throw Error("training parameters: the bf16 copy of '" + std::string(name) + "' has " +
                  std::to_string(it->second.size()) + " values, the matrix " +
                  std::to_string(m.rows * m.cols) + " (copies not remade after a change?)");
    m.bf16_rows = it->second.data();
  };
  attach(w.head, "head.weight");
  char buf[96];
  auto at = [&](Matrix& m, int64_t l, const char* name) {
    std::snprintf(buf, sizeof buf, "blocks.%lld.%s.weight", static_cast<long long>(l), name);
    attach(m, buf);
  };
  for (int64_t l = 0; l < int64_t(w.layers.size()); ++l) {
    LayerWeights& L = w.layers[size_t(l)];
    at(L.receptance, l, "att.receptance");
    at(L.key, l, "att.key");
    at(L.value, l, "att.value");
    at(L.output, l, "att.output");
    at(L.ffn_key, l, "ffn.key");
    at(L.ffn_value, l, "ffn.value");
  }
}

}  // namespace

const ModelWeights& current_weights(const TrainParams& p, Acts& A) {
  // The cached views stay valid while every parameter keeps its buffer.
  bool same = A.weights != nullptr && A.weight_sources.size() == p.tensors.size();
  size_t i = 0;
  for (const auto& [name, t] : p.tensors) {
    if (!same) break;
    same = A.weight_sources[i++] == t.data.data();
  }
  if (same) {
    refresh_weights(*A.weights);
  } else {
    A.weights = std::make_unique<ModelWeights>(weights_of(p));
    A.weight_sources.clear();
    for (const auto& [name, t] : p.tensors) A.weight_sources.push_back(t.data.data());
  }
  attach_bf16_weights(*A.weights, p);  // (the copies may have been made or dropped since)
  return *A.weights;
}

State zero_state(const ModelConfig& c) {
  State s;
  s.n_layer = c.n_layer;
  s.n_embd = c.n_embd;
  s.n_head = c.n_head;
  s.head_size = c.head_size;
  s.att_shift.assign(size_t(c.n_layer * c.n_embd), 0.0f);
  s.ffn_shift.assign(size_t(c.n_layer * c.n_embd), 0.0f);
  s.wkv.assign(size_t(c.n_layer * c.n_head * c.head_size * c.head_size), 0.0f);
  return s;
}

void check_state_shape(const State& s, const ModelConfig& c, const char* who, int64_t row) {
  const size_t LC = size_t(c.n_layer * c.n_embd);
  const size_t HNN = size_t(c.n_head * c.head_size * c.head_size);
  if (s.n_layer != c.n_layer || s.n_embd != c.n_embd || s.n_head != c.n_head ||
      s.head_size != c.head_size || s.att_shift.size() != LC || s.ffn_shift.size() != LC ||
      s.wkv.size() != size_t(c.n_layer) * HNN)
    throw Error(std::string(who) + ": the initial state of row " + std::to_string(row) +
                " does not have the model's shape (" + c.shape_string() + ")");
}

void assign_states(std::vector<State>& to, const std::vector<State>& from) {
  to.resize(from.size());
  for (size_t b = 0; b < from.size(); ++b) {
    to[b].n_layer = from[b].n_layer;
    to[b].n_embd = from[b].n_embd;
    to[b].n_head = from[b].n_head;
    to[b].head_size = from[b].head_size;
    to[b].att_shift.assign(from[b].att_shift.begin(), from[b].att_shift.end());
    to[b].ffn_shift.assign(from[b].ffn_shift.begin(), from[b].ffn_shift.end());
    to[b].wkv.assign(from[b].wkv.begin(), from[b].wkv.end());
  }
}

namespace {

// A.states = A.initial (one per row; copies keep their buffers) and the graph's segments.
void start_states(const ModelConfig& c, Acts& A) {
  if (A.initial.size() != size_t(A.B))
    throw Error("training forward: " + std::to_string(A.initial.size()) + " initial states for " +
                std::to_string(A.B) + " rows");
  for (int64_t b = 0; b < A.B; ++b)
    check_state_shape(A.initial[size_t(b)], c, "training forward", b);
  assign_states(A.states, A.initial);
  A.segs.clear();
  for (int64_t b = 0; b < A.B; ++b) A.segs.push_back(Segment{&A.states[size_t(b)], b * A.T, A.T});
}

// x (A.x_final, after ln0) through the layers, then ln_out into A.xo. With checkpoint_layers
// only each layer's input is kept; the backward recomputes the layer (recompute_layer).
void layers_and_ln_out(const ModelWeights& w, const GraphPass& pass, Acts& A) {
  const ModelConfig& c = w.config;
  const size_t RC = size_t(A.R * c.n_embd);
  Buf& x = A.x_final;
  if (A.checkpoint_layers) {
    A.layers.resize(1);  // the one layer being recomputed
    A.layer_inputs.resize(size_t(c.n_layer));
    for (int64_t l = 0; l < c.n_layer; ++l) {
      A.layer_inputs[size_t(l)].assign(x.begin(), x.end());
      pass.layer(l, x, A.v_first, nullptr);
    }
  } else {
    A.layers.resize(size_t(c.n_layer));  // kept across calls: buffers keep their capacity
    pass.layers(x, A.v_first, &A.layers);
  }
  A.xo.resize(RC);
  A.lnout_stats.resize(size_t(A.R * 2));
  pass.layer_norm_rows(x.data(), w.ln_out_w, w.ln_out_b, A.xo.data(), A.lnout_stats.data());
}

}  // namespace

void train_forward(const ModelWeights& w, const Backend& be, Acts& A) {
  const ModelConfig& c = w.config;
  const int64_t R = A.R, C = c.n_embd;
  const size_t RC = size_t(R * C);
  start_states(c, A);
  GraphPass pass{w, be, A.segs, R, A.fwd, A.dropout.active() ? &A.dropout : nullptr};
  Buf& x = A.x_final;  // the residual stream; after the last layer it is x_final
  x.resize(RC);
  A.emb.resize(RC);
  A.ln0_stats.resize(size_t(R * 2));
  pass.embed(A.inputs.data(), x.data(), A.emb.data(), A.ln0_stats.data());
  if (A.dropout.active()) {  // embedding rows dropped before ln0: ln0 again on what is left
    A.dropout.apply(A.emb.data(), R, C, Dropout::Embedding, 0);
    pass.layer_norm_rows(A.emb.data(), w.ln0_w, w.ln0_b, x.data(), A.ln0_stats.data());
  }
  layers_and_ln_out(w, pass, A);
  A.logits.resize(size_t(R * c.vocab_size));
  be.matmul(MatmulArgs{w.head, A.xo.data(), A.logits.data(), R});
}

void train_forward_embedded(const ModelWeights& w, const Backend& be, Acts& A) {
  const int64_t R = A.R, C = w.config.n_embd;
  if (A.emb.size() != size_t(R * C)) throw Error("blocks forward: embedding rows must be [R, C]");
  start_states(w.config, A);
  GraphPass pass{w, be, A.segs, R, A.fwd};
  A.x_final.resize(size_t(R * C));
  A.ln0_stats.resize(size_t(R * 2));
  pass.layer_norm_rows(A.emb.data(), w.ln0_w, w.ln0_b, A.x_final.data(), A.ln0_stats.data());
  layers_and_ln_out(w, pass, A);
}

void advance_states(const ModelWeights& w, const Backend& be, Acts& A) {
  const ModelConfig& c = w.config;
  const size_t RC = size_t(A.R * c.n_embd);
  A.segs.clear();
  for (int64_t b = 0; b < A.B; ++b) A.segs.push_back(Segment{&A.states[size_t(b)], b * A.T, A.T});
  GraphPass pass{w, be, A.segs, A.R, A.fwd, A.dropout.active() ? &A.dropout : nullptr};
  Buf& x = A.x_final;  // scratch here: train_forward writes it again
  x.resize(RC);
  if (A.dropout.active()) {  // the same masks as the pass with gradients will draw
    A.emb.resize(RC);
    pass.embed(A.inputs.data(), x.data(), A.emb.data(), nullptr);
    A.dropout.apply(A.emb.data(), A.R, c.n_embd, Dropout::Embedding, 0);
    pass.layer_norm_rows(A.emb.data(), w.ln0_w, w.ln0_b, x.data(), nullptr);
  } else {
    pass.embed(A.inputs.data(), x.data(), nullptr, nullptr);
  }
  pass.layers(x, A.v_first, nullptr);
}

const LayerActs& recompute_layer(const ModelWeights& w, const Backend& be, Acts& A, int64_t l) {
  const ModelConfig& c = w.config;
  const size_t C = size_t(c.n_embd), HNN = size_t(c.n_head * c.head_size * c.head_size);
  const size_t L = size_t(l);
  for (size_t b = 0; b < A.states.size(); ++b) {  // layer l's states as the pass found them
    const State& from = A.initial[b];
    State& s = A.states[b];
    std::copy_n(from.att_shift.begin() + ptrdiff_t(L * C), C,
                s.att_shift.begin() + ptrdiff_t(L * C));
    std::copy_n(from.ffn_shift.begin() + ptrdiff_t(L * C), C,
                s.ffn_shift.begin() + ptrdiff_t(L * C));
    std::copy_n(from.wkv.begin() + ptrdiff_t(L * HNN), HNN, s.wkv.begin() + ptrdiff_t(L * HNN));
  }
  A.recompute_x.assign(A.layer_inputs[L].begin(), A.layer_inputs[L].end());
  GraphPass pass{w, be, A.segs, A.R, A.fwd, A.dropout.active() ? &A.dropout : nullptr};
  pass.layer(l, A.recompute_x, A.v_first, &A.layers[0]);
  return A.layers[0];
}

}  // namespace detail
}  // namespace rwkv7::train
