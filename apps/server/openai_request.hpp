#pragma once
// OpenAI request bodies → scheduler requests: every known field is checked for its type and
// range (an ApiError names the field), unknown fields are ignored as OpenAI does. Chat
// messages are rendered in the RWKV World chat format (docs/serving.md):
//   "System: …\n\n" "User: …\n\n" "Assistant: …\n\n" … then "Assistant:" to generate.
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "rwkv7/serve.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7::server {

// An error for the client: HTTP status + the OpenAI error object's fields.
struct ApiError {
  int status = 400;
  std::string message, type = "invalid_request_error", param, code;
  nlohmann::json body() const;
};

struct Limits {
  int64_t max_prompt_tokens = 32768;
  int64_t max_tokens = 4096;         // largest max_tokens a request may ask for
  int64_t default_max_tokens = 256;  // when a request does not say
};

struct ParsedRequest {
  ServeRequest serve;
  bool chat = false;
  bool stream = false, include_usage = false;
};

// The server's named start states (`--state NAME=FILE`), by name.
using StartStates = std::map<std::string, std::shared_ptr<const StartState>>;

// `body` is the raw request body; `model_id` what /v1/models lists. A request may name one of
// `states` in "state" (an rwkv7 extension): its prompt then continues that state.
ParsedRequest parse_request(const std::string& body, bool chat, const std::string& model_id,
                            const Tokenizer& tok, const Limits& limits,
                            const StartStates& states = {});

// The tokens of a chat rendered in the RWKV format, and where each message ends.
struct RenderedChat {
  std::vector<int32_t> tokens;
  std::vector<int64_t> message_ends;
};
RenderedChat render_chat(const nlohmann::json& messages, const Tokenizer& tok);

}  // namespace rwkv7::server
