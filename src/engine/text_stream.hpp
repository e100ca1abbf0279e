#pragma once
// Sampled tokens → text for a reader: complete UTF-8 characters only, and text that might be
// the start of a stop string held back until the next token proves it is not (a stop string
// itself is never released). Shared by generate_batch and the server's scheduler.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rwkv7/tokenizer.hpp"

namespace rwkv7 {

// log softmax(logits)[token], summed in double: the log-probability a token event reports.
float log_probability(std::span<const float> logits, int32_t token);

class TextStream {
 public:
  // `stops` must outlive the stream (empty strings are not allowed: the caller checks).
  TextStream(const Tokenizer& tok, const std::vector<std::string>& stops)
      : decoder_(tok), stops_(&stops) {}
  // Adds one token. Returns the text released now (valid until the next call); `stopped`
  // tells whether a stop string is now complete (the text before it has been released).
  std::string_view push(int32_t token, bool& stopped);
  // The text still held back at the end of a generation that did not stop at a stop string.
  std::string_view finish();

 private:
  StreamDecoder decoder_;
  const std::vector<std::string>* stops_;
  std::string pending_;   // decoded, not yet released
  std::string released_;  // what the last call released
};

}  // namespace rwkv7
