#pragma once
// The inference forward of the RWKV-7 graph over a ragged batch of sequences, each with its
// own carried State. Scratch buffers come from the caller (its Context), so the weights stay
// immutable and one model serves any number of threads.
#include <cstdint>
#include <deque>
#include <span>
#include <utility>
#include <vector>

#include "model/weights.hpp"
#include "ops/ops.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {

// A run of consecutive rows of one pass that belong to one sequence.
struct Segment {
  State* state;
  int64_t row0, rows;
};

// Buffers reused from call to call: they grow to the largest pass seen, then nothing is
// allocated (a decode step on a warm scratch allocates nothing).
struct ForwardScratch {
  // Handed out in order by get(); reset() starts over. A deque keeps references stable.
  std::deque<std::vector<float>> bufs;
  size_t next = 0;
  std::vector<float>& get(size_t n) {
    if (next == bufs.size()) bufs.emplace_back();
    std::vector<float>& b = bufs[next++];
    b.resize(n);
    return b;
  }
  void reset() { next = 0; }

  std::vector<float> x, v_first, normed, logits;  // [R, C], [R, C], [rows, C], [rows, V]
  std::vector<Segment> segs;
  std::vector<size_t> seq_of_seg, done;
  std::vector<std::pair<size_t, int64_t>> wanted;  // rows whose logits were asked for
  std::vector<const float*> prev;                  // token-shift source per row
  std::vector<int32_t> tokens;                     // [R] token of each row of a pass
  std::vector<Wkv7Args> wkv_args;                  // one per segment of a layer
};

// Checks the batch (states fit, tokens in the vocabulary, outputs given), then runs it in
// passes of at most `chunk` positions per sequence.
void run_forward(const ModelWeights& w, const Backend& backend, int64_t chunk,
                 ForwardScratch& scratch, std::span<SequenceRequest> batch);

// The layers over input rows instead of token ids (time series): emb [T, C] rows of one
// sequence before ln0, its state advanced in place; hidden [T, C] after ln_out. One pass (the
// caller bounds T).
void run_blocks_embedded(const ModelWeights& w, const Backend& backend, ForwardScratch& scratch,
                         State& state, std::span<const float> emb, std::vector<float>& hidden);

// Error unless the state has this model's shape (and fingerprint, when the state has one).
void check_state(const State& s, const ModelConfig& c, const std::string& fingerprint);

}  // namespace rwkv7
