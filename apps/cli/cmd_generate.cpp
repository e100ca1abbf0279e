// rwkv7 generate: continue a prompt, streaming text to stdout and speed to stderr.
#include <unistd.h>

#include <cstdio>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/generate.hpp"

namespace rwkv7::cli {

void register_generate(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    SamplingFlags sampling;
    std::string prompt, prompt_file, state_in, state_out;
    int64_t max_tokens = 200;
    std::vector<std::string> stop;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  o->sampling.opts.temperature = 1.0f;
  o->sampling.opts.top_p = 0.85f;
  auto* cmd = app.add_subcommand("generate",
                                 "Continue a prompt; text streams to stdout, prompt "
                                 "and generation speed go to stderr");
  o->model.add(cmd, true, false);
  o->model.add_precision(cmd);
  auto* p = cmd->add_option("-p,--prompt", o->prompt, "Prompt text (default: a new line)");
  auto* f = cmd->add_option("-f,--prompt-file", o->prompt_file, "Read the prompt from a file");
  p->excludes(f);
  cmd->add_option("-n,--max-tokens", o->max_tokens, "Tokens to generate at most")
      ->capture_default_str()
      ->check(NonNegative);
  cmd->add_option("--stop", o->stop, "Stop when the text contains this string (repeatable)");
  o->sampling.add(cmd);
  cmd->add_option("--state-in", o->state_in, "Continue from a saved state");
  cmd->add_option("--state-out", o->state_out, "Save the final state here");
  cmd->add_flag("-q,--quiet", o->quiet, "Do not print speed to stderr");
  cmd->callback([o] {
    auto m = o->model.load();
    Tokenizer tok = o->model.tokenizer(*m);
    std::string prompt = o->prompt_file.empty() ? o->prompt : read_file(o->prompt_file);
    State st = o->state_in.empty() ? m->new_state() : load_state_warn(o->state_in, *m);
    if (prompt.empty() && tok.is_bytes()) prompt = "\n";  // byte models: start at a line
    std::vector<int32_t> ids = tok.encode(prompt);
    if (ids.empty()) ids.push_back(0);  // World models: an empty prompt starts a document
    Sampler sampler(o->sampling.opts);
    GenerateOptions g;
    g.max_tokens = o->max_tokens;
    g.stop = o->stop;
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    std::fflush(stdout);
    auto res = generate(*m, tok, st, ids, sampler, g, [](std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    });
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (!o->state_out.empty()) save_state(o->state_out, st, *m);
    if (!o->quiet) {
      std::fprintf(stderr,
                   "prompt: %lld tokens in %.3f s (%.1f tok/s); generated: %zu tokens in %.3f s "
                   "(%.1f tok/s); stop: %s\n",
                   (long long)res.prompt_tokens, res.prompt_seconds,
                   res.prompt_tokens / std::max(res.prompt_seconds, 1e-9), res.tokens.size(),
                   res.generate_seconds, res.tokens.size() / std::max(res.generate_seconds, 1e-9),
                   res.stop_reason.c_str());
    }
  });
}

}  // namespace rwkv7::cli
