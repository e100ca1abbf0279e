// The serving loop. One thread owns the Context and every running sequence; other threads only
// submit (a queue under a mutex) and read their stream (a queue of events per request). A step:
//   1. drop cancelled sequences (their slots are free for this very step);
//   2. admit queued requests up to max_running, each resuming from its longest cached prefix;
//   3. sample one token for every generating sequence (the one it feeds in this step);
//   4. give the rest of the step's position budget to prompts, oldest first, each chunk ending
//      at the next snapshot point;
//   5. one batched forward; snapshots into the prefix cache; finished sequences leave.
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

#include "engine/text_stream.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/serve.hpp"
#include "serve/cache_key_file.hpp"
#include "serve/step_cost.hpp"

namespace rwkv7 {
namespace {

using Clock = std::chrono::steady_clock;

// Prompt positions a step gives at least while streams generate, so prompts move on.
int64_t prompt_floor(const SchedulerOptions& o) { return std::min<int64_t>(16, o.step_tokens); }

double seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// The meeting point of the loop (writer) and the caller (reader) of one request.
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<ServeEvent> events;
  std::atomic<bool> cancelled{false};

  void push(ServeEvent&& e) {
    {
      std::lock_guard lock(mu);
      events.push_back(std::move(e));
    }
    cv.notify_one();
  }
};

class Stream final : public ServeStream {
 public:
  explicit Stream(std::shared_ptr<Channel> ch) : ch_(std::move(ch)) {}
  ~Stream() override { cancel(); }
  bool next(ServeEvent& event, Clock::time_point deadline) override {
    std::unique_lock lock(ch_->mu);
    if (!ch_->cv.wait_until(lock, deadline, [&] { return !ch_->events.empty(); })) return false;
    event = std::move(ch_->events.front());
    ch_->events.pop_front();
    return true;
  }
  void cancel() override { ch_->cancelled = true; }

 private:
  std::shared_ptr<Channel> ch_;
};

struct Seq {
  ServeRequest req;
  std::shared_ptr<Channel> ch;
  Sampler sampler;
  State state;
  std::vector<float> logits;
  std::unique_ptr<TextStream> text;
  std::vector<int64_t> snapshots;  // prompt positions to snapshot at, ascending, end included
  // The cache key of what the state has read: [start's namespace] + prompt + generated tokens.
  std::vector<int32_t> fed;
  size_t key_offset = 0;  // 1 when the key begins with a start state's namespace
  int64_t pos = 0;        // prompt tokens read
  int64_t chunk = 0;      // prompt tokens read in this step
  int64_t cached = 0, generated = 0;
  int32_t feed = 0;
  bool decoding = false;
  bool finished = false;  // its Finished event is sent (a step's failure must not send another)
  std::string finish_after_feed;  // the reason, once the last token is in this step's batch
  Clock::time_point submitted, admitted, first_token;

  Seq(ServeRequest r, std::shared_ptr<Channel> c)
      : req(std::move(r)), ch(std::move(c)), sampler(req.sampling), submitted(Clock::now()) {}
  // The cache key after the first n prompt tokens.
  std::span<const int32_t> key(int64_t n) const {
    return std::span<const int32_t>(fed.data(), key_offset + size_t(n));
  }
};

}  // namespace

struct Scheduler::Impl {
  std::shared_ptr<const Model> model;
  std::shared_ptr<const Tokenizer> tok;
  SchedulerOptions opts;
  std::unique_ptr<PrefixCache> cache;

  mutable std::mutex mu;  // guards the queue, the flags and `st`
  std::condition_variable cv;
  std::deque<std::unique_ptr<Seq>> queue;
  bool accepting = true, stopping = false, cancel_all = false;
  SchedulerStats st;
  std::thread loop_thread;
  std::mutex join_mu;  // shutdown may come from two threads (a signal and a destructor)

  std::vector<std::unique_ptr<Seq>> running;  // the loop thread's own
  StepCostModel cost;                         // the loop thread's own
  StepTimeController step_time{16, 16};       // set from opts at start; the loop thread's own
  // step()'s lists of the sequences it samples (kept between steps).
  std::vector<Seq*> sampling_;
  std::vector<Sampler*> samplers_;
  std::vector<std::span<const float>> logit_rows_;

  void loop();
  void admit(Seq& s);
  void step(Context& ctx, std::vector<SequenceRequest>& batch);
  void finish(Seq& s, const std::string& reason, const std::string& error = {});
  void remember(Seq& s);
};

