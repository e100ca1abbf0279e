#pragma once
// Shared by train_forward.cpp and backward.cpp: the activations the forward keeps for the
// backward, and the dense products in both directions over a Backend.
#include <deque>
#include <memory>
#include <vector>

#include "model/activations.hpp"
#include "model/backward.hpp"
#include "model/dropout.hpp"
#include "model/forward.hpp"
#include "model/weights.hpp"

namespace rwkv7::train::detail {

using Buf = std::vector<float>;

// A weight gradient a product fills: null = not wanted; `overwrite` when nothing was added to
// it yet in this call (the product writes it rather than adding to it, so the gradient needs
// no zeroing pass first).
struct WeightGrad {
  float* data = nullptr;
  bool overwrite = false;
};

// The backward's dense products on the backend (the forward's go through the graph's
// Backend::matmul). nn.Linear weights are [out, in]; LoRA factors are [in, out]. They
// ACCUMULATE into dx, and into dw unless WeightGrad::overwrite.
// A product's weight: its fp32 values and, when mixed-precision training keeps one, their
// bf16 copy (TrainParams::bf16_weights).
struct ProductWeight {
  const float* values;
  const uint16_t* bf16 = nullptr;
};

struct Products {
  const Backend& be;
  // g [p, q] (+)= aᵀ·b with a [R, p], b [R, q]
  void atb(const float* a, const float* b, int64_t R, int64_t p, int64_t q, WeightGrad g) const;
  void linear_back(const float* x, ProductWeight w, const float* dy, int64_t R, int64_t in,
                   int64_t out, float* dx, WeightGrad dw) const;
  void lora_back(const float* x, const float* m, const float* dy, int64_t R, int64_t in,
                 int64_t out, float* dx, WeightGrad dm) const;
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

  // The forward runs on the inference graph from `initial` (one state per row: zeros, or
  // where the previous segment of the rows ended); `states` are advanced in place by the
  // graph, `initial` stays for the backward (its shift rows and WKV matrices are the inputs
  // of the pass's first position).
  std::vector<State> initial, states;
  std::vector<Segment> segs;
  ForwardScratch fwd;

  // Per-layer checkpointing: the forward keeps only each layer's input x [R, C] (and
  // v_first); the backward recomputes one layer at a time into layers[0].
  bool checkpoint_layers = false;
  // Training dropout of this pass (off unless GradOptions::dropout > 0): the forward, the
  // segment pre-pass, a recomputed layer and the backward draw the same masks from it.
  Dropout dropout;
  std::vector<Buf> layer_inputs;  // [L][R, C]
  Buf recompute_x;

  // Segment training: the rows' states before each segment ([segment][row]), the gradient
  // w.r.t. the state after the current segment and before it ([row]), and the token shift
  // rows of one layer gathered [B, C] for the shift backward.
  std::vector<std::vector<State>> boundaries;
  std::vector<State> d_final, d_initial;
  Buf shift_prev, shift_dprev;

  // Backward temporaries, reused from step to step (fresh vectors would be page-faulted in
  // and trimmed back every step). zeros() hands out the next one; a deque keeps references.
  std::deque<Buf> scratch;
  Buf dxo, dx, dv_first, demb;                          // backward's [R, C] streams
  std::vector<double> loss_parts;                       // [R]
  std::vector<Wkv7TrainArgs<float>> wkv_backward_args;  // one per row, for Backend::wkv7_backward
  // Per pool part: parameter-gradient sums of the row-parallel backward ops, and the token
  // shift's gradient for the row before the part's first (row -1: none).
  std::vector<Buf> part_sums, part_edges;
  std::vector<int64_t> part_edge_rows;
  // The parameter gradients, sorted by data, each flagged while nothing filled it in this call:
  // they are not zeroed in advance; the first product to fill one writes it, the first op to
  // add to one zeroes it first, and the rest are zeroed at the end (backward.cpp
  // prepare_gradients / take_untouched / finish_gradients). A vector, kept from step to step:
  // a warm step allocates nothing.
  struct GradSlot {
    float* data;
    int64_t count;
    bool untouched;
  };
  std::vector<GradSlot> grad_slots;
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

// A zero state of the model's shape (a row's state before its first token).
State zero_state(const ModelConfig& c);
// Error ("<who>: the initial state of row <row> ...") unless `s` has the shape of a state of
// model `c` (no allocation unless it fails: the training forward calls it every step).
void check_state_shape(const State& s, const ModelConfig& c, const char* who, int64_t row);
// to = from, element by element (the vectors keep their buffers: no allocation once warm).
void assign_states(std::vector<State>& to, const std::vector<State>& from);

// Runs the graph (model/graph.cpp) over acts.inputs (B rows of T) from acts.initial, keeping
// the activations the backward reads (or only the layer inputs, with checkpoint_layers); the
// logits land in acts.logits and the states after the last position in acts.states.
void train_forward(const ModelWeights& w, const Backend& be, Acts& acts);
// The layers alone over acts.emb ([R, C] input rows before ln0, filled by the caller, with
// acts.B/T/R set): ln0, the blocks and ln_out into acts.xo; no head.
void train_forward_embedded(const ModelWeights& w, const Backend& be, Acts& acts);

// Only advances acts.states over acts.inputs (B rows of T): no activations kept, no logits.
void advance_states(const ModelWeights& w, const Backend& be, Acts& acts);

// With checkpoint_layers, after train_forward: recomputes layer `l` from its kept input and
// its states in acts.initial, returning its activations (valid until the next call).
const LayerActs& recompute_layer(const ModelWeights& w, const Backend& be, Acts& acts, int64_t l);

}  // namespace rwkv7::train::detail
