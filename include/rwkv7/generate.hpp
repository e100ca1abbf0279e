#pragma once
// Text generation on top of Model + State + Tokenizer + Sampler: feed a prompt, then sample
// token by token, streaming complete UTF-8 text and stopping at a stop string, end-of-text
// (token 0) or a token limit.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

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
  std::string stop_reason;  // "max_tokens", "end_of_text", "stop_string"
};

// The state is advanced over the prompt and every generated token (so a later call continues
// the text). `prompt_logits` may carry the logits left by an earlier call when `prompt` is empty.
// on_text gets each piece of printable text as soon as it is known not to start a stop string.
GenerateResult generate(const Model& model, const Tokenizer& tok, State& state,
                        std::span<const int32_t> prompt, Sampler& sampler,
                        const GenerateOptions& opts,
                        const std::function<void(std::string_view)>& on_text,
                        std::vector<float>* prompt_logits = nullptr);

}  // namespace rwkv7
