#pragma once
// Serving many requests on one model without HTTP (src/serve/): a prefix state cache and a
// scheduler that steps every active sequence together (continuous batching, chunked prefill).
// `rwkv7 serve` puts an OpenAI-compatible HTTP API on top; tests and benchmarks drive it
// directly. See docs/serving.md.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "rwkv7/generate.hpp"
#include "rwkv7/model.hpp"
#include "rwkv7/sampler.hpp"
#include "rwkv7/state_compress.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7 {

// ---------------------------------------------------------------------------------------------
// Prefix state cache: a trie over token ids whose nodes may hold the state after that prefix
// (and the logits there, when known). A request resumes from its longest cached prefix. A key
// may begin with one negative id, the namespace of the StartState its request began from.

struct PrefixCacheOptions {
  int64_t memory_bytes = int64_t(1024) << 20;  // states kept in memory (LRU beyond); 0 = off
  std::string disk_dir;                        // optional second tier; empty = none
  int64_t disk_bytes = int64_t(4096) << 20;    // bound of the disk tier (LRU beyond)
  // How disk-tier states are stored (docs/state-compression.md). f32 (the default) is exact;
  // a lossy method makes a resumed request differ slightly from one computed in full.
  CompressOptions disk_compression;
  // Cold entries in memory: with a method other than f32 (the default: off), entries past the
  // memory budget are first compressed in place, least recently used first, and only evicted
  // when every entry but the newest is compressed, so the same memory holds more prefixes. The
  // newest entry stays exact; a resume from a compressed one is as lossy as its method.
  CompressOptions memory_compression;
};

struct PrefixCacheStats {
  int64_t lookups = 0, hits = 0, tokens_saved = 0;   // a hit: a prefix of ≥ 1 token found
  int64_t entries = 0, bytes = 0;                    // in memory
  int64_t compressed_entries = 0, compressions = 0;  // of them held compressed; done so far
  int64_t disk_entries = 0, disk_bytes = 0, disk_hits = 0;
  int64_t inserts = 0, evictions = 0;
};

class PrefixCache {
 public:
  // Entries are states of `model` (its fingerprint names the disk tier's folder, so a
  // restart with other weights never reads them). Reads the disk tier's index.
  PrefixCache(std::shared_ptr<const Model> model, const PrefixCacheOptions& opts);
  ~PrefixCache();  // finishes pending disk writes
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  struct Hit {
    int64_t length = 0;         // tokens of the prompt this state has read
    State state;                // a copy: the caller advances it
    std::vector<float> logits;  // after the last of them; empty unless length == prompt size
  };
  // The longest cached prefix of `tokens` that leaves something to compute, or the whole of
  // `tokens` when that entry has logits (nothing to compute at all). nullopt on a miss.
  std::optional<Hit> lookup(std::span<const int32_t> tokens);
  // Remembers the state after `tokens` (and the logits there, if given). Cheap when present.
  void insert(std::span<const int32_t> tokens, const State& state,
              const std::vector<float>* logits = nullptr);
  // Writes every entry in memory to the disk tier (shutdown), waiting for the writes.
  void persist();
  PrefixCacheStats stats() const;
  bool enabled() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
// Scheduler: a queue of requests and one loop that steps all active sequences together. Each
// step is one batched forward: one token of every generating sequence plus prompt chunks of
// the sequences still reading their prompt, within a budget of positions per step.

struct SchedulerOptions {
  int threads = 0;                    // of the loop's Context (0 = every core)
  int max_running = 32;               // sequences stepped together at most
  int max_queued = 64;                // waiting beyond the running ones; more are refused
  int64_t step_tokens = 256;          // positions per step (decode tokens + prompt chunks)
  int64_t prefill_step_tokens = 512;  // per step while no sequence is generating
  // Prompt chunks may make a step at most this many times as long as the generating
  // sequences' rows alone (predicted from measured steps): the streams' inter-token time
  // while prompts are read. At least max(16, generating) prompt positions whatever it is.
  // 1.5: the streams' own jitter is ~1.6-1.8x their median on 2 shared cores, so at 1.75 their
  // p99 while a long prompt was read reached 3.1-3.25x the median before it in 2 of 4 runs
  // (1.5: 2.45-2.94 in 4; the prompt's first token ~25% later).
  double stream_slowdown = 1.5;
  // ... or, whichever allows more, about this long (ms; 0: off) for one generating stream, the
  // extra time over its rows alone shared among d streams for each prompt being read
  // ((step - alone) · min(r, d) / d each): at light load a stream's own steps are short (one
  // stream, 0.1B bf16, 2 cores: ~10 ms) and a relative bound alone would read prompts 16
  // positions a step, a pass over the weights each time; with many streams and one prompt
  // --stream-slowdown decides, under a backlog of prompts this.
  double stream_step_ms = 50;
  int64_t snapshot_every = 512;   // prompt positions between cache snapshots (0: ends only)
  int64_t max_context = 1 << 20;  // prompt + max_tokens at most
  bool use_cache = true;
  PrefixCacheOptions cache;
};

// A state requests may start from instead of the zero state: a document read once with
// `rwkv7 doc read` and named on the server (`rwkv7 serve --state NAME=FILE`); a request's
// prompt continues it, so questions about the document never re-read it.
struct StartState {
  std::string name;
  State state;
  // The prefix cache's namespace for requests from this state (the first id of their keys):
  // a negative id derived from the state's contents, so disk-tier entries stay valid across a
  // restart with the same file and never mix with entries from the zero state.
  int32_t cache_namespace = -1;

