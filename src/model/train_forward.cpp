// The training forward of RWKV-7 over B equal-length rows: the graph of model/graph.cpp (the
// one inference runs) with the activations kept for backward.cpp; and the dense products the
// backward runs on the backend.
#include <algorithm>

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

// The backward products on the backend's gemm, accumulating; operands are read through their
// transpose flags, so no transposed copy is made.
void Products::atb_add(const float* a, const float* b, int64_t R, int64_t p, int64_t q,
                       float* g) const {
  // g [p, q] += aᵀ·b with a [R, p], b [R, q]
  be.gemm({.M = p,
           .N = q,
           .K = R,
           .a = {a, p, true},
           .b = {b, q},
           .c = g,
           .ldc = q,
           .accumulate = true});
}

void Products::linear_back(const float* x, const float* w, const float* dy, int64_t R, int64_t in,
                           int64_t out, float* dx, float* dw) const {
  // dx [R, in] += dy [R, out] · w [out, in]
  if (dx)
    be.gemm({.M = R,
             .N = in,
             .K = out,
             .a = {dy, out},
             .b = {w, in},
             .c = dx,
             .ldc = in,
             .accumulate = true});
  if (dw) atb_add(dy, x, R, out, in, dw);  // dw [out, in] += dyᵀ · x
}

void Products::lora_back(const float* x, const float* m, const float* dy, int64_t R, int64_t in,
                         int64_t out, float* dx, float* dm) const {
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
  if (dm) atb_add(x, dy, R, in, out, dm);  // dm [in, out] += xᵀ · dy
}

ModelWeights weights_of(const TrainParams& p) {
  TensorFile f;
  f.path = "parameters being trained";
  for (const auto& [name, t] : p.tensors) f.add(name, t.view());
  return build_weights(std::move(f), WeightOptions{true});
}

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
  return *A.weights;
}

namespace {

// Each of A.B rows starts from the zero state (what the backward assumes).
void zero_states(const ModelConfig& c, Acts& A) {
  const int64_t C = c.n_embd;
  A.states.resize(size_t(A.B));
  A.segs.clear();
  for (int64_t b = 0; b < A.B; ++b) {
    State& s = A.states[size_t(b)];
    s.n_layer = c.n_layer;
    s.n_embd = c.n_embd;
    s.n_head = c.n_head;
    s.head_size = c.head_size;
    s.att_shift.assign(size_t(c.n_layer * C), 0.0f);
    s.ffn_shift.assign(size_t(c.n_layer * C), 0.0f);
    s.wkv.assign(size_t(c.n_layer * c.n_head * c.head_size * c.head_size), 0.0f);
    A.segs.push_back(Segment{&s, b * A.T, A.T});
  }
}

// x (after ln0) through the layers, then ln_out into A.xo.
void layers_and_ln_out(const ModelWeights& w, const GraphPass& pass, Acts& A) {
  const size_t RC = size_t(A.R * w.config.n_embd);
  A.layers.resize(size_t(w.config.n_layer));  // kept across calls: buffers keep their capacity
  pass.layers(A.x_final, A.v_first, &A.layers);
  A.xo.resize(RC);
  A.lnout_stats.resize(size_t(A.R * 2));
  pass.layer_norm_rows(A.x_final.data(), w.ln_out_w, w.ln_out_b, A.xo.data(), A.lnout_stats.data());
}

}  // namespace

void train_forward(const ModelWeights& w, const Backend& be, Acts& A) {
  const ModelConfig& c = w.config;
  const int64_t R = A.R, C = c.n_embd;
  const size_t RC = size_t(R * C);
  zero_states(c, A);
  GraphPass pass{w, be, A.segs, R, A.fwd};
  Buf& x = A.x_final;  // the residual stream; after the last layer it is x_final
  x.resize(RC);
  A.emb.resize(RC);
  A.ln0_stats.resize(size_t(R * 2));
  pass.embed(A.inputs.data(), x.data(), A.emb.data(), A.ln0_stats.data());
  layers_and_ln_out(w, pass, A);
  A.logits.resize(size_t(R * c.vocab_size));
  be.matmul(MatmulArgs{w.head, A.xo.data(), A.logits.data(), R});
}

void train_forward_embedded(const ModelWeights& w, const Backend& be, Acts& A) {
  const int64_t R = A.R, C = w.config.n_embd;
  if (A.emb.size() != size_t(R * C)) throw Error("blocks forward: embedding rows must be [R, C]");
  zero_states(w.config, A);
  GraphPass pass{w, be, A.segs, R, A.fwd};
  A.x_final.resize(size_t(R * C));
  A.ln0_stats.resize(size_t(R * 2));
  pass.layer_norm_rows(A.emb.data(), w.ln0_w, w.ln0_b, A.x_final.data(), A.ln0_stats.data());
  layers_and_ln_out(w, pass, A);
}

}  // namespace detail
}  // namespace rwkv7::train
