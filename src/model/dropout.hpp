#pragma once
// Dropout for training, where RWKV-LM applies it (--dropout p): on the embedding rows before
// ln0 and on the residual stream after each layer's time mix and channel mix
// (x = drop(x + att(ln1(x))), x = drop(x + ffn(ln2(x)))). The mask is a hash of (seed, site,
// layer, row, position in the row, channel), not stored: the forward, the segment pre-pass,
// a recomputed layer and the backward all draw the same mask, and a row cut into segments
// gets the mask of the whole row (so segment gradients equal one-shot gradients).
#include <cstdint>

namespace rwkv7 {

struct Dropout {
  enum Site : uint32_t { Embedding = 0, AfterTimeMix = 1, AfterChannelMix = 2 };

  float p = 0;             // probability of dropping a value; 0 = off
  uint64_t seed = 0;       // one per training step (and rank)
  int64_t positions = 0;   // positions per row in this pass (rows r = b·positions + i)
  int64_t first = 0;       // position in the whole row of this pass's first position (segments)
  int64_t row_length = 0;  // positions of the whole row
  int64_t first_row = 0;   // index of this pass's row 0 in the whole batch (data parallel)

  bool active() const { return p > 0; }

  // x [R, C] *= mask / (1 - p) in place, for the forward (values) and the backward
  // (gradients) alike.
  void apply(float* x, int64_t R, int64_t C, Site site, int64_t layer) const;

  // The seed of one training step's micro-batch (a pure function: a resumed run draws what
  // the uninterrupted one did).
  static uint64_t step_seed(uint64_t run_seed, int64_t step, int64_t micro);

  // Whether value (r, c) of this pass is kept (exposed for tests).
  bool keeps(Site site, int64_t layer, int64_t r, int64_t c, int64_t C) const;
};

}  // namespace rwkv7
