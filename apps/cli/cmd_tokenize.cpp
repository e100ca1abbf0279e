// rwkv7 tokenize: raw bytes on stdin → JSON array of token ids on stdout (or the reverse).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::cli {

namespace {

// stdin of --decode: a flat JSON array of integers in [0, 2^31). Each element is checked before
// it is converted (a float such as 1e99 would be undefined behaviour as an int).
std::vector<int32_t> parse_id_array(const std::string& input) {
  nlohmann::json j;
  auto flat = [](int depth, nlohmann::json::parse_event_t ev, nlohmann::json&) {
    using Ev = nlohmann::json::parse_event_t;
    if ((ev == Ev::object_start || ev == Ev::array_start) && depth > 0) {
      throw Error("stdin: expected a flat JSON array of token ids, found a nested value");
    }
    return true;
  };
  try {
    j = nlohmann::json::parse(input, flat);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("stdin: expected a JSON array of token ids (") + e.what() + ")");
  }
  if (!j.is_array()) throw Error("stdin: expected a JSON array of token ids");
  std::vector<int32_t> ids;
  ids.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& v = j[i];
    const bool ok =
        (v.is_number_unsigned() && v.get<uint64_t>() <= uint64_t(INT32_MAX)) ||
        (v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX);
    if (!ok) {
      throw Error("stdin: element " + std::to_string(i) + " (" + v.dump() +
                  ") is not a token id (an integer from 0 to 2147483647)");
    }
    ids.push_back(int32_t(v.get<int64_t>()));
  }
  return ids;
}

}  // namespace

void register_tokenize(CLI::App& app) {
  struct Opts {
    std::string vocab;
    bool bytes = false, decode = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("tokenize", "Text (raw bytes) on stdin → JSON array of token ids");
  cmd->add_option("--vocab", o->vocab, "World vocabulary file (rwkv_vocab_v20230424.txt)");
  cmd->add_flag("--bytes", o->bytes, "Byte-level tokens (V = 256) instead of a vocabulary");
  cmd->add_flag("--decode", o->decode, "The reverse: JSON array of ids on stdin → text");
  cmd->callback([o] {
    if (o->vocab.empty() == !o->bytes)
      throw Error("tokenize: give exactly one of --vocab or --bytes");
    Tokenizer tok = o->bytes ? Tokenizer::bytes() : Tokenizer::load_world(o->vocab);
    const std::string input = read_stdin();
    if (o->decode) {
      const std::vector<int32_t> ids = parse_id_array(input);
      const std::string text = tok.decode(ids);
      std::fwrite(text.data(), 1, text.size(), stdout);
      return;
    }
    const auto ids = tok.encode(input);
    std::string out = "[";
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
    out += "]\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
  });
}

}  // namespace rwkv7::cli
