#include "rwkv7/generate.hpp"

#include <chrono>
#include <cmath>
#include <memory>

#include "engine/context_impl.hpp"
#include "engine/text_stream.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A running sequence: its decoder, its text not yet released, its logits.
struct Running {
  GenerationRequest* req;
  GenerateResult* res;
  std::unique_ptr<TextStream> text;
  std::vector<float> logits;
  int32_t fed = 0;     // the token fed at this step
  bool active = true;  // still sampling
  bool feed = false;   // has a token to feed at this step
};

}  // namespace

std::vector<GenerateResult> generate_batch(const Model& model, Context& ctx, const Tokenizer& tok,
                                           std::span<GenerationRequest> requests,
                                           const TokenCallback& on_token) {
  std::vector<GenerateResult> results(requests.size());
  std::vector<Running> seqs;
  seqs.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    GenerationRequest& q = requests[i];
    if (!q.state) throw Error("generate: request " + std::to_string(i) + " has no state");
    if (!q.sampler) throw Error("generate: request " + std::to_string(i) + " has no sampler");
    for (size_t j = 0; j < i; ++j)  // samplers change as they sample, on several threads
      if (requests[j].sampler == q.sampler)
        throw Error("generate: requests " + std::to_string(j) + " and " + std::to_string(i) +
                    " share one sampler; each needs its own");
    model.check_state(*q.state);
    for (const std::string& s : q.options.stop)
      if (s.empty()) throw Error("generate: stop strings must not be empty");
    if (q.options.max_tokens < 0) throw Error("generate: max_tokens must not be negative");
    if (q.prompt.empty() && (!q.logits || q.logits->empty()))
      throw Error("generate: request " + std::to_string(i) +
                  " has an empty prompt and no logits to continue from");
    results[i].prompt_tokens = int64_t(q.prompt.size());
    results[i].stop_reason = "max_tokens";
    seqs.push_back(Running{&q, &results[i], std::make_unique<TextStream>(tok, q.options.stop), {}});
  }

  // Every prompt in one batched forward.
  const auto t0 = Clock::now();
  std::vector<SequenceRequest> batch;
  for (Running& s : seqs) {
    if (s.req->prompt.empty()) {
      s.logits = *s.req->logits;
    } else {
      batch.push_back(SequenceRequest{s.req->prompt, s.req->state, Logits::Last, &s.logits});
    }
  }
  if (!batch.empty()) model.forward(ctx, batch);
  const double prompt_seconds = seconds_since(t0);

  const auto t1 = Clock::now();
  std::vector<Sampler*> samplers;
  std::vector<std::span<const float>> rows;
  std::vector<float> logprobs;
  std::vector<const std::vector<float>*> full_logits;  // log-probabilities over every id
  for (int64_t step = 0;; ++step) {
    batch.clear();
    // Every active sequence's next token, sampled over the context's threads.
    samplers.clear(), rows.clear(), full_logits.clear();
    for (Running& s : seqs) {
      s.feed = false;
      if (s.active && int64_t(s.res->tokens.size()) >= s.req->options.max_tokens) s.active = false;
      if (!s.active) continue;
      samplers.push_back(s.req->sampler);
      full_logits.push_back(&s.logits);
      // Only ids the tokenizer can print (a model's vocabulary may be padded past it).
      rows.push_back(
          std::span<const float>(s.logits).first(std::min(s.logits.size(), tok.vocab_size())));
    }
    const std::vector<int32_t> sampled = sample_many(ctx, samplers, rows);
    // Each token's log-probability (an exp over the vocabulary per row), also over the threads.
    logprobs.resize(sampled.size());
    ContextAccess::impl(ctx).pool.parallel_for(
        int64_t(sampled.size()), 1, [&](int64_t b, int64_t e) {
          for (size_t i = size_t(b); i < size_t(e); ++i)
            logprobs[i] = log_probability(*full_logits[i], sampled[i]);
        });
    size_t sampled_i = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      Running& s = seqs[i];
      if (!s.active) continue;
      const GenerateOptions& o = s.req->options;
      const float logprob = logprobs[sampled_i];
      const int32_t next = sampled[sampled_i++];
      TokenEvent ev{i, next, {}, logprob};
      if (next == 0 && o.stop_at_end_of_text) {
        s.res->stop_reason = "end_of_text";
        s.active = false;
        on_token(ev);
        continue;
      }
      s.req->sampler->accept(next);
      s.res->tokens.push_back(next);
      s.fed = next;
      s.feed = true;
      bool stopped = false;
      ev.text = s.text->push(next, stopped);
      s.res->text += ev.text;
      const bool go_on = on_token(ev);
      if (stopped) {
        s.res->stop_reason = "stop_string";
        s.active = false;
      } else if (!go_on) {
        s.res->stop_reason = "cancelled";
        s.active = false;
      }
      // Logits are needed to sample again, or to hand back to the caller.
      const bool need = s.active || s.req->logits;
      batch.push_back(SequenceRequest{std::span<const int32_t>(&s.fed, 1), s.req->state,
                                      need ? Logits::Last : Logits::None, &s.logits});
    }
    if (batch.empty()) break;
    model.forward(ctx, batch);
  }
  const double generate_seconds = seconds_since(t1);

  for (Running& s : seqs) {
    if (s.res->stop_reason != "stop_string" && s.res->stop_reason != "cancelled") {
      const std::string_view rest = s.text->finish();
      if (!rest.empty()) {
        s.res->text += rest;
        on_token(TokenEvent{size_t(&s - seqs.data()), -1, rest, 0.0f});
      }
    }
    s.res->prompt_seconds = prompt_seconds;
    s.res->generate_seconds = generate_seconds;
    if (s.req->logits) *s.req->logits = std::move(s.logits);
  }
  return results;
}

GenerateResult generate(const Model& model, const Tokenizer& tok, State& state,
                        std::span<const int32_t> prompt, Sampler& sampler,
                        const GenerateOptions& opts,
                        const std::function<void(std::string_view)>& on_text,
                        std::vector<float>* prompt_logits) {
  Context ctx(model.threads());
  GenerationRequest req{prompt, &state, &sampler, opts, prompt_logits};
  auto results = generate_batch(model, ctx, tok, std::span<GenerationRequest>(&req, 1),
                                [&](const TokenEvent& ev) {
                                  if (!ev.text.empty()) on_text(ev.text);
                                  return true;
                                });
  return std::move(results[0]);
}

}  // namespace rwkv7
