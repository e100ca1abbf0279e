#include "rwkv7/generate.hpp"

#include <chrono>

#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Length of the longest suffix of `text` that is a proper prefix of some stop string: that
// much must be held back, since the next token may complete the stop string.
size_t held_back(std::string_view text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& s : stops) {
    for (size_t n = std::min(s.size() - 1, text.size()); n > hold; --n) {
      if (text.substr(text.size() - n) == std::string_view(s).substr(0, n)) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}

}  // namespace

GenerateResult generate(const Model& model, const Tokenizer& tok, State& state,
                        std::span<const int32_t> prompt, Sampler& sampler,
                        const GenerateOptions& opts,
                        const std::function<void(std::string_view)>& on_text,
                        std::vector<float>* prompt_logits) {
  for (const std::string& s : opts.stop)
    if (s.empty()) throw Error("stop strings must not be empty");
  GenerateResult res;
  res.prompt_tokens = int64_t(prompt.size());
  auto t0 = Clock::now();
  std::vector<float> logits;
  if (!prompt.empty()) {
    logits = model.forward(prompt, state, Logits::Last);
  } else if (prompt_logits && !prompt_logits->empty()) {
    logits = *prompt_logits;
  } else {
    throw Error("generate: empty prompt and no logits to continue from");
  }
  res.prompt_seconds = seconds_since(t0);

  auto t1 = Clock::now();
  StreamDecoder decoder(tok);
  std::string pending;  // decoded text not yet printed (may begin a stop string)
  res.stop_reason = "max_tokens";
  for (int64_t i = 0; i < opts.max_tokens; ++i) {
    const int32_t next = sampler.sample(logits);
    if (next == 0 && opts.stop_at_end_of_text) {
      res.stop_reason = "end_of_text";
      break;
    }
    sampler.accept(next);
    res.tokens.push_back(next);
    const int32_t one[1] = {next};
    logits = model.forward(one, state, Logits::Last);
    pending += decoder.push(next);
    bool stopped = false;
    for (const std::string& s : opts.stop) {
      size_t at = pending.find(s);
      if (at != std::string::npos) {
        pending.resize(at);
        stopped = true;
      }
    }
    const size_t hold = stopped ? 0 : held_back(pending, opts.stop);
    if (pending.size() > hold) {
      std::string_view out(pending.data(), pending.size() - hold);
      on_text(out);
      res.text += out;
      pending.erase(0, out.size());
    }
    if (stopped) {
      res.stop_reason = "stop_string";
      break;
    }
  }
  if (res.stop_reason != "stop_string") {
    pending += decoder.flush();
    if (!pending.empty()) {
      on_text(pending);
      res.text += pending;
    }
  }
  res.generate_seconds = seconds_since(t1);
  if (prompt_logits) *prompt_logits = std::move(logits);
  return res;
}

}  // namespace rwkv7
