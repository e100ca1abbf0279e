#pragma once
// Training and fine-tuning: data, warm-up + cosine schedule, AdamW (official parameter
// groups), clipping, accumulation, validation, atomic checkpoints with exact resume, a CSV log
// and a loss plot in the output folder.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "rwkv7/init.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7::train {

struct TrainOptions {
  // Model: an existing checkpoint, or a fresh official initialisation.
  std::string init_path;
  std::optional<InitOptions> fresh;
  // Data
  std::vector<std::string> data;
  std::string vocab;  // World vocabulary; empty = raw bytes
  double val_fraction = 0.1;
  bool shuffle = true;
  uint64_t seed = 0;
  // Optimisation
  int64_t steps = 1000, batch = 4, ctx = 512, accum = 1, warmup = 10;
  double lr_init = 6e-4, lr_final = 6e-5, grad_clip = 1.0, weight_decay = 0.001;
  bool l2wrap = true;
  // Long rows: run each row in segments of this many positions with the state carried and the
  // exact gradient (0 = the whole row at once); see GradientOptions::segment.
  int64_t segment = 0;
  bool truncate_bptt = false;      // with segments: no gradient across segment boundaries
  bool checkpoint_layers = false;  // keep layer inputs only; recompute each layer in backward
  // Dropout probability where RWKV-LM applies it (the embedding rows and the residual stream
  // after each time mix and channel mix); the masks depend on seed, step, row and position,
  // so a resumed run and a data-parallel run draw the ones a single uninterrupted run would.
  double dropout = 0;
  // Precision of the products (every matrix product of forward and backward): "fp32", or
  // "bf16" (mixed precision: both operands rounded to bf16, sums in fp32; AVX512_BF16 dot
  // products where the CPU has them). Master weights, AdamW moments, norms, the WKV and the
  // loss stay fp32; validation runs the fp32 weights in fp32.
  std::string precision = "fp32";
  // Length curriculum "256:0,1024:2000,...": the context from each step on, batch·ctx tokens
  // per step kept by shrinking the batch (at least 1 row), rows cut at multiples of the
  // current context; the learning-rate schedule spans the whole run. Empty = ctx throughout.
  std::string ctx_schedule;
  // Each row reads its own stretch of the data continuously and starts from the (detached)
  // state where the same row of the previous step ended (zero states at the first step of a
  // process, including after --resume).
  bool carry_state = false;
  // With carry_state: probability that a row goes back to a point remembered from earlier in
  // the streams (the last 64 points where rows ended) and continues from there, from that
  // point's state. 0 = off.
  double replay = 0;
  // What is trained: "all" (every weight) or "state" (state tuning: only each layer's initial
  // WKV state, which every row starts from; the weights stay; the result is OUT/state.safetensors
  // for generate/chat --state-in and serve --state; checkpoints hold the state and its moments).
  std::string tune = "all";
  // LoRA (rwkv7/lora.hpp): rank > 0 trains only adapters of this rank on the large matrices,
  // scaled by alpha / rank (alpha 0 = the rank); the result is OUT/lora.safetensors for
  // `rwkv7 lora merge` and --lora at inference (checkpoints hold the adapters and moments).
  int64_t lora_rank = 0;
  double lora_alpha = 0;
  // Output
  std::string out_dir;
  std::string log_json;        // one JSON object per step (optional)
  int64_t save_every = 0;      // 0 = only at the end
  int64_t val_every = 0;       // 0 = only at the end
  int64_t val_tokens = 32768;  // held-out tokens per validation, the same prefix each time; 0 = all
  std::string save_dtype = "f32";  // dtype of the final model.pth (checkpoints are f32)
  bool resume = false;
  int64_t stop_after = 0;  // stop (with a checkpoint) once this many steps are done; 0 = never
  int threads = 0;
};

struct StepReport {
  int64_t step = 0, steps = 0;
  int64_t ctx = 0, batch = 0;  // this step's shape (the curriculum changes it)
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, elapsed_s = 0, eta_s = 0;
  std::optional<double> val_loss;
};

struct TrainSummary {
  int64_t steps_done = 0;
  double last_loss = 0;
  std::optional<double> final_val_loss;
  std::string model_path;        // --tune all: the trained model
  std::string state_path;        // --tune state: the tuned start state
  std::string lora_path;         // --lora-rank: the adapters
  int64_t trainable_values = 0;  // parameters the optimiser changed
  // The rank of this process in a data-parallel run (mpirun): 0 wrote the files and reported
  // the steps; the others only trained, and report nothing.
  int rank = 0;
  int ranks = 1;
};

// `rwkv7 data binidx`: a JSONL file (one {"text": ...} object per line) tokenised into an
// RWKV-LM binidx data set PREFIX.bin + PREFIX.idx (a trailing .bin or .idx on `prefix` is
// dropped) as RWKV-LM's make_data writes one: each non-empty document's tokens and then a 0,
// one sequence and one document each, u16 tokens (i32 for a vocabulary over 65536). Each
// file is written to a temporary name and renamed. Error naming the line of a text that is
// not valid UTF-8 under the World vocabulary.
struct BinidxSummary {
  int64_t documents = 0, tokens = 0;
  std::string bin_path, idx_path;
};
BinidxSummary make_binidx(const std::string& jsonl_path, const std::string& prefix,
                          const Tokenizer& tok);

// Runs (or resumes) training; `on_step` is called after every optimiser step, `on_message`
// with one-line notes (resumed from ..., checkpoint written ...).
TrainSummary run_training(const TrainOptions& opts,
                          const std::function<void(const StepReport&)>& on_step,
                          const std::function<void(const std::string&)>& on_message);

}  // namespace rwkv7::train