void Scheduler::Impl::admit(Seq& s) {
  s.admitted = Clock::now();
  s.text = std::make_unique<TextStream>(*tok, s.req.options.stop);
  const auto& p = s.req.prompt;
  const int64_t n = int64_t(p.size());
  s.fed.clear();
  if (s.req.start) s.fed.push_back(s.req.start->cache_namespace);
  s.key_offset = s.fed.size();
  s.fed.insert(s.fed.end(), p.begin(), p.end());
  std::optional<PrefixCache::Hit> hit;
  if (cache) hit = cache->lookup(s.fed);
  if (hit) {  // at least one prompt token: the namespace alone is never an entry
    s.state = std::move(hit->state);
    s.cached = s.pos = hit->length - int64_t(s.key_offset);
    if (s.pos == n) {
      s.logits = std::move(hit->logits);
      s.decoding = true;
    }
  } else {
    s.state = s.req.start ? s.req.start->state : model->new_state();
  }
  if (cache) {
    for (int64_t at : s.req.snapshot_at)
      if (at > s.pos && at < n) s.snapshots.push_back(at);
    if (opts.snapshot_every > 0)
      for (int64_t at = (s.pos / opts.snapshot_every + 1) * opts.snapshot_every; at < n;
           at += opts.snapshot_every)
        s.snapshots.push_back(at);
    std::sort(s.snapshots.begin(), s.snapshots.end());
    s.snapshots.erase(std::unique(s.snapshots.begin(), s.snapshots.end()), s.snapshots.end());
  }
  s.snapshots.push_back(n);
  std::lock_guard lock(mu);
  st.prompt_tokens += n;
  st.prompt_tokens_cached += s.cached;
}

// The state after the prompt and every fed token, with the logits there, for the next turn.
void Scheduler::Impl::remember(Seq& s) {
  if (cache && !s.logits.empty()) cache->insert(s.fed, s.state, &s.logits);
}

void Scheduler::Impl::finish(Seq& s, const std::string& reason, const std::string& error) {
  if (s.finished) return;
  s.finished = true;
  if (reason != "stop_string" && reason != "cancelled" && reason != "error" && s.text) {
    const std::string_view rest = s.text->finish();
    if (!rest.empty()) {
      ServeEvent e;
      e.token = -1;
      e.text = std::string(rest);
      s.ch->push(std::move(e));
    }
  }
  const auto now = Clock::now();
  ServeEvent e;
  e.kind = ServeEvent::Kind::Finished;
  e.finish_reason = reason;
  e.error = error;
  e.usage.prompt_tokens = int64_t(s.req.prompt.size());
  e.usage.cached_tokens = s.cached;
  e.usage.completion_tokens = s.generated;
  e.usage.queue_seconds = seconds(s.submitted, s.admitted);
  e.usage.first_token_seconds = s.generated ? seconds(s.submitted, s.first_token) : 0;
  e.usage.total_seconds = seconds(s.submitted, now);
  s.ch->push(std::move(e));
  std::lock_guard lock(mu);
  ++st.finished;
  if (reason == "cancelled") ++st.cancelled;
  if (reason == "error") ++st.errors;
}

