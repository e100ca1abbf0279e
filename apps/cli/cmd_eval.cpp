// rwkv7 eval: perplexity of a text file, or the LAMBADA protocol.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/evaluate.hpp"

namespace rwkv7::cli {
namespace {

// A progress bar on stderr when it is a terminal.
Progress progress_bar(const char* label) {
  if (!isatty(STDERR_FILENO)) return {};
  return [label](int64_t done, int64_t total) {
    const int width = 40, filled = int(double(done) / double(std::max<int64_t>(total, 1)) * width);
    std::fprintf(stderr, "\r%s [%.*s%*s] %lld/%lld", label, filled,
                 "########################################", width - filled, "", (long long)done,
                 (long long)total);
    if (done >= total) std::fputc('\n', stderr);
    std::fflush(stderr);
  };
}

}  // namespace

void register_eval(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string text_file, lambada;
    bool json = false;
    int64_t window = 256, batch = 16, limit = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "eval", "Mean cross-entropy and perplexity of a text file, or LAMBADA accuracy");
  o->model.add(cmd);
  auto* t = cmd->add_option("--text-file", o->text_file,
                            "Score predicting tokens 1..n-1 of this file from those before");
  auto* l = cmd->add_option("--lambada", o->lambada, "LAMBADA jsonl (lambada_test.jsonl)");
  t->excludes(l);
  cmd->add_option("--window", o->window, "Positions per forward call (memory bound)")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--batch", o->batch, "LAMBADA passages per batch")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--limit", o->limit, "LAMBADA: only the first N passages (0 = all)")
      ->check(NonNegative);
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->callback([o] {
    if (o->text_file.empty() == o->lambada.empty()) {
      throw Error("eval: give exactly one of --text-file or --lambada");
    }
    auto m = o->model.load();
    Tokenizer tok = o->model.tokenizer(*m);
    if (!o->text_file.empty()) {
      const std::string text = read_file(o->text_file);
      const auto ids = tok.encode(text);
      if (ids.size() < 2) {
        throw Error(o->text_file + ": needs at least 2 tokens to evaluate (has " +
                    std::to_string(ids.size()) + ")");
      }
      auto r = evaluate_loss(*m, ids, o->window, progress_bar("eval"));
      if (o->json) {
        nlohmann::json j = {
            {"tokens", r.predicted}, {"loss", r.loss}, {"perplexity", r.perplexity}};
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("tokens %lld  loss %.6f nats  perplexity %.4f\n", (long long)r.predicted,
                    r.loss, r.perplexity);
      }
      return;
    }
    auto samples = read_lambada_jsonl(o->lambada);
    if (o->limit > 0 && size_t(o->limit) < samples.size()) samples.resize(size_t(o->limit));
    auto r = evaluate_lambada(*m, tok, samples, o->batch, progress_bar("lambada"));
    if (o->json) {
      nlohmann::json j = {
          {"samples", r.samples}, {"perplexity", r.perplexity}, {"accuracy", r.accuracy}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("lambada: %lld passages  perplexity %.4f  accuracy %.2f%%\n",
                  (long long)r.samples, r.perplexity, 100 * r.accuracy);
    }
  });
}

}  // namespace rwkv7::cli
