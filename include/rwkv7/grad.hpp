#pragma once
// Training math as a tool: mean next-token cross-entropy of token rows under a checkpoint's
// weights, and its exact gradient w.r.t. every parameter (fp32, official names and shapes), so
// it compares tensor by tensor with the official trainer's gradients.
#include <cstdint>
#include <string>
#include <vector>

#include "rwkv7/model.hpp"

namespace rwkv7 {

struct GradientOptions {
  BackendKind backend = BackendKind::Cpu;
  int threads = 0;              // 0 = all cores
  bool l2wrap = false;          // add the official L2Wrap term (the loss value is unchanged)
  int64_t wkv_checkpoint = 32;  // backward keeps WKV states every this many positions
  // Run each row in consecutive segments of this many positions (the last may be shorter),
  // the state carried forward and its gradient carried back: the same gradients as the whole
  // row at once, in memory that grows with the segment, not the row. 0 = whole rows.
  int64_t segment = 0;
  bool truncate_bptt = false;      // with segments: stop the state's gradient at boundaries
  bool checkpoint_layers = false;  // keep only layer inputs; recompute each layer in backward
  // Only predicted positions t >= loss_from count (loss = their mean; the others get no
  // gradient): with segments, state_grad_norms then show how far back a late loss reaches.
  int64_t loss_from = 0;
  // "fp32", or "bf16": every product with both operands rounded to bf16, sums in fp32 (what
  // `rwkv7 train --precision bf16` trains with); the rest stays fp32.
  std::string precision = "fp32";
};

struct NamedGradient {
  std::string name;            // the parameter's official name, e.g. "blocks.0.att.key.weight"
  std::vector<int64_t> shape;  // the checkpoint's shape
  std::vector<float> values;
};

struct LossAndGradients {
  double loss = 0;                       // mean cross-entropy over all predicted positions
  int64_t positions = 0;                 // rows · (row length - 1 - loss_from)
  std::vector<NamedGradient> gradients;  // official state_dict order; layer 0 has no v0/v1/v2
  // With segments: |d loss / d state| at the start of each segment (entry 0: 0, detached).
  std::vector<double> state_grad_norms;
};

// Each row predicts row[1:] from row[:-1]; rows must have equal length >= 2 and ids < V
// (Error otherwise, as for a checkpoint that is not an RWKV-7 model).
LossAndGradients compute_gradients(const std::string& model_path,
                                   const std::vector<std::vector<int32_t>>& rows,
                                   const GradientOptions& opts = {});

}  // namespace rwkv7
