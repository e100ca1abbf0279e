// rwkv7 serve: the OpenAI-compatible HTTP server (apps/server) with continuous batching and
// a prefix state cache. docs/serving.md has the API, the limits and the measurements.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "server/server.hpp"

namespace rwkv7::cli {

void register_serve(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    server::ServerOptions server;
    double cache_mb = 1024, cache_disk_mb = 4096, max_body_kb = 8192;
    std::string cache_dir, cache_disk_compress = "f32";
    std::vector<std::string> states;  // NAME=FILE
    double cache_disk_ratio = -1, cache_ratio = -1;
    std::string cache_compress = "f32";
    bool no_cache = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "serve",
      "OpenAI-compatible HTTP server (chat page at /) with continuous batching and a "
      "prefix state cache; SIGTERM finishes running requests and exits");
  o->model.add(cmd, true, false);
  o->model.add_precision(cmd);
  auto& s = o->server;
  auto& q = s.scheduler;
  cmd->add_option("--host", s.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", s.port, "Port (0: any free port; the line on stderr names it)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", s.api_key,
                  "Require \"Authorization: Bearer KEY\" on /v1/* and /metrics");
  cmd->add_option("--model-name", s.model_id, "Model id in the API (default: the file's stem)");
  cmd->add_option("--max-seqs", q.max_running, "Sequences decoded together at most")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--queue", q.max_queued, "Requests waiting at most (beyond: 429)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65536));
  cmd->add_option("--step-tokens", q.step_tokens,
                  "Positions per batched step (decode tokens + prompt chunks): smaller keeps "
                  "streams smooth while long prompts arrive, larger reads prompts faster")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--stream-slowdown", q.stream_slowdown,
                  "While prompts are read, a step may take at most this many times as long as "
                  "the generating streams' tokens alone (their inter-token time), as predicted "
                  "from measured steps; prompts still get max(16, streams) positions per step")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1000.0));
  cmd->add_option("--stream-step-ms", q.stream_step_ms,
                  "While prompts are read, one generating stream may also slow to about this "
                  "inter-token time (ms; 0: off); d streams share the extra time per prompt being "
                  "read (each slows by 1/d of it per prompt, to this at most); whichever of this "
                  "and --stream-slowdown allows more prompt "
                  "positions: prompts read faster at light load")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  cmd->add_option("--prefill-step-tokens", q.prefill_step_tokens,
                  "Positions per step while no sequence is generating (prompts only)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--snapshot-every", q.snapshot_every,
                  "Prompt tokens between prefix-cache snapshots (0: message and prompt ends only)")
      ->capture_default_str()
      ->check(NonNegative);
  cmd->add_option("--cache-mb", o->cache_mb, "Memory for cached states (LRU)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e7));
  cmd->add_option("--cache-dir", o->cache_dir,
                  "Disk tier of the cache: states evicted from memory and all at shutdown are "
                  "kept here and used again after a restart");
  cmd->add_option("--cache-disk-mb", o->cache_disk_mb, "Bound of the disk tier")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e9));
  cmd->add_option("--cache-disk-compress", o->cache_disk_compress,
                  "How the disk tier stores states: f32 (exact, default), bf16, int8, "
                  "adaptive-int8, ... (rwkv7 state compress --help; docs/state-compression.md)")
      ->capture_default_str();
  cmd->add_option("--cache-disk-ratio", o->cache_disk_ratio,
                  "Target ratio for lowrank*/adaptive* disk compression");
  cmd->add_option("--cache-compress", o->cache_compress,
                  "Cold entries in memory: past --cache-mb, compress the least recently used "
                  "before evicting any (bf16, int8, adaptive-int8, ...; f32 = off, exact)")
      ->capture_default_str();
  cmd->add_option("--cache-ratio", o->cache_ratio,
                  "Target ratio for lowrank*/adaptive* --cache-compress");
  cmd->add_flag("--no-cache", o->no_cache, "No prefix cache (every prompt computed in full)");
  cmd->add_option("--state", o->states,
                  "NAME=FILE (repeatable): a state file (e.g. a document from rwkv7 doc read) "
                  "that requests naming \"state\": \"NAME\" continue instead of the zero state");
  cmd->add_option("--max-prompt-tokens", s.limits.max_prompt_tokens, "Longest prompt accepted")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  cmd->add_option("--max-tokens-limit", s.limits.max_tokens, "Largest max_tokens accepted")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  cmd->add_option("--default-max-tokens", s.limits.default_max_tokens,
                  "max_tokens of a request that does not say")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  cmd->add_option("--max-body-kb", o->max_body_kb, "Largest request body (beyond: 413)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1e6));
  cmd->add_option("--shutdown-grace", s.shutdown_grace_seconds,
                  "Seconds running requests may take to finish after SIGTERM")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
  cmd->callback([o] {
    server::block_shutdown_signals();  // before the model's threads start
    server::ServerOptions s = o->server;
    ModelFlags load_flags = o->model;
    load_flags.threads = 1;  // the model's own Context is unused: the scheduler has its own
    auto model = load_flags.load();
    auto tok = std::make_shared<const Tokenizer>(o->model.tokenizer(*model));
    if (s.model_id.empty()) s.model_id = std::filesystem::path(model->path()).stem().string();
    s.scheduler.threads = o->model.threads;
    s.scheduler.use_cache = !o->no_cache;
    s.scheduler.cache.memory_bytes = int64_t(o->cache_mb * 1024 * 1024);
    s.scheduler.cache.disk_dir = o->cache_dir;
    s.scheduler.cache.disk_bytes = int64_t(o->cache_disk_mb * 1024 * 1024);
    s.scheduler.cache.disk_compression.method = o->cache_disk_compress;
    s.scheduler.cache.disk_compression.ratio = o->cache_disk_ratio;
    auto check = [](const CompressOptions& c, const char* flag) {
      try {
        check_compress_options(c);
      } catch (const Error& e) {
        throw Error(std::string(flag) + ": " + e.what());
      }
    };
    check(s.scheduler.cache.disk_compression, "--cache-disk-compress");
    s.scheduler.cache.memory_compression.method = o->cache_compress;
    s.scheduler.cache.memory_compression.ratio = o->cache_ratio;
    check(s.scheduler.cache.memory_compression, "--cache-compress");
    s.scheduler.max_context = s.limits.max_prompt_tokens + s.limits.max_tokens;
    s.max_body_bytes = size_t(o->max_body_kb * 1024);
    for (const std::string& spec : o->states) {
      const size_t eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
        throw Error("--state " + spec + ": expected NAME=FILE");
      const std::string name = spec.substr(0, eq), file = spec.substr(eq + 1);
      if (s.states.count(name))
        throw Error("--state " + spec + ": the name '" + name + "' is given twice");
      std::string warning;
      State st = load_state(file, *model, &warning);
      if (!warning.empty())
        std::fprintf(stderr, "rwkv7 serve: --state %s: %s\n", name.c_str(), warning.c_str());
      std::fprintf(stderr, "rwkv7 serve: state '%s' from %s (%lld tokens read)\n", name.c_str(),
                   file.c_str(), (long long)st.tokens_consumed);
      s.states.emplace(name, StartState::make(name, std::move(st)));
    }
    std::fprintf(stderr, "rwkv7 serve: %s (%s, %s, %s products), %d threads, %d slots, cache %s\n",
                 s.model_id.c_str(), model->config().shape_string().c_str(),
                 model->weight_dtype().c_str(), model->product_precision().c_str(),
                 o->model.threads, s.scheduler.max_running,
                 o->no_cache ? "off" : (std::to_string(int64_t(o->cache_mb)) + " MB").c_str());
    const int code = server::run_server(model, tok, s);
    if (code != 0) throw Error("serve: exited with code " + std::to_string(code));
  });
}

}  // namespace rwkv7::cli