void Scheduler::Impl::step(Context& ctx, std::vector<SequenceRequest>& batch) {
  batch.clear();
  std::vector<Seq*> done;
  // Generating sequences: one token each.
  int64_t decoding = 0;
  const size_t sampleable = std::min(size_t(model->config().vocab_size), tok->vocab_size());
  std::vector<Seq*>& sampling = sampling_;
  std::vector<Sampler*>& samplers = samplers_;
  std::vector<std::span<const float>>& rows = logit_rows_;
  sampling.clear(), samplers.clear(), rows.clear();
  for (auto& sp : running) {
    Seq& s = *sp;
    if (!s.decoding) continue;
    if (s.generated >= s.req.options.max_tokens) {
      remember(s);
      finish(s, "max_tokens");
      done.push_back(&s);
      continue;
    }
    sampling.push_back(&s);
    samplers.push_back(&s.sampler);
    // Only ids the tokenizer can print (a model's vocabulary may be padded past it).
    rows.push_back(std::span<const float>(s.logits).first(sampleable));
  }
  const std::vector<int32_t> tokens = sample_many(ctx, samplers, rows);
  for (size_t i = 0; i < sampling.size(); ++i) {
    Seq& s = *sampling[i];
    const GenerateOptions& o = s.req.options;
    const int32_t next = tokens[i];
    if (s.generated == 0) s.first_token = Clock::now();
    if (next == 0 && o.stop_at_end_of_text) {
      remember(s);
      finish(s, "end_of_text");
      done.push_back(&s);
      continue;
    }
    s.sampler.accept(next);
    ++s.generated;
    s.feed = next;
    s.fed.push_back(next);
    bool stopped = false;
    ServeEvent e;
    e.token = next;
    if (s.req.logprobs) e.logprob = log_probability(s.logits, next);
    e.text = std::string(s.text->push(next, stopped));
    s.ch->push(std::move(e));
    if (stopped) s.finish_after_feed = "stop_string";
    batch.push_back(
        SequenceRequest{std::span<const int32_t>(&s.feed, 1), &s.state, Logits::Last, &s.logits});
    ++decoding;
  }
  // Prompts, shortest remaining first, so a short request is not stuck behind a long one;
  // but the oldest prompt always gets half, so a long one is never starved. One chunk
  // per sequence, ending at or before its next snapshot point.
  // While streams generate, prompts get what is left of --step-tokens, but only as many
  // positions as keep the step within --stream-slowdown x the time of the streams' rows alone,
  // as predicted from the steps measured so far (a step's fixed cost, one pass over the
  // weights, lets a few streams carry many prompt positions), or as keep it near
  // --stream-step-ms shared among the streams, one stream's wait per prompt being read
  // (shared_step_target), whichever allows more. Always
  // at least as many as there are streams (a step at most doubles in rows, whatever the costs) and
  // 16 (so prompts move on). With no stream to keep smooth, --prefill-step-tokens.
  const int64_t floor = prompt_floor(opts);
  int64_t share = std::max(decoding, floor);
  if (const std::optional<int64_t> n = cost.prompt_positions(decoding, opts.stream_slowdown))
    share = std::max(share, *n);
  std::vector<Seq*> reading;  // the sequences still reading their prompts
  for (auto& sp : running) {
    sp->chunk = 0;
    if (!sp->decoding) reading.push_back(sp.get());
  }
  const std::optional<double> alone = cost.decode_only(decoding);
  const double step_target =
      shared_step_target(opts.stream_step_ms / 1000, decoding, alone, int64_t(reading.size()));
  // What of the target the prompt positions may take (unknown until the streams' time is).
  const double allowance = step_target > 0 && alone ? step_target - *alone : 0;
  if (step_target > 0) share = std::max(share, step_time.share(allowance));
  int64_t budget = decoding > 0 ? std::max(floor, std::min(opts.step_tokens - decoding, share))
                                : std::max(opts.step_tokens, opts.prefill_step_tokens);
  auto room = [](const Seq& s) {
    return *std::upper_bound(s.snapshots.begin(), s.snapshots.end(), s.pos) - s.pos - s.chunk;
  };
  auto give = [&](Seq& s, int64_t most) {
    const int64_t n = std::min({room(s), most, budget});
    s.chunk += n;
    budget -= n;
  };
  if (!reading.empty()) {
    Seq& oldest = *reading.front();
    give(oldest, std::max<int64_t>(budget / 2, 1));
    std::vector<Seq*> by_length(reading.begin() + 1, reading.end());
    std::stable_sort(by_length.begin(), by_length.end(), [](const Seq* a, const Seq* b) {
      return a->req.prompt.size() - size_t(a->pos) < b->req.prompt.size() - size_t(b->pos);
    });
    for (Seq* sq : by_length) give(*sq, budget);
    give(oldest, budget);
  }
  const bool prompts_limited = !reading.empty() && budget == 0;
  for (Seq* sq : reading) {
    Seq& s = *sq;
    if (s.chunk == 0) continue;
    const bool last = s.pos + s.chunk == int64_t(s.req.prompt.size());
    batch.push_back(
        SequenceRequest{std::span<const int32_t>(s.req.prompt.data() + s.pos, size_t(s.chunk)),
                        &s.state, last ? Logits::Last : Logits::None, &s.logits});
  }
  if (!batch.empty()) {
    const auto t0 = Clock::now();
    std::string failure;
    try {
      model->forward(ctx, batch);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    const double busy = seconds(t0, Clock::now());
    int64_t positions = 0;
    for (const SequenceRequest& q : batch) positions += int64_t(q.tokens.size());
    if (failure.empty()) {
      cost.observe(decoding, positions - decoding, busy);
      if (decoding > 0 && prompts_limited)
        step_time.observe(positions - decoding, busy, step_target, allowance);
    }
    {
      std::lock_guard lock(mu);
      ++st.steps;
      st.step_positions += positions;
      st.last_batch = int(batch.size());
      st.busy_seconds += busy;
      st.generated_tokens += decoding;
      for (auto& sp : running) st.prompt_tokens_computed += sp->chunk;
    }
    if (!failure.empty()) {  // not expected: every input was checked at submit
      for (auto& sp : running)
        if (std::find(done.begin(), done.end(), sp.get()) == done.end()) {
          finish(*sp, "error", failure);
          done.push_back(sp.get());
        }
    }
  }
  for (auto& sp : running) {
    Seq& s = *sp;
    if (std::find(done.begin(), done.end(), &s) != done.end()) continue;
    if (s.chunk > 0) {
      s.pos += s.chunk;
      if (s.pos == int64_t(s.req.prompt.size())) {
        s.decoding = true;
        if (cache) cache->insert(s.key(s.pos), s.state, &s.logits);
      } else if (cache && std::binary_search(s.snapshots.begin(), s.snapshots.end(), s.pos)) {
        cache->insert(s.key(s.pos), s.state);
      }
    }
    if (!s.finish_after_feed.empty()) {
      remember(s);
      finish(s, s.finish_after_feed);
      done.push_back(&s);
    }
  }
  std::erase_if(running, [&](const std::unique_ptr<Seq>& sp) {
    return std::find(done.begin(), done.end(), sp.get()) != done.end();
  });
}

void Scheduler::Impl::loop() {
  Context ctx(opts.threads);
  std::vector<SequenceRequest> batch;
  for (;;) {
    std::vector<std::unique_ptr<Seq>> admitted;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return stopping || !queue.empty() || !running.empty(); });
      if (cancel_all) {
        for (auto& s : queue) s->ch->cancelled = true;
        for (auto& s : running) s->ch->cancelled = true;
      }
      for (auto it = queue.begin(); it != queue.end();) {  // gave up while waiting
        if ((*it)->ch->cancelled) {
          admitted.push_back(std::move(*it));
          it = queue.erase(it);
        } else {
          ++it;
        }
      }
      while (!queue.empty() && int(running.size() + admitted.size()) < opts.max_running) {
        admitted.push_back(std::move(queue.front()));
        queue.pop_front();
      }
      if (stopping && queue.empty() && running.empty() && admitted.empty()) break;
    }
    for (auto& s : admitted) {
      try {
        if (!s->ch->cancelled) admit(*s);
      } catch (const std::exception& e) {
        finish(*s, "error", e.what());
        continue;
      }
      running.push_back(std::move(s));
    }
    // Cancelled sequences leave before the step: their slots are free at once.
    std::erase_if(running, [&](const std::unique_ptr<Seq>& s) {
      if (!s->ch->cancelled) return false;
      if (s->admitted == Clock::time_point{}) s->admitted = Clock::now();
      finish(*s, "cancelled");
      return true;
    });
    if (!running.empty()) {
      try {
        step(ctx, batch);
      } catch (const std::exception& e) {  // a bug, not bad input (checked at submit): the
        // running requests end with an error, the server goes on
        std::fprintf(stderr, "rwkv7: scheduler: step failed: %s\n", e.what());
        for (auto& s : running) finish(*s, "error", e.what());
        running.clear();
      }
    }
    std::lock_guard lock(mu);
    st.running = int(running.size());
    st.queued = int(queue.size());
  }
  if (cache) cache->persist();
}

