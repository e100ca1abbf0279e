#include "io/rwkv7_parameters.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

using enum ParamId;
using enum Dim;
using S = ParamScope;
using K = ParamKind;
using G = GgufForm;
using I = ParamInit;

// clang-format off
constexpr ParamSpec kParams[] = {
  // name                  scope             dims          rank kind          GGUF name                     form              init                value
  {Emb,  "emb.weight",     S::Model,      {V, C, One},      2, K::Matrix,  "token_embd.weight",          G::Same,          I::Uniform,         1e-4},
  {Ln1W, "ln1.weight",     S::EveryLayer, {C, One, One},    1, K::Vector,  "attn_norm.weight",           G::Same,          I::Const,           1.0},
  {Ln1B, "ln1.bias",       S::EveryLayer, {C, One, One},    1, K::Vector,  "attn_norm.bias",             G::Same,          I::Zero,            0},
  {Ln2W, "ln2.weight",     S::EveryLayer, {C, One, One},    1, K::Vector,  "attn_norm_2.weight",         G::Same,          I::Const,           1.0},
  {Ln2B, "ln2.bias",       S::EveryLayer, {C, One, One},    1, K::Vector,  "attn_norm_2.bias",           G::Same,          I::Zero,            0},
  {Ln0W, "ln0.weight",     S::FirstLayer, {C, One, One},    1, K::Vector,  "token_embd_norm.weight",     G::Same,          I::Const,           1.0},
  {Ln0B, "ln0.bias",       S::FirstLayer, {C, One, One},    1, K::Vector,  "token_embd_norm.bias",       G::Same,          I::Zero,            0},
  {XR,   "att.x_r",        S::EveryLayer, {One, One, C},    3, K::Vector,  "time_mix_lerp_fused.weight", G::LerpFused,     I::Formula,         0, 0},
  {XW,   "att.x_w",        S::EveryLayer, {One, One, C},    3, K::Vector,  "time_mix_lerp_fused.weight", G::LerpFused,     I::Formula,         0, 1},
  {XK,   "att.x_k",        S::EveryLayer, {One, One, C},    3, K::Vector,  "time_mix_lerp_fused.weight", G::LerpFused,     I::Formula,         0, 2},
  {XV,   "att.x_v",        S::EveryLayer, {One, One, C},    3, K::Vector,  "time_mix_lerp_fused.weight", G::LerpFused,     I::Formula,         0, 3},
  {XA,   "att.x_a",        S::EveryLayer, {One, One, C},    3, K::Vector,  "time_mix_lerp_fused.weight", G::LerpFused,     I::Formula,         0, 4},
  {XG,   "att.x_g",        S::EveryLayer, {One, One, C},    3, K::Vector,  "time_mix_lerp_fused.weight", G::LerpFused,     I::Formula,         0, 5},
  {W1,   "att.w1",         S::EveryLayer, {C, DDecay, One}, 2, K::Lora,    "time_mix_w1.weight",         G::TransposedLora, I::Zero,           0},
  {W2,   "att.w2",         S::EveryLayer, {DDecay, C, One}, 2, K::Lora,    "time_mix_w2.weight",         G::TransposedLora, I::LoraOrthogonal, 0.1},
  {W0,   "att.w0",         S::EveryLayer, {One, One, C},    3, K::Vector,  "time_mix_w0.weight",         G::Squeezed,      I::Formula,         0},
  {A1,   "att.a1",         S::EveryLayer, {C, DAaa, One},   2, K::Lora,    "time_mix_a1.weight",         G::TransposedLora, I::Zero,           0},
  {A2,   "att.a2",         S::EveryLayer, {DAaa, C, One},   2, K::Lora,    "time_mix_a2.weight",         G::TransposedLora, I::LoraOrthogonal, 0.1},
  {A0,   "att.a0",         S::EveryLayer, {One, One, C},    3, K::Vector,  "time_mix_a0.weight",         G::Squeezed,      I::Formula,         0},
  {V1,   "att.v1",         S::ValueResidual, {C, DValue, One}, 2, K::Lora, "time_mix_v1.weight",         G::TransposedLora, I::Zero,           0},
  {V2,   "att.v2",         S::ValueResidual, {DValue, C, One}, 2, K::Lora, "time_mix_v2.weight",         G::TransposedLora, I::LoraOrthogonal, 0.1},
  {V0,   "att.v0",         S::ValueResidual, {One, One, C},    3, K::Vector, "time_mix_v0.weight",       G::Squeezed,      I::Formula,         0},
  {G1,   "att.g1",         S::EveryLayer, {C, DGate, One},  2, K::Lora,    "time_mix_g1.weight",         G::TransposedLora, I::Zero,           0},
  {G2,   "att.g2",         S::EveryLayer, {DGate, C, One},  2, K::Lora,    "time_mix_g2.weight",         G::TransposedLora, I::LoraOrthogonal, 0.1},
  {KK,   "att.k_k",        S::EveryLayer, {One, One, C},    3, K::Vector,  "time_mix_k_k.weight",        G::Squeezed,      I::Formula,         0},
  {KA,   "att.k_a",        S::EveryLayer, {One, One, C},    3, K::Vector,  "time_mix_k_a.weight",        G::Squeezed,      I::Const,           1.02},
  {RK,   "att.r_k",        S::EveryLayer, {H, N, One},      2, K::HeadMatrix, "time_mix_r_k.weight",     G::Flattened,     I::Const,           -0.04},
  {Receptance, "att.receptance.weight", S::EveryLayer, {C, C, One}, 2, K::Matrix, "time_mix_receptance.weight", G::Same, I::Orthogonal, 1.0},
  {Key,  "att.key.weight", S::EveryLayer, {C, C, One},      2, K::Matrix,  "time_mix_key.weight",        G::Same,          I::Orthogonal,      0.1},
  {Value, "att.value.weight", S::EveryLayer, {C, C, One},   2, K::Matrix,  "time_mix_value.weight",      G::Same,          I::Orthogonal,      1.0},
  {Output, "att.output.weight", S::EveryLayer, {C, C, One}, 2, K::Matrix,  "time_mix_output.weight",     G::Same,          I::Zero,            0},
  {LnXW, "att.ln_x.weight", S::EveryLayer, {C, One, One},   1, K::Vector,  "time_mix_ln.weight",         G::Same,          I::LayerScale,      0.7},
  {LnXB, "att.ln_x.bias",  S::EveryLayer, {C, One, One},    1, K::Vector,  "time_mix_ln.bias",           G::Same,          I::Zero,            0},
  {FfnXK, "ffn.x_k",       S::EveryLayer, {One, One, C},    3, K::Vector,  "channel_mix_lerp_k.weight",  G::Squeezed,      I::Formula,         0},
  {FfnKey, "ffn.key.weight", S::EveryLayer, {F, C, One},    2, K::Matrix,  "channel_mix_key.weight",     G::Same,          I::Orthogonal,      1.0},
  {FfnValue, "ffn.value.weight", S::EveryLayer, {C, F, One}, 2, K::Matrix, "channel_mix_value.weight",   G::Same,          I::Zero,            0},
  {LnOutW, "ln_out.weight", S::Model,     {C, One, One},    1, K::Vector,  "output_norm.weight",         G::Same,          I::Const,           1.0},
  {LnOutB, "ln_out.bias",  S::Model,      {C, One, One},    1, K::Vector,  "output_norm.bias",           G::Same,          I::Zero,            0},
  {Head, "head.weight",    S::Model,      {V, C, One},      2, K::Matrix,  "output.weight",              G::Same,          I::HeadOrthogonal,  0.5},
};
// clang-format on

