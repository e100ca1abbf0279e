#pragma once
// Picks the next token from logits: temperature, top-k, top-p, and the RWKV repetition
// penalties (presence + frequency on tokens already generated, decayed each step).
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace rwkv7 {

class Context;

struct SamplerOptions {
  float temperature = 1.0f;        // 0 = greedy (arg-max)
  float top_p = 1.0f;              // 1 = off
  int top_k = 0;                   // 0 = off
  float presence_penalty = 0.0f;   // subtracted once from every generated token's logit
  float frequency_penalty = 0.0f;  // subtracted per (decayed) occurrence
  float penalty_decay = 0.996f;    // occurrence counts are multiplied by this each step
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& opts);
  // Applies penalties, then samples. Does not record the token: call accept() for that.
  int32_t sample(std::span<const float> logits);
  // Records a generated token for the penalties (decays old counts first).
  void accept(int32_t token);
  void reset();  // forgets generated tokens (new conversation)
  const SamplerOptions& options() const { return opts_; }

 private:
  SamplerOptions opts_;
  std::mt19937_64 rng_;
  // Decayed occurrence count per token id, and the ids with a count (in order of first use):
  // sized to the vocabulary on first use, so accepting tokens allocates nothing later.
  std::vector<float> counts_;
  std::vector<int32_t> seen_;
  void reserve(size_t vocab);
};

// One token per sequence: out[i] = samplers[i]->sample(logits[i]), the sequences spread over
// the context's threads (a batch's sampling, done one after the other, kept the other threads
// waiting: 32 sequences × a 65,536-token vocabulary). Each sampler draws from its own
// generator, so the tokens do not depend on the thread count. Records nothing (accept() is
// the caller's). Sizes must match and every row needs its own sampler; an error names the row.
std::vector<int32_t> sample_many(Context& ctx, std::span<Sampler* const> samplers,
                                 std::span<const std::span<const float>> logits);

}  // namespace rwkv7