  static std::shared_ptr<const StartState> make(std::string name, State state);
};

struct ServeRequest {
  std::shared_ptr<const StartState> start;  // null: the zero state
  std::vector<int32_t> prompt;              // at least one token
  SamplerOptions sampling;
  GenerateOptions options;  // max_tokens, stop strings, end-of-text
  // Prompt positions worth a cache snapshot besides the chunk spacing and the end, e.g. the
  // ends of chat messages (a shared system prompt, an earlier turn).
  std::vector<int64_t> snapshot_at;
  bool logprobs = false;  // fill ServeEvent::logprob (a log-softmax over the vocabulary)
};

struct ServeUsage {
  int64_t prompt_tokens = 0, cached_tokens = 0, completion_tokens = 0;
  double queue_seconds = 0;        // submitted → admitted
  double first_token_seconds = 0;  // submitted → first token sampled
  double total_seconds = 0;        // submitted → finished
};

struct ServeEvent {
  enum class Kind { Token, Finished };
  Kind kind = Kind::Token;
  int32_t token = -1;  // Token: the sampled id (-1: text released at the end)
  std::string text;    // Token: text released by it (may be empty)
  float logprob = 0;   // when ServeRequest::logprobs
  // Finished: "max_tokens", "end_of_text", "stop_string", "cancelled" or "error".
  std::string finish_reason;
  std::string error;  // "error": what went wrong
  ServeUsage usage;
};

// The caller's end of one request: events in order, ending with one Finished event. Dropping
// the handle (or cancel()) cancels the request at the next step boundary.
class ServeStream {
 public:
  virtual ~ServeStream() = default;
  // Waits until `deadline` for the next event; false on time-out (the request goes on).
  virtual bool next(ServeEvent& event, std::chrono::steady_clock::time_point deadline) = 0;
  virtual void cancel() = 0;
};

struct SchedulerStats {
  int64_t submitted = 0, rejected = 0, finished = 0, cancelled = 0, errors = 0;
  int64_t prompt_tokens = 0, prompt_tokens_cached = 0, prompt_tokens_computed = 0;
  int64_t generated_tokens = 0, steps = 0, step_positions = 0;
  int running = 0, queued = 0, last_batch = 0;  // now
  double busy_seconds = 0;                      // inside batched forwards
  PrefixCacheStats cache;
};

class Scheduler {
 public:
  // Starts the loop thread.
  Scheduler(std::shared_ptr<const Model> model, std::shared_ptr<const Tokenizer> tokenizer,
            const SchedulerOptions& opts);
  ~Scheduler();  // shutdown(true)
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  enum class Admission { Accepted, QueueFull, ShuttingDown };
  struct Ticket {
    Admission admission = Admission::Accepted;
    std::unique_ptr<ServeStream> stream;  // set when accepted
  };
  // Queues a request (thread-safe). Error on a request that can never run (empty prompt,
  // token outside the vocabulary, too long); a full queue is not an error but QueueFull.
  Ticket submit(ServeRequest request);
  // Stops accepting; then either lets the running and queued requests finish, or cancels
  // them; writes the cache's disk tier; returns when the loop has ended. Idempotent.
  void shutdown(bool cancel_running);
  SchedulerStats stats() const;
  const SchedulerOptions& options() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace rwkv7