constexpr bool ids_in_order() {
  for (size_t i = 0; i < std::size(kParams); ++i)
    if (size_t(kParams[i].id) != i) return false;
  return true;
}
static_assert(ids_in_order(), "kParams must list every ParamId once, in enum order");

int64_t resolve(Dim d, const ParamDims& p) {
  switch (d) {
    case One:
      return 1;
    case C:
      return p.C;
    case V:
      return p.V;
    case F:
      return p.F;
    case H:
      return p.H;
    case N:
      return p.N;
    case DDecay:
      return p.d_decay;
    case DAaa:
      return p.d_aaa;
    case DValue:
      return p.d_value;
    case DGate:
      return p.d_gate;
  }
  return 0;
}

}  // namespace

std::span<const ParamSpec> rwkv7_parameters() { return kParams; }

const ParamSpec& param_spec(ParamId id) { return kParams[size_t(id)]; }

Shape param_shape(const ParamSpec& s, const ParamDims& d) {
  Shape out;
  for (int i = 0; i < s.rank; ++i) out.push_back(resolve(s.dims[size_t(i)], d));
  return out;
}

ParamName::ParamName(const ParamSpec& s, int64_t layer) {
  int n = 0;
  if (s.scope == ParamScope::Model) {
    n = std::snprintf(buf_, sizeof buf_, "%.*s", int(s.name.size()), s.name.data());
  } else {
    n = std::snprintf(buf_, sizeof buf_, "blocks.%" PRId64 ".%.*s", layer, int(s.name.size()),
                      s.name.data());
  }
  if (n < 0 || size_t(n) >= sizeof buf_) throw Error("parameter name too long");
  size_ = size_t(n);
}

}  // namespace rwkv7
