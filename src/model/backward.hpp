#pragma once
// Training math of RWKV-7: mean next-token cross-entropy over a batch of equal-length rows and
// its exact gradient w.r.t. every parameter. Parameters and gradients are fp32 tensors in the
// official layout, addressed by the official names (SPEC §2), so gradients compare 1:1 with
// the reference trainer's.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.hpp"
#include "ops/ops.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {

class ThreadPool;

namespace train {

// name → fp32 tensor of the checkpoint's shape.
using Gradients = TensorMap;

// name → a weight's values rounded to bf16 (bits), in its tensor's layout.
using Bf16Weights = std::map<std::string, std::vector<uint16_t>, std::less<>>;

struct TrainParams {
  ModelConfig config;
  TensorMap tensors;  // every parameter the graph uses, fp32
  // Optional (mixed-precision training): the weights of the dense products (every 2-D
  // *.weight but the embedding) rounded to bf16, nearest even. With them, products in
  // ProductPrecision::BF16 read 2-byte weights instead of rounding the 4-byte ones at every
  // product; the results are the same. Whoever changes `tensors` must keep them equal
  // (AdamW::step does, given them; remake them after any other change: a resume, a LoRA
  // merge); empty = not kept. (A copy of the wrong size is refused when the graph attaches it.)
  Bf16Weights bf16_weights;

  const float* get(std::string_view name) const;         // Error when absent
  const uint16_t* bf16_of(std::string_view name) const;  // nullptr when not kept
  // (Re)makes bf16_weights from the current tensors.
  void keep_bf16_weights();
  // The parameters the graph uses, in the official state_dict order (layer 0 has no
  // v0/v1/v2: its value is v_first).
  std::vector<std::string> names() const;
};

// Whether `name` (of that shape) is a 2-D `*.weight` matrix: what AdamW decays; each but the
// embedding (a lookup) is a dense product's weight, what bf16_weights keeps.
bool is_weight_matrix(std::string_view name, const Shape& shape);

// Validates the checkpoint (as Model::load does) and upcasts every used tensor to fp32.
TrainParams params_from_file(const TensorFile& file);

struct GradOptions {
  bool l2wrap = false;          // SPEC §5: add 1e-4/(B·T)·max_logit to each arg-max logit grad
  int64_t wkv_checkpoint = 32;  // WKV states kept every this many steps during backward
  // Segment training: the rows run in consecutive segments of this many positions (the last
  // may be shorter), the state carried from one to the next; only the states at segment
  // boundaries are kept, and the backward recomputes each segment from its input state,
  // passing the gradient of the state back to the previous segment. Memory grows with the
  // segment, not the row. 0 = the whole row at once. The gradients are those of the whole row.
  int64_t segment = 0;
  // With segments: no gradient through the state at segment boundaries (truncated BPTT; the
  // forward still carries the state).
  bool truncate_bptt = false;
  // Keep only each layer's input in the forward and recompute the layer in the backward
  // (less memory, one more forward of every layer).
  bool checkpoint_layers = false;
  // Parameters whose gradient is not wanted (state tuning, LoRA): the matrix products skip
  // their weight gradient, which stays zero (the small ops still fill theirs). Null = all.
  const std::function<bool(std::string_view name)>* frozen = nullptr;
  // Dropout where RWKV-LM applies it (model/dropout.hpp): the embedding rows and the residual
  // stream after each time mix and channel mix, values kept scaled by 1/(1 - p). The masks
  // come from dropout_seed (one per step), the row and the position in it. 0 = off.
  float dropout = 0;
  uint64_t dropout_seed = 0;
  int64_t dropout_first_row = 0;  // these rows' place in the whole batch (data parallel)
  // One state per row to start from; null = zeros.
  const std::vector<State>* initial_states = nullptr;
  // When given, receives d loss / d (each row's initial state) (state tuning); otherwise the
  // initial state is detached and its gradient not computed.
  std::vector<State>* initial_state_grads = nullptr;
  // Target distributions in place of the rows' next tokens, [B, T−1, V] row-major (position t
  // of row b predicts with p = soft_targets[(b·(T−1) + t)·V ...]): the loss is Σ p·(lse − l)
  // (KL(p‖q) + H(p)), e.g. a teacher's next-token distributions. Null = the next tokens.
  const std::vector<float>* soft_targets = nullptr;
  // Only positions t >= loss_from of each row (0-based among its T−1 predicted positions)
  // count: the loss is their mean and the others get no gradient (e.g. the gradient of a late
  // segment's loss w.r.t. earlier states).
  int64_t loss_from = 0;
  // When given, receives each row's state after its last position.
  std::vector<State>* final_states = nullptr;
};

struct GradResult {
  double loss = 0;        // mean cross-entropy over all predicted positions
  int64_t positions = 0;  // B · (T - 1)
  Gradients grads;        // one per name in TrainParams::names()
  // With segments (and the state gradient carried): the L2 norm of the loss's gradient w.r.t.
  // the state (all rows) at the start of each segment, [segments]; entry 0 is 0 (the initial
  // state is detached). Shows whether the gradient fades with distance.
  std::vector<double> state_grad_norms;
};

namespace detail {
struct Acts;
}

// The buffers one training worker reuses from step to step (activations, [R, V] logits):
// passing the same workspace to every call avoids re-faulting hundreds of MB per step.
// Belongs to one caller at a time.
class TrainWorkspace {
 public:
  TrainWorkspace();
  ~TrainWorkspace();
  TrainWorkspace(TrainWorkspace&&) noexcept;
  TrainWorkspace& operator=(TrainWorkspace&&) noexcept;

  std::unique_ptr<detail::Acts> acts;
};

// Each row predicts row[1:] from row[:-1]. Rows must have equal length >= 2 and ids < V
// (Error otherwise). Dense products go through `backend` (reference = plain double loops,
// cpu = SIMD + threads); the WKV recurrence runs heads in parallel on `pool` when given.
GradResult loss_and_gradients(const TrainParams& params,
                              const std::vector<std::vector<int32_t>>& rows, const Backend& backend,
                              ThreadPool* pool = nullptr, const GradOptions& opts = {});
// The same, reusing `ws` and the gradient tensors already in `out` (overwritten, whatever
// they held; re-made when a name or shape differs), so that a training loop allocates nothing
// per step.
void loss_and_gradients(const TrainParams& params, const std::vector<std::vector<int32_t>>& rows,
                        const Backend& backend, ThreadPool* pool, const GradOptions& opts,
                        TrainWorkspace& ws, GradResult& out);

// The RWKV-7 blocks without the token embedding and the LM head, for models with input and
// output layers of their own (time series; same graph, ops and backward). Forward: B rows of
// T input embeddings [B·T, C] (before ln0), each from the zero state → the hidden rows after
// ln_out [B·T, C] (kept in `ws`). Backward of that forward: d loss / d hidden [B·T, C] → the
// gradient of every parameter (emb.weight and head.weight, unused, get zeros) and d loss /
// d embeddings [B·T, C].
const std::vector<float>& blocks_forward(const TrainParams& params, std::span<const float> emb,
                                         int64_t B, int64_t T, const Backend& backend,
                                         TrainWorkspace& ws);
void blocks_backward(const TrainParams& params, std::span<const float> dhidden,
                     const Backend& backend, ThreadPool* pool, const GradOptions& opts,
                     TrainWorkspace& ws, Gradients& grads, std::vector<float>& demb);

}  // namespace train
}  // namespace rwkv7