Scheduler::Scheduler(std::shared_ptr<const Model> model, std::shared_ptr<const Tokenizer> tok,
                     const SchedulerOptions& opts)
    : impl_(std::make_shared<Impl>()) {
  if (!model || !tok) throw Error("scheduler: no model or tokenizer");
  if (opts.max_running < 1) throw Error("scheduler: max_running must be at least 1");
  if (opts.max_queued < 0) throw Error("scheduler: max_queued must not be negative");
  if (opts.step_tokens < 1) throw Error("scheduler: step_tokens must be at least 1");
  if (!(opts.stream_slowdown >= 1) || !std::isfinite(opts.stream_slowdown))
    throw Error("scheduler: stream_slowdown must be a finite number >= 1, not " +
                std::to_string(opts.stream_slowdown));
  if (!(opts.stream_step_ms >= 0) || !std::isfinite(opts.stream_step_ms))
    throw Error("scheduler: stream_step_ms must be a finite number >= 0, not " +
                std::to_string(opts.stream_step_ms));
  if (opts.snapshot_every < 0) throw Error("scheduler: snapshot_every must not be negative");
  Context probe(opts.threads);  // checks the thread count here, in the caller's thread
  impl_->model = std::move(model);
  impl_->tok = std::move(tok);
  impl_->opts = opts;
  impl_->step_time = StepTimeController(prompt_floor(opts), opts.step_tokens);
  if (opts.use_cache && (opts.cache.memory_bytes > 0 || !opts.cache.disk_dir.empty()))
    impl_->cache = std::make_unique<PrefixCache>(impl_->model, opts.cache);
  impl_->loop_thread = std::thread([impl = impl_.get()] { impl->loop(); });
}

