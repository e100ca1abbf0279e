#pragma once
// Shared by the serving tests: the shipped model, and running a request to its end.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "rwkv7/serve.hpp"

namespace rwkv7::testing {

inline const std::string kShippedModel =
    std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";

struct Outcome {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::string text;
  ServeEvent finished;
};

// Reads a stream to its Finished event (fails the test after `limit`).
inline Outcome drain(ServeStream& s, std::chrono::seconds limit = std::chrono::seconds(60)) {
  Outcome o;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  ServeEvent e;
  while (s.next(e, deadline)) {
    if (e.kind == ServeEvent::Kind::Finished) {
      o.finished = e;
      return o;
    }
    if (e.token >= 0) {
      o.tokens.push_back(e.token);
      o.logprobs.push_back(e.logprob);
    }
    o.text += e.text;
  }
  ADD_FAILURE() << "no Finished event within " << limit.count() << " s";
  return o;
}

inline ServeRequest greedy_request(const Tokenizer& tok, const std::string& prompt,
                                   int64_t max_tokens) {
  ServeRequest r;
  r.prompt = tok.encode(prompt);
  r.sampling.temperature = 0;
  r.options.max_tokens = max_tokens;
  r.options.stop_at_end_of_text = false;
  return r;
}

}  // namespace rwkv7::testing
