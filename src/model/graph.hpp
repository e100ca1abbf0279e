#pragma once
// The RWKV-7 graph (SPEC §3-4), written once. Inference (ragged batches with carried states)
// and training (keeping the activations the backward reads) both run their layers through
// GraphPass; only what surrounds the layers (embedding, head, loss) differs.
#include <cstdint>
#include <vector>

#include "model/activations.hpp"
#include "model/block_order.hpp"
#include "model/dropout.hpp"
#include "model/forward.hpp"
#include "model/weights.hpp"
#include "ops/ops.hpp"

namespace rwkv7 {

// One pass of R stacked rows (the segments of several sequences) through the layers. Each
// segment's State supplies the token-shift rows and the WKV state, and is advanced in place.
struct GraphPass {
  const ModelWeights& w;
  const Backend& be;
  const std::vector<Segment>& segs;
  int64_t R;
  ForwardScratch& ws;
  // Training only: dropout on the residual stream after each time mix and channel mix.
  const Dropout* dropout = nullptr;

  // Runs every layer (model/block_order.hpp). x [R, C] is the residual stream, updated in
  // place. v_first [R, C] is layer 0's value (written by layer 0, read by the others). With
  // `keep`, every activation the backward reads is left in it (one LayerActs per layer).
  void layers(std::vector<float>& x, std::vector<float>& v_first,
              std::vector<LayerActs>* keep) const;
  // Runs layer `l` alone (the states' layer-l rows are read and advanced as in layers()):
  // the training backward recomputes one layer at a time from its kept input. With `keep`,
  // that layer's activations are left in it.
  void layer(int64_t l, std::vector<float>& x, std::vector<float>& v_first, LayerActs* keep) const;

  // y[rows] = LayerNorm(x[rows]) on the backend's threads; stats [R, 2] when not null.
  void layer_norm_rows(const float* x, const std::vector<float>& weight,
                       const std::vector<float>& bias, float* y, float* stats) const;
  // x [R, C] = embedding rows of `tokens` (one per row), then ln0 (stats when not null);
  // emb_out, when not null, receives the rows before ln0.
  void embed(const int32_t* tokens, float* x, float* emb_out, float* stats) const;

 private:
  class LayerStages;
  template <class F>
  void each_row_range(const F& fn) const;
  std::vector<float>& buffer(LayerActs* keep, std::vector<float> LayerActs::*field, size_t n) const;
  void shift_mix(
      const std::vector<float>& x, int64_t layer, std::vector<float> State::*carry,
      std::initializer_list<std::pair<const std::vector<float>*, std::vector<float>*>> mixes) const;
};

}  // namespace rwkv7
