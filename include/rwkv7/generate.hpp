#pragma once
// Text generation on top of Model + State + Tokenizer + Sampler: feed a prompt, then sample
// token by token, streaming complete UTF-8 text and stopping at a stop string, end-of-text
// (token 0), a token limit, or when the caller's callback says so.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rwkv7/context.hpp"
#include "rwkv7/model.hpp"
#include "rwkv7/sampler.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7 {

struct GenerateOptions {
  int64_t max_tokens = 200;
  std::vector<std::string> stop;    // generation ends when the text contains one (not printed)
  bool stop_at_end_of_text = true;  // token 0 ends the text (not fed to the state)
};

struct GenerateResult {
  std::string text;             // what was streamed (without the stop string)
  std::vector<int32_t> tokens;  // generated tokens, in order
  int64_t prompt_tokens = 0;
  double prompt_seconds = 0, generate_seconds = 0;
  // "max_tokens", "end_of_text", "stop_string", or "cancelled" (the callback returned false)
  std::string stop_reason;
};

// One generated token of one sequence of a batch, as it happens.
struct TokenEvent {
  size_t sequence = 0;    // index of the request in the batch
  int32_t token = 0;      // the sampled id (end-of-text included, when it ends the text);
                          // -1 for text held back until the end and released then
  std::string_view text;  // printable text released by this token (may be empty: a partial
                          // UTF-8 character or the start of a possible stop string is held)
  float logprob = 0;      // log-probability of the token under the model (raw logits)
};
// Returns whether the sequence goes on: false cancels it (its slot is freed at once).
using TokenCallback = std::function<bool(const TokenEvent&)>;

// One sequence of a batched generation. Each has its own state, sampler and options.
struct GenerationRequest {
  std::span<const int32_t> prompt;
  State* state = nullptr;
  Sampler* sampler = nullptr;
  GenerateOptions options;
  // In: logits to continue from when `prompt` is empty. Out (when given): the logits after
  // the last token fed, so that a later call can continue the text.
  std::vector<float>* logits = nullptr;
};

// Generates for every request at once on the caller's Context: one batched forward reads
// all prompts, then one batched forward per step decodes one token of every running
// sequence. A sequence's tokens do not depend on the others in the batch. Every sampled token
// but end-of-text is fed to its state (so a later call continues the text). Results are in
// request order.
std::vector<GenerateResult> generate_batch(const Model& model, Context& ctx, const Tokenizer& tok,
                                           std::span<GenerationRequest> requests,
                                           const TokenCallback& on_token);

// One sequence on a Context of LoadOptions::threads threads; on_text gets each piece of printable
// text as soon as it is known not to start a stop string. `prompt_logits` as
// GenerationRequest::logits.
GenerateResult generate(const Model& model, const Tokenizer& tok, State& state,
                        std::span<const int32_t> prompt, Sampler& sampler,
                        const GenerateOptions& opts,
                        const std::function<void(std::string_view)>& on_text,
                        std::vector<float>* prompt_logits = nullptr);

}  // namespace rwkv7
