#pragma once
// The order of the RWKV-7 layers (SPEC §3), written once. Each executor runs the stages on its
// own hardware and may fuse inside a stage (the CUDA one applies tanh/σ and relu² on the way
// into the next product); the order and the data each stage reads and writes are fixed here:
// the CPU/reference graph (model/graph.cpp, inference and training) and the CUDA device graph
// (model/cuda_model.cpp) both run their passes through run_layers.
#include <cstdint>

namespace rwkv7 {

constexpr float kLnEps = 1e-5f;          // every LayerNorm
constexpr float kGroupNormEps = 64e-5f;  // ln_x, the GroupNorm per head (SPEC §3)

// One layer's stages; run_layers runs them for every layer, the training backward's per-layer
// recompute (--checkpoint-layers) for one.
template <class Stages>
void run_layer(Stages& s, int64_t l) {
  s.begin_layer(l);
  // Time mix. xa = LayerNorm(x; ln1); token shift with the carried row; the six mixes
  // xr xw xk xv xa2 xg.
  s.time_mix_inputs();
  // r = Wr·xr, k = Wk·xk, v = Wv·xv and the LoRA down-projections xw·w1, xa2·a1, xg·g1
  // (and xv·v1 after layer 0).
  s.time_mix_products();
  // tanh(·)·w2, (·)·a2, σ(·)·g2 = g (and (·)·v2 after layer 0).
  s.lora_up_products();
  // decay = exp(-e^-0.5 σ(w0 + ·)), a = σ(a0 + ·), value residual towards layer 0's value
  // (layer 0 keeps its value as v_first), kk = normalised k·k_k, k scaled by the rate,
  // WKV inputs -kk and kk·a.
  s.wkv_inputs();
  // The WKV-7 recurrence over each sequence's rows, from and back into its state.
  s.wkv();
  // y = (GroupNorm(y; ln_x) + (r·(k·r_k))·v) · g
  s.gate_and_norm();
  // x += Wo·y
  s.time_mix_output();
  // Channel mix. xk = mix of LayerNorm(x; ln2) with its token shift.
  s.channel_mix_inputs();
  // h = Wk·xk (relu² follows here or on the way into the value product)
  s.channel_mix_key();
  // x += Wv·relu(h)²
  s.channel_mix_output();
}

template <class Stages>
void run_layers(Stages& s, int64_t n_layer) {
  for (int64_t l = 0; l < n_layer; ++l) run_layer(s, l);
}

}  // namespace rwkv7
