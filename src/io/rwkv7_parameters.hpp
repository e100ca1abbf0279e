#pragma once
// The one list of RWKV-7 parameters (SPEC §2): name, shape, how the graph uses it, its GGUF
// name and form, and its official initialisation. Loading (model/weights.cpp), init
// (model/init.cpp), training (TrainParams::names) and the GGUF mapping (io/gguf_rwkv7.cpp)
// all walk this table; none spells a parameter name of its own.
#include <array>
#include <cstdint>
#include <span>
#include <string_view>

#include "core/tensor.hpp"

namespace rwkv7 {

// clang-format off
enum class ParamId : uint8_t {
  Emb, Ln1W, Ln1B, Ln2W, Ln2B, Ln0W, Ln0B,
  XR, XW, XK, XV, XA, XG,
  W1, W2, W0, A1, A2, A0, V1, V2, V0, G1, G2,
  KK, KA, RK, Receptance, Key, Value, Output, LnXW, LnXB,
  FfnXK, FfnKey, FfnValue, LnOutW, LnOutB, Head,
};
// clang-format on

// Which tensors of a model have the parameter.
enum class ParamScope : uint8_t {
  Model,          // one, named without a block prefix
  FirstLayer,     // blocks.0 only (ln0)
  EveryLayer,     // blocks.i for every i
  ValueResidual,  // blocks.i for every i; layer 0's copy is unused (released files may omit it)
};

// Symbolic dimensions, resolved by ParamDims.
enum class Dim : uint8_t { One, C, V, F, H, N, DDecay, DAaa, DValue, DGate };

// How the graph holds it: a product matrix read as stored (any file dtype, quantised too);
// a per-channel vector copied to fp32 ([C] or [1, 1, C] in the file); a LoRA factor copied
// transposed to fp32; the per-head matrix r_k copied to fp32.
enum class ParamKind : uint8_t { Matrix, Vector, Lora, HeadMatrix };

// llama.cpp's rwkv7 layout (ggml ne = the PyTorch shape reversed unless said):
enum class GgufForm : uint8_t {
  Same,            // same bytes
  Squeezed,        // [1, 1, C] stored as [C]
  LerpFused,       // att.x_r..x_g stacked into one [6, C] tensor (lerp_index = position)
  Flattened,       // r_k [H, N] stored as [C]
  TransposedLora,  // stored as its transpose
};

// The official initialisation (RWKV-LM x070 generate_init_weight); `value` is the constant,
// the uniform bound or the orthogonal gain.
enum class ParamInit : uint8_t {
  Zero,
  Const,           // value
  Uniform,         // [-value, value)
  Orthogonal,      // gain value
  LoraOrthogonal,  // gain value times sqrt(rows / cols) for tall factors
  HeadOrthogonal,  // gain value times sqrt(V / C) when V > C
  LayerScale,      // ((1 + layer) / L) ^ value
  Formula,         // the per-channel formula of that parameter (model/init.cpp)
};

struct ParamSpec {
  ParamId id;
  std::string_view name;  // after "blocks.i." for block scopes
  ParamScope scope;
  std::array<Dim, 3> dims;  // the first `rank`
  int rank;
  ParamKind kind;
  std::string_view gguf;  // after "blk.i." for per-layer scopes, else the full name
  GgufForm gguf_form;
  ParamInit init;
  double value;
  int lerp_index = -1;  // GgufForm::LerpFused: position in the stack
};

// Every parameter in the official state_dict order: emb, then per block ln1, ln2, ln0
// (layer 0), the time mix and the channel mix, then ln_out and head.
std::span<const ParamSpec> rwkv7_parameters();

const ParamSpec& param_spec(ParamId id);

struct ParamDims {
  int64_t C = 0, V = 0, F = 0, H = 0, N = 0, d_decay = 0, d_aaa = 0, d_value = 0, d_gate = 0;
};

Shape param_shape(const ParamSpec& s, const ParamDims& d);

// A full tensor name ("blocks.3.att.w1"), built without allocating (training looks names up
// every step).
class ParamName {
 public:
  ParamName(const ParamSpec& s, int64_t layer);
  std::string_view view() const { return {buf_, size_}; }
  operator std::string_view() const { return view(); }

 private:
  char buf_[64];
  size_t size_ = 0;
};

// Which copies to visit: the unused layer-0 value residual (v0/v1/v2) exists in released files
// and in what init writes, but is neither loaded nor trained.
enum class UnusedCopies : uint8_t { Skip, Include };

// Calls fn(spec, layer) for every tensor of an n_layer model in state_dict order; layer is -1
// for model-scope parameters.
template <class Fn>
void for_each_parameter(int64_t n_layer, UnusedCopies unused, Fn&& fn) {
  // The table lists the model-scope parameters before the blocks (emb) and after them.
  const std::span<const ParamSpec> all = rwkv7_parameters();
  size_t first_block = 0;
  while (first_block < all.size() && all[first_block].scope == ParamScope::Model) ++first_block;
  for (size_t i = 0; i < first_block; ++i) fn(all[i], int64_t(-1));
  for (int64_t l = 0; l < n_layer; ++l) {
    for (size_t i = first_block; i < all.size(); ++i) {
      const ParamSpec& s = all[i];
      if (s.scope == ParamScope::Model) continue;
      if (s.scope == ParamScope::FirstLayer && l != 0) continue;
      if (s.scope == ParamScope::ValueResidual && l == 0 && unused == UnusedCopies::Skip) continue;
      fn(s, l);
    }
  }
  for (size_t i = first_block; i < all.size(); ++i)
    if (all[i].scope == ParamScope::Model) fn(all[i], int64_t(-1));
}

}  // namespace rwkv7
