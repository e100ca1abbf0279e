// rwkv7 chat: multi-turn chat in the RWKV format ("User: …\n\nAssistant:"). The state carries
// the conversation, so earlier turns are never recomputed; --session saves and resumes it.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/generate.hpp"
#include "rwkv7/state_compress.hpp"

namespace rwkv7::cli {

void register_chat(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    SamplingFlags sampling;
    std::string session, system, state_in;
    CompressOptions session_compression;
    int64_t max_tokens = 500;
  };
  auto o = std::make_shared<Opts>();
  // ChatRWKV's chat defaults.
  o->sampling.opts.temperature = 1.0f;
  o->sampling.opts.top_p = 0.3f;
  o->sampling.opts.presence_penalty = 0.5f;
  o->sampling.opts.frequency_penalty = 0.5f;
  auto* cmd = app.add_subcommand("chat",
                                 "Interactive multi-turn chat; one user message per line "
                                 "on stdin (empty line or EOF ends)");
  o->model.add(cmd);
  o->model.add_precision(cmd);
  cmd->add_option("--session", o->session,
                  "State file: resumed if it exists, saved after every turn");
  cmd->add_option("--session-compress", o->session_compression.method,
                  "How the session file stores the state: f32 (exact, default), bf16, int8, "
                  "adaptive-int8, ... (docs/state-compression.md)")
      ->capture_default_str();
  cmd->add_option("--session-ratio", o->session_compression.ratio,
                  "Target ratio for lowrank*/adaptive* session compression");
  cmd->add_option("--system", o->system, "Text fed once at the start of a new conversation");
  cmd->add_option("--state-in", o->state_in,
                  "A new conversation starts from this state file (e.g. a tuned state of "
                  "`rwkv7 train --tune state`) instead of zeros");
  cmd->add_option("-n,--max-tokens", o->max_tokens, "Tokens per reply at most")
      ->capture_default_str()
      ->check(Positive);
  o->sampling.add(cmd);
  cmd->callback([o] {
    check_compress_options(o->session_compression);
    auto m = o->model.load();
    Tokenizer tok = o->model.tokenizer(*m);
    State st = o->state_in.empty() ? m->new_state() : load_state_warn(o->state_in, *m);
    const bool tty = isatty(STDIN_FILENO);
    std::string lead;  // text fed before the next "User:" turn
    if (!o->session.empty() && std::filesystem::exists(o->session)) {
      st = load_state_warn(o->session, *m);
      std::fprintf(stderr, "(resumed %s: %lld tokens of conversation)\n", o->session.c_str(),
                   (long long)st.tokens_consumed);
    } else if (!o->system.empty()) {
      lead = o->system + "\n\n";
    }
    Sampler sampler(o->sampling.opts);
    GenerateOptions g;
    g.max_tokens = o->max_tokens;
    g.stop = {"\n\n", "\nUser:"};
    std::string line;
    for (;;) {
      if (tty) std::fputs("User: ", stdout), std::fflush(stdout);
      if (!std::getline(std::cin, line) || line.empty()) break;
      const std::string turn = lead + "User: " + line + "\n\nAssistant:";
      lead.clear();
      sampler.reset();
      std::fputs("Assistant:", stdout);
      auto res = generate(*m, tok, st, tok.encode(turn), sampler, g, [](std::string_view text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      });
      std::fputs("\n\n", stdout);
      std::fflush(stdout);
      // Keep the state at a turn boundary: a reply cut short still ends with a blank line.
      if (res.stop_reason != "stop_string") {
        const auto sep = tok.encode("\n\n");
        m->forward(sep, st, Logits::None);
      }
      if (!o->session.empty()) save_state(o->session, st, *m, o->session_compression);
    }
  });
}

}  // namespace rwkv7::cli
