#include "openai_request.hpp"

#include <cmath>
#include <limits>

#include "rwkv7/error.hpp"

namespace rwkv7::server {
namespace {

using nlohmann::json;

ApiError bad(const std::string& param, const std::string& message,
             const std::string& code = "invalid_value") {
  ApiError e;
  e.param = param;
  e.message = message;
  e.code = code;
  return e;
}

double number(const json& body, const char* key, double lo, double hi) {
  const json& v = body[key];
  if (!v.is_number()) throw bad(key, std::string("'") + key + "' must be a number", "invalid_type");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " +
                       std::to_string(hi));
  return x;
}

int64_t integer(const json& body, const char* key, int64_t lo, int64_t hi) {
  const json& v = body[key];
  if (!v.is_number_integer())
    throw bad(key, std::string("'") + key + "' must be an integer", "invalid_type");
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    throw bad(key, std::string("'") + key + "' is too large");
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    throw bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " +
                       std::to_string(hi));
  return x;
}

bool boolean(const json& body, const char* key) {
  const json& v = body[key];
  if (!v.is_boolean())
    throw bad(key, std::string("'") + key + "' must be true or false", "invalid_type");
  return v.get<bool>();
}

bool has(const json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && !it->is_null();
}

// A message's text: a string, or an array of parts of which the "text" ones count.
std::string content_text(const json& content, size_t index) {
  const std::string param = "messages[" + std::to_string(index) + "].content";
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    throw bad(param, "'" + param + "' must be a string or an array", "invalid_type");
  std::string out;
  for (const json& part : content) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string())
      throw bad(param, "'" + param + "' parts must be {\"type\": \"text\", \"text\": string}");
    out += part["text"].get<std::string>();
  }
  return out;
}

// CRLF → LF and no blank lines (a blank line ends a turn); trailing white space dropped.
std::string without_blank_lines(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') continue;
    if (s[i] == '\n' && !out.empty() && out.back() == '\n') continue;
    out += s[i];
  }
  const size_t e = out.find_last_not_of(" \t\n");
  out.resize(e == std::string::npos ? 0 : e + 1);
  return out;
}

// As the official chat code does: trimmed, CRLF → LF, no blank lines.
std::string normalise(const std::string& s) {
  std::string out = without_blank_lines(s);
  const size_t b = out.find_first_not_of(" \t\n");
  return b == std::string::npos ? "" : out.substr(b);
}

void append(std::vector<int32_t>& to, const std::vector<int32_t>& ids) {
  to.insert(to.end(), ids.begin(), ids.end());
}

}  // namespace

json ApiError::body() const {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

RenderedChat render_chat(const json& messages, const Tokenizer& tok) {
  if (!messages.is_array() || messages.empty())
    throw bad("messages", "'messages' must be a non-empty array", "invalid_type");
  RenderedChat out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      throw bad(param, "'" + param + "' must be an object with a string 'role'", "invalid_type");
    const std::string role = m["role"];
    std::string name;
    if (role == "system" || role == "developer")
      name = "System";
    else if (role == "user")
      name = "User";
    else if (role == "assistant")
      name = "Assistant";
    else
      throw bad(param + ".role", "unknown role '" + role + "' (system, user or assistant)");
    if (!m.contains("content") && role != "assistant")
      throw bad(param + ".content", "'" + param + ".content' is missing");
    std::string text = content_text(m.value("content", json(nullptr)), i);
    // A reply sent back as it was generated (text right after "Assistant:", " Hello" or
    // "\nHello") is kept so: its tokens are those the model produced, and the state saved at
    // the end of that generation is found in the cache. Stripped replies and every other
    // message get one space after the colon.
    const bool verbatim = role == "assistant" && !text.empty() &&
                          (text[0] == ' ' || text[0] == '\n') && !normalise(text).empty();
    text = verbatim ? without_blank_lines(text) : normalise(text);
    // Each piece is tokenised on its own, so that a turn's tokens do not depend on what
    // follows it (the prefix cache then finds the previous turn's state).
    append(out.tokens, tok.encode(name + ":"));
    if (!text.empty()) append(out.tokens, tok.encode(verbatim ? text : " " + text));
    append(out.tokens, tok.encode("\n\n"));
    out.message_ends.push_back(int64_t(out.tokens.size()));
  }
  append(out.tokens, tok.encode("Assistant:"));
  return out;
}