Scheduler::~Scheduler() { shutdown(true); }

std::shared_ptr<const StartState> StartState::make(std::string name, State state) {
  auto out = std::make_shared<StartState>();
  // FNV-1a over what the state holds; 31 bits, negative (token ids are not).
  uint64_t h = serve::fnv1a64(state.wkv.data(), state.wkv.size() * sizeof(float));
  h = serve::fnv1a64(state.att_shift.data(), state.att_shift.size() * sizeof(float), h);
  h = serve::fnv1a64(state.ffn_shift.data(), state.ffn_shift.size() * sizeof(float), h);
  h = serve::fnv1a64(&state.tokens_consumed, sizeof(state.tokens_consumed), h);
  out->cache_namespace = -1 - int32_t(h % 0x7fffffffu);
  out->name = std::move(name);
  out->state = std::move(state);
  return out;
}

const SchedulerOptions& Scheduler::options() const { return impl_->opts; }

Scheduler::Ticket Scheduler::submit(ServeRequest request) {
  const ModelConfig& c = impl_->model->config();
  const auto& p = request.prompt;
  if (p.empty()) throw Error("the prompt is empty (at least one token is needed)");
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] < 0 || p[i] >= c.vocab_size)
      throw Error("prompt token " + std::to_string(p[i]) + " at position " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
  if (request.options.max_tokens < 0) throw Error("max_tokens must not be negative");
  if (int64_t(p.size()) + request.options.max_tokens > impl_->opts.max_context)
    throw Error("prompt (" + std::to_string(p.size()) + " tokens) + max_tokens (" +
                std::to_string(request.options.max_tokens) + ") exceeds the limit of " +
                std::to_string(impl_->opts.max_context) + " tokens");
  for (const std::string& s : request.options.stop)
    if (s.empty()) throw Error("stop strings must not be empty");
  if (request.start) {
    if (request.start->cache_namespace >= 0)
      throw Error("start state '" + request.start->name + "': not made by StartState::make");
    impl_->model->check_state(request.start->state);
  }
  auto ch = std::make_shared<Channel>();
  auto seq = std::make_unique<Seq>(std::move(request), ch);  // checks the sampler options
  Ticket t;
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->accepting) {
      t.admission = Admission::ShuttingDown;
      ++impl_->st.rejected;
      return t;
    }
    const int free_slots = impl_->opts.max_running - impl_->st.running;
    if (int(impl_->queue.size()) >= impl_->opts.max_queued + std::max(free_slots, 0)) {
      t.admission = Admission::QueueFull;
      ++impl_->st.rejected;
      return t;
    }
    impl_->queue.push_back(std::move(seq));
    ++impl_->st.submitted;
    impl_->st.queued = int(impl_->queue.size());
  }
  impl_->cv.notify_one();
  t.stream = std::make_unique<Stream>(std::move(ch));
  return t;
}

void Scheduler::shutdown(bool cancel_running) {
  {
    std::lock_guard lock(impl_->mu);
    impl_->accepting = false;
    impl_->stopping = true;
    if (cancel_running) impl_->cancel_all = true;
  }
  impl_->cv.notify_all();
  std::lock_guard lock(impl_->join_mu);
  if (impl_->loop_thread.joinable()) impl_->loop_thread.join();
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  {
    std::lock_guard lock(impl_->mu);
    s = impl_->st;
  }
  if (impl_->cache) s.cache = impl_->cache->stats();
  return s;
}

}  // namespace rwkv7
