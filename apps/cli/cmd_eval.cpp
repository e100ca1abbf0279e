// rwkv7 eval: perplexity of a text file, or the LAMBADA protocol.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/evaluate.hpp"
#include "rwkv7/long_eval.hpp"
#include "rwkv7/state_fidelity.hpp"

namespace rwkv7::cli {
namespace {

// The configurations of a state-fidelity run: each method once at its own ratio (f32, bf16,
// fp16, int8, learned* with a projection) or at every ratio of the list (lowrank*, adaptive*).
std::vector<CompressOptions> fidelity_configs(
    const std::string& methods_flag, const std::vector<double>& ratios,
    const std::shared_ptr<const StateProjection>& projection) {
  std::vector<std::string> methods;
  if (methods_flag.empty() || methods_flag == "all") {
    methods.push_back("reset");  // the baseline: a zero state instead of the prefix
    for (const auto& m : state_compression_methods())
      if (m != "f32") methods.push_back(m);
    if (projection)
      for (const auto& m : learned_compression_methods()) methods.push_back(m);
  } else {
    size_t pos = 0;
    while (pos <= methods_flag.size()) {
      const size_t end = std::min(methods_flag.find(',', pos), methods_flag.size());
      methods.push_back(methods_flag.substr(pos, end - pos));
      pos = end + 1;
    }
  }
  std::vector<CompressOptions> out;
  for (const auto& m : methods) {
    CompressOptions c;
    c.method = m;
    if (m.rfind("learned", 0) == 0) c.projection = projection;
    if (m == "reset") {
      out.push_back(c);
    } else if (m.rfind("lowrank", 0) == 0 || m.rfind("adaptive", 0) == 0) {
      for (double r : ratios) {
        c.ratio = r;
        check_compress_options(c);
        out.push_back(c);
      }
    } else {
      check_compress_options(c);
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

void register_eval(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string text_file, lambada, state_in, projection;
    int64_t rows = 0;
    bool json = false;
    int64_t window = 256, batch = 16, limit = 0;
    std::string recall_data;
    int64_t doc_tokens = 0;
    std::string task = "perplexity", methods, ratios = "0.1,0.2,0.3,0.4,0.5,0.6,0.7",
                prefix = "1000,10000", svg;
    int64_t continue_tokens = 256, recompress_every = 0, windows = 1;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "eval", "Mean cross-entropy and perplexity of a text file, or LAMBADA accuracy");
  o->model.add(cmd);
  o->model.add_precision(cmd);
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
  cmd->add_option("--rows", o->rows,
                  "--text-file: score rows of this many positions as training cuts them, each "
                  "from the start state (compares fine-tuning methods; 0 = one stream)")
      ->check(NonNegative);
  cmd->add_option("--state-in", o->state_in,
                  "--text-file with --rows: every row starts from this state file (a tuned "
                  "state of `rwkv7 train --tune state`)");
  cmd->add_flag("--json", o->json, "Print one JSON object (state-fidelity: one per line)");
  cmd->add_option("--projection", o->projection,
                  "state-fidelity: a learned projection (`rwkv7 state learn`); adds the learned* "
                  "methods");
  cmd->add_option("--task", o->task,
                  "perplexity (default; or LAMBADA with --lambada); state-fidelity: how well "
                  "compressed states predict (docs/state-compression.md); passkey or mqar: "
                  "exact-match accuracy on a set from `rwkv7 data` (--data); loss-by-position: "
                  "mean loss per log2 position bucket of --text-file (docs/long-context.md)")
      ->check(
          CLI::IsMember({"perplexity", "state-fidelity", "passkey", "mqar", "loss-by-position"}));
  cmd->add_option("--data", o->recall_data, "passkey, mqar: the .jsonl of `rwkv7 data`");
  cmd->add_option("--doc-tokens", o->doc_tokens,
                  "loss-by-position: cut the text into documents of this many tokens (0 = one "
                  "document)")
      ->check(NonNegative);
  cmd->add_option("--method", o->methods,
                  "state-fidelity: compression methods, comma-separated (default: all, and "
                  "\"reset\": the baseline of a zero state); passkey, mqar: answer from the state "
                  "compressed with each at the question (default: not compressed)");
  cmd->add_option("--ratio", o->ratios,
                  "state-fidelity, passkey, mqar: target ratios of lowrank*/adaptive*, "
                  "comma-separated")
      ->capture_default_str();
  cmd->add_option("--prefix-tokens", o->prefix,
                  "state-fidelity: tokens read before compressing, comma-separated")
      ->capture_default_str();
  cmd->add_option("--continue", o->continue_tokens,
                  "state-fidelity: continuation tokens compared (teacher-forced)")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--recompress-every", o->recompress_every,
                  "state-fidelity: the state lives compressed, compressed again after every K "
                  "tokens (0: once, after the prefix)")
      ->check(NonNegative);
  cmd->add_option("--windows", o->windows,
                  "state-fidelity: average over this many prefixes spread over the text")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1000)));
  cmd->add_option("--svg", o->svg,
                  "state-fidelity: plot top-1 agreement against ratio, and log10 KL in "
                  "NAME-kl.svg (one file per prefix length: NAME-M<tokens>.svg when there are "
                  "several); passkey, mqar: accuracy heat map; loss-by-position: loss per bucket");
  cmd->callback([o] {
    if (o->task == "passkey" || o->task == "mqar") {
      if (o->recall_data.empty()) throw Error("eval --task " + o->task + ": needs --data");
      auto m = o->model.load(o->window);
      const auto samples = read_recall_jsonl(o->recall_data);
      // With --method: the questions answered from a compressed state (each configuration as
      // state-fidelity makes them, "reset" = a zero state), one table per configuration.
      std::vector<CompressOptions> configs(1);
      if (!o->methods.empty()) {
        std::shared_ptr<const StateProjection> projection;
        if (!o->projection.empty())
          projection =
              std::make_shared<const StateProjection>(load_state_projection(o->projection));
        configs = fidelity_configs(o->methods, parse_double_list(o->ratios, "--ratio"), projection);
      }
      for (const CompressOptions& config : configs) {
        const bool compressed = !o->methods.empty();
        const auto results = evaluate_recall(*m, samples, o->window, progress_bar(o->task.c_str()),
                                             compressed ? &config : nullptr);
        const RecallTable t = tabulate_recall(
            o->task == "passkey" ? RecallTask::Passkey : RecallTask::Mqar, samples, results);
        const std::string label =
            !compressed
                ? ""
                : config.method + (config.ratio > 0 ? " " + std::to_string(config.ratio) : "");
        if (o->json) {
          nlohmann::json cells = nlohmann::json::array();
          for (size_t r = 0; r < t.rows.size(); ++r)
            for (size_t c = 0; c < t.cols.size(); ++c)
              if (t.total[r * t.cols.size() + c])
                cells.push_back({{t.row_name, t.rows[r]},
                                 {t.col_name, t.cols[c]},
                                 {"correct", t.correct[r * t.cols.size() + c]},
                                 {"total", t.total[r * t.cols.size() + c]},
                                 {"accuracy", t.accuracy(r, c)}});
          nlohmann::json j = {{"task", o->task}, {"accuracy", t.overall()}, {"cells", cells}};
          if (compressed) {
            j["compression"] = config.method;
            if (config.ratio > 0) j["target_ratio"] = config.ratio;
          }
          std::printf("%s\n", j.dump().c_str());
        } else {
          if (compressed) std::printf("state compressed at the question: %s\n", label.c_str());
          std::printf("%s accuracy %.4f; by %s (rows) x %s (columns):\n%10s", o->task.c_str(),
                      t.overall(), t.row_name.c_str(), t.col_name.c_str(), "");
          for (double c : t.cols) std::printf(" %8g", c);
          std::printf("\n");
          for (size_t r = 0; r < t.rows.size(); ++r) {
            std::printf("%10g", t.rows[r]);
            for (size_t c = 0; c < t.cols.size(); ++c) std::printf(" %8.3f", t.accuracy(r, c));
            std::printf("\n");
          }
        }
        if (!o->svg.empty() && configs.size() == 1)
          write_recall_svg(o->svg,
                           (o->task == "passkey" ? "Passkey accuracy: " : "MQAR accuracy: ") +
                               m->config().shape_string() + (compressed ? ", " + label : ""),
                           t);
      }
      return;
    }
    if (o->task == "loss-by-position") {
      if (o->text_file.empty()) throw Error("eval --task loss-by-position: needs --text-file");
      auto m = o->model.load(o->window);
      Tokenizer tok = o->model.tokenizer(*m);
      const auto ids = tok.encode(read_file(o->text_file));
      const size_t doc = o->doc_tokens > 0 ? size_t(o->doc_tokens) : ids.size();
      std::vector<std::vector<double>> per_doc;
      for (size_t p = 0; p + 1 < ids.size(); p += doc) {
        const size_t len = std::min(doc, ids.size() - p);
        if (len < 2) break;
        per_doc.push_back(
            loss_per_position(*m, std::span<const int32_t>(ids).subspan(p, len), o->window));
      }
      if (per_doc.empty()) throw Error(o->text_file + ": needs at least 2 tokens to evaluate");
      const auto buckets = bucket_losses(per_doc);
      if (o->json) {
        nlohmann::json b = nlohmann::json::array();
        for (const auto& x : buckets)
          b.push_back({{"from", x.lo}, {"to", x.hi}, {"count", x.count}, {"loss", x.mean_loss}});
        nlohmann::json j = {{"task", o->task}, {"documents", per_doc.size()}, {"buckets", b}};
        std::printf("%s\n", j.dump().c_str());
      } else {
        std::printf("%zu document(s); mean loss by position of the predicted token:\n",
                    per_doc.size());
        for (const auto& x : buckets)
          std::printf("  [%lld, %lld)  %lld positions  loss %.4f\n", (long long)x.lo,
                      (long long)x.hi, (long long)x.count, x.mean_loss);
      }
      if (!o->svg.empty()) write_position_loss_svg(o->svg, buckets);
      return;
    }
    if (o->task == "state-fidelity") {
      if (o->text_file.empty()) throw Error("eval --task state-fidelity: needs --text-file");
      auto m = o->model.load(o->window);
      Tokenizer tok = o->model.tokenizer(*m);
      const auto ids = tok.encode(read_file(o->text_file));
      FidelityOptions f;
      f.prefix_tokens.clear();
      for (double x : parse_double_list(o->prefix, "--prefix-tokens")) {
        if (!(x >= 1 && x == std::floor(x) && x < 1e12)) {
          throw Error("--prefix-tokens: " + std::to_string(x) + " is not a positive whole number");
        }
        f.prefix_tokens.push_back(int64_t(x));
      }
      f.continue_tokens = o->continue_tokens;
      f.recompress_every = o->recompress_every;
      f.windows = o->windows;
      std::shared_ptr<const StateProjection> projection;
      if (!o->projection.empty()) {
        projection = std::make_shared<const StateProjection>(load_state_projection(o->projection));
      }
      const auto configs =
          fidelity_configs(o->methods, parse_double_list(o->ratios, "--ratio"), projection);
      const auto results =
          evaluate_state_fidelity(*m, ids, configs, f, progress_bar("state-fidelity"));
      for (const auto& r : results) {
        if (o->json) {
          nlohmann::json j = {{"method", r.method},
                              {"ratio", r.ratio},
                              {"target_ratio", r.target_ratio < 0 ? nlohmann::json(nullptr)
                                                                  : nlohmann::json(r.target_ratio)},
                              {"detail", r.detail},
                              {"prefix_tokens", r.prefix_tokens},
                              {"continue_tokens", r.score.positions},
                              {"recompress_every", r.recompress_every},
                              {"windows", r.windows},
                              {"top1_agreement", r.score.top1_agreement},
                              {"kl", r.score.kl},
                              {"loss_true", r.score.loss_true},
                              {"loss_approx", r.score.loss_approx},
                              {"loss_delta", r.score.loss_delta}};
          std::printf("%s\n", j.dump().c_str());
        } else {
          std::printf("M %-7lld %-14s ratio %.4f  top1 %.4f  kl %.5f  loss %+.3f%%  %s\n",
                      (long long)r.prefix_tokens, r.method.c_str(), r.ratio, r.score.top1_agreement,
                      r.score.kl, 100 * r.score.loss_delta, r.detail.c_str());
        }
        std::fflush(stdout);
      }
      if (!o->svg.empty()) {
        for (int64_t mm : f.prefix_tokens) {
          std::vector<FidelityResult> part;
          for (const auto& r : results)
            if (r.prefix_tokens == mm) part.push_back(r);
          std::string path = o->svg;
          if (f.prefix_tokens.size() > 1) {
            const size_t dot = path.rfind('.');
            const std::string stem = dot == std::string::npos ? path : path.substr(0, dot);
            path = stem + "-M" + std::to_string(mm) + ".svg";
          }
          std::string title = "State fidelity: " + m->config().shape_string() +
                              ", M = " + std::to_string(mm) + ", " +
                              std::to_string(f.continue_tokens) + " continuation tokens";
          if (f.windows > 1) title += ", mean of " + std::to_string(f.windows) + " windows";
          if (f.recompress_every > 0)
            title += ", recompressed every " + std::to_string(f.recompress_every);
          write_fidelity_svg(path, part, title);
          const size_t dot = path.rfind('.');
          write_fidelity_svg((dot == std::string::npos ? path : path.substr(0, dot)) + "-kl.svg",
                             part, title, true);
        }
      }
      return;
    }
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
      if (!o->state_in.empty() && o->rows == 0)
        throw Error("eval: --state-in needs --rows (each row starts from the state)");
      State start;
      if (!o->state_in.empty()) start = load_state_warn(o->state_in, *m);
      auto r = o->rows > 0 ? evaluate_rows(*m, ids, o->rows, o->state_in.empty() ? nullptr : &start)
                           : evaluate_loss(*m, ids, o->window, progress_bar("eval"));
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
