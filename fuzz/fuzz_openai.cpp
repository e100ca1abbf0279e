// OpenAI request bodies (apps/server): any bytes give a request or an ApiError (a 400), never
// a crash, a hang or another exception. The first byte chooses chat or completions.
#include <cstdint>
#include <string>

#include "openai_request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const rwkv7::Tokenizer tok = rwkv7::Tokenizer::bytes();
  const bool chat = data[0] & 1;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  rwkv7::server::Limits limits;
  limits.max_prompt_tokens = 4096;
  try {
    const auto r = rwkv7::server::parse_request(body, chat, "m", tok, limits);
    if (r.serve.prompt.empty() || int64_t(r.serve.prompt.size()) > limits.max_prompt_tokens)
      __builtin_trap();  // accepted a prompt the scheduler would refuse
    for (int32_t t : r.serve.prompt)
      if (t < 0 || t >= 256) __builtin_trap();
  } catch (const rwkv7::server::ApiError&) {
  }
  return 0;
}
