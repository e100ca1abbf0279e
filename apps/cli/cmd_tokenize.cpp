// rwkv7 tokenize: raw bytes on stdin → JSON array of token ids on stdout (or the reverse).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::cli {

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
      std::vector<int32_t> ids;
      try {
        ids = nlohmann::json::parse(input).get<std::vector<int32_t>>();
      } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("stdin: expected a JSON array of token ids (") + e.what() + ")");
      }
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