ParsedRequest parse_request(const std::string& text, bool chat, const std::string& model_id,
                            const Tokenizer& tok, const Limits& limits, const StartStates& states) {
  json body;
  try {
    body = json::parse(text);
  } catch (const json::exception& e) {
    throw bad("", std::string("the body is not valid JSON: ") + e.what(), "invalid_json");
  }
  if (!body.is_object()) throw bad("", "the body must be a JSON object", "invalid_type");
  ParsedRequest r;
  r.chat = chat;
  if (has(body, "model")) {
    if (!body["model"].is_string()) throw bad("model", "'model' must be a string", "invalid_type");
    if (body["model"] != model_id) {
      ApiError e = bad("model",
                       "the model '" + body["model"].get<std::string>() +
                           "' does not exist; this server has '" + model_id + "'",
                       "model_not_found");
      throw e;
    }
  }
  ServeRequest& q = r.serve;
  if (has(body, "state")) {
    if (!body["state"].is_string()) throw bad("state", "'state' must be a string", "invalid_type");
    const std::string name = body["state"].get<std::string>();
    auto it = states.find(name);
    if (it == states.end()) {
      std::string known;
      for (const auto& [n, st] : states) known += (known.empty() ? "" : ", ") + n;
      throw bad("state",
                "no state named '" + name + "' on this server" +
                    (known.empty() ? " (it has none)" : "; it has: " + known),
                "state_not_found");
    }
    q.start = it->second;
  }
  if (chat) {
    if (!body.contains("messages")) throw bad("messages", "'messages' is required", "missing");
    RenderedChat c = render_chat(body["messages"], tok);
    q.prompt = std::move(c.tokens);
    q.snapshot_at = std::move(c.message_ends);
    q.options.stop = {"\n\n"};  // a blank line ends the assistant's turn
  } else {
    if (!body.contains("prompt")) throw bad("prompt", "'prompt' is required", "missing");
    const json& p = body["prompt"];
    if (p.is_string()) {
      q.prompt = tok.encode(p.get<std::string>());
    } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
      q.prompt = tok.encode(p[0].get<std::string>());
    } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
      for (const json& t : p) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
            t.get<int64_t>() >= int64_t(tok.vocab_size()))
          throw bad("prompt", "'prompt' token ids must be integers in [0, " +
                                  std::to_string(tok.vocab_size()) + ")");
        q.prompt.push_back(int32_t(t.get<int64_t>()));
      }
    } else {
      throw bad("prompt", "'prompt' must be a string, one string in an array, or token ids",
                "invalid_type");
    }
  }
  if (q.prompt.empty()) throw bad(chat ? "messages" : "prompt", "the prompt is empty");
  if (int64_t(q.prompt.size()) > limits.max_prompt_tokens)
    throw bad(chat ? "messages" : "prompt",
              "the prompt has " + std::to_string(q.prompt.size()) + " tokens; this server takes " +
                  std::to_string(limits.max_prompt_tokens) + " at most",
              "context_length_exceeded");

  q.options.max_tokens = limits.default_max_tokens;
  for (const char* key : {"max_tokens", "max_completion_tokens"})
    if (has(body, key)) q.options.max_tokens = integer(body, key, 1, limits.max_tokens);
  SamplerOptions& s = q.sampling;
  if (has(body, "temperature")) s.temperature = float(number(body, "temperature", 0, 2));
  if (has(body, "top_p")) s.top_p = float(number(body, "top_p", 0, 1));
  if (has(body, "top_k")) s.top_k = int(integer(body, "top_k", 0, 1 << 20));
  if (has(body, "presence_penalty"))
    s.presence_penalty = float(number(body, "presence_penalty", -2, 2));
  if (has(body, "frequency_penalty"))
    s.frequency_penalty = float(number(body, "frequency_penalty", -2, 2));
  if (has(body, "penalty_decay")) s.penalty_decay = float(number(body, "penalty_decay", 0, 1));
  if (has(body, "seed")) {
    const json& v = body["seed"];
    if (!v.is_number_integer()) throw bad("seed", "'seed' must be an integer", "invalid_type");
    s.seed = v.is_number_unsigned() ? v.get<uint64_t>() : uint64_t(v.get<int64_t>());
  } else {
    s.seed = std::random_device{}();
  }
  if (has(body, "stop")) {
    const json& v = body["stop"];
    std::vector<std::string> stops;
    if (v.is_string()) {
      stops.push_back(v.get<std::string>());
    } else if (v.is_array() && v.size() <= 4) {
      for (const json& x : v) {
        if (!x.is_string()) throw bad("stop", "'stop' must hold strings", "invalid_type");
        stops.push_back(x.get<std::string>());
      }
    } else {
      throw bad("stop", "'stop' must be a string or an array of up to 4 strings", "invalid_type");
    }
    for (const std::string& x : stops) {
      if (x.empty()) throw bad("stop", "stop strings must not be empty");
      // Text that may start one is held back and searched at every token: keep them short.
      if (x.size() > 256) throw bad("stop", "stop strings must be 256 bytes or shorter");
      q.options.stop.push_back(x);
    }
  }
  if (has(body, "n") && integer(body, "n", 1, 1) != 1) throw bad("n", "'n' must be 1");
  if (has(body, "logprobs") && body["logprobs"].is_boolean() && body["logprobs"].get<bool>())
    throw bad("logprobs", "logprobs are not supported yet", "unsupported_parameter");
  if (has(body, "stream")) r.stream = boolean(body, "stream");
  if (has(body, "stream_options")) {
    const json& o = body["stream_options"];
    if (!o.is_object())
      throw bad("stream_options", "'stream_options' must be an object", "invalid_type");
    if (has(o, "include_usage")) r.include_usage = boolean(o, "include_usage");
  }
  return r;
}

}  // namespace rwkv7::server
