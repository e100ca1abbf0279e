#pragma once
// Shared by train_forward.cpp and backward.cpp: the activations the forward keeps for the
// backward, and the dense products in both directions over a Backend.
#include <deque>
#include <memory>
#include <vector>

#include "model/activations.hpp"
#include "model/backward.hpp"
#include "model/forward.hpp"
#include "model/weights.hpp"

namespace rwkv7::train::detail {

using Buf = std::vector<float>;

// The backward's dense products on the backend (the forward's go through the graph's
// Backend::matmul). nn.Linear weights are [out, in]; LoRA factors are [in, out]. They
// ACCUMULATE into dx / dw.
struct Products {
  const Backend& be;
  // g [p, q] += aᵀ·b with a [R, p], b [R, q]
  void atb_add(const float* a, const float* b, int64_t R, int64_t p, int64_t q, float* g) const;
  void linear_back(const float* x, const float* w, const float* dy, int64_t R, int64_t in,
                   int64_t out, float* dx, float* dw) const;
  void lora_back(const float* x, const float* m, const float* dy, int64_t R, int64_t in,
                 int64_t out, float* dx, float* dm) const;
};

using rwkv7::LayerActs;

struct Acts {
  int64_t B = 0, T = 0, R = 0;           // rows, positions per row (inputs), B·T
  std::vector<int32_t> inputs, targets;  // [R]
  Buf emb, ln0_stats;                    // embedding rows before ln0
  std::vector<LayerActs> layers;
  Buf x_final, lnout_stats, xo;  // before / after ln_out
  Buf logits;                    // [R, V]
  Buf v_first;                   // [R, C] layer 0's value (the graph's copy)

  // The forward runs on the inference graph: B zero states (one per row), its segments and
  // scratch, kept from step to step.
  std::vector<State> states;
  std::vector<Segment> segs;
  ForwardScratch fwd;

  // Backward temporaries, reused from step to step (fresh vectors would be page-faulted in
  // and trimmed back every step). zeros() hands out the next one; a deque keeps references.
  std::deque<Buf> scratch;
  Buf dxo, dx, dv_first, demb;               // backward's [R, C] streams
  std::vector<double> loss_parts;            // [R]
  std::vector<std::string> names;            // TrainParams::names(), made once
  std::unique_ptr<ModelWeights> weights;     // the graph's views of the parameters
  std::vector<const float*> weight_sources;  // the parameter buffers they view
  int64_t names_layers = -1;
  size_t scratch_next = 0;
  Buf& zeros(size_t n) {
    if (scratch_next == scratch.size()) scratch.emplace_back();
    Buf& b = scratch[scratch_next++];
    b.assign(n, 0.0f);
    return b;
  }
};

// The graph's weights viewing the training parameters (no copies of the big matrices; LoRA
// factors transposed, small vectors copied): made again after the parameters change.
ModelWeights weights_of(const TrainParams& p);
// weights_of(p), kept in `acts` and refreshed in place while p's buffers stay the same.
const ModelWeights& current_weights(const TrainParams& p, Acts& acts);

// Runs the graph (model/graph.cpp) over acts.inputs (B rows of T), keeping the activations
// the backward reads; the logits land in acts.logits.
void train_forward(const ModelWeights& w, const Backend& be, Acts& acts);
// The layers alone over acts.emb ([R, C] input rows before ln0, filled by the caller, with
// acts.B/T/R set): ln0, the blocks and ln_out into acts.xo; no head.
void train_forward_embedded(const ModelWeights& w, const Backend& be, Acts& acts);

}  // namespace rwkv7::train::detail
