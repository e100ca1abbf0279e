// The prefix state cache: a radix trie over token ids (edges carry runs of tokens, so a long
// prompt costs a few nodes, not one per token). A node may hold an entry in memory (a State
// and maybe logits; LRU-evicted past the memory budget) and/or on disk (a state file + a key
// file; LRU-evicted past the disk budget). Evicted memory entries are written to disk by a
// writer thread, so the scheduler's step never waits for a disk. With memory_compression,
// entries past the memory budget are first compressed in place (least recent first) and only
// evicted once all but the newest are.
#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "rwkv7/error.hpp"
#include "rwkv7/serve.hpp"
#include "rwkv7/state_compress.hpp"
#include "serve/cache_key_file.hpp"

namespace rwkv7 {
namespace fs = std::filesystem;
using serve::CacheKey;

namespace {

struct Node {
  std::vector<int32_t> edge;  // tokens from the parent to here
  Node* parent = nullptr;
  int64_t depth = 0;                                  // tokens from the root to here
  std::map<int32_t, std::unique_ptr<Node>> children;  // by the first token of their edge
  // In memory.
  bool resident = false;
  State state;                            // empty while `packed` holds it
  std::optional<CompressedState> packed;  // a cold entry, compressed (memory_compression)
  std::vector<float> logits;
  std::list<Node*>::iterator lru;
  // On disk ("<name>.state" + "<name>.key"), or being written there.
  bool on_disk = false, disk_logits = false;
  int64_t disk_size = 0;
  std::string disk_name;
  std::list<Node*>::iterator disk_lru;

  bool has_entry() const { return resident || on_disk; }
  bool usable_at(int64_t n) const {  // as a resume point for a prompt of n tokens
    return depth < n || (depth == n && ((resident && !logits.empty()) || (on_disk && disk_logits)));
  }
};

int64_t entry_bytes(const Node& n) {
  const size_t state = n.packed ? n.packed->bytes() : n.state.bytes();
  return int64_t(state + n.logits.size() * 4) + n.depth * 4 + 256;
}

// The entry's state, decompressed when it is held compressed.
State state_of(const Node& n) { return n.packed ? decompress_state(*n.packed) : n.state; }

std::vector<int32_t> path_tokens(const Node* n) {
  std::vector<int32_t> out(size_t(n->depth));
  for (; n->parent; n = n->parent)
    std::copy(n->edge.begin(), n->edge.end(), out.begin() + (n->depth - int64_t(n->edge.size())));
  return out;
}

std::string safe_name(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-') ? c : '_';
  return out;
}

struct WriteJob {
  std::string name;
  CacheKey key;
  State state;
};

}  // namespace

struct PrefixCache::Impl {
  std::shared_ptr<const Model> model;
  PrefixCacheOptions opts;
  fs::path dir;  // disk tier folder of this model; empty = no disk tier
  mutable std::mutex mu;
  Node root;
  std::list<Node*> lru, disk_lru;  // most recent first
  PrefixCacheStats st;
  // Disk writer.
  std::deque<WriteJob> jobs;
  std::map<std::string, const WriteJob*> writing;  // name → job not yet on disk
  std::condition_variable jobs_cv, idle_cv;
  bool stopping = false, busy = false;
  std::thread writer;

  // Walks to the node of `tokens`, creating (and splitting) nodes on the way.
  Node* make_path(std::span<const int32_t> tokens) {
    Node* n = &root;
    size_t at = 0;
    while (at < tokens.size()) {
      auto it = n->children.find(tokens[at]);
      if (it == n->children.end()) {
        auto child = std::make_unique<Node>();
        child->edge.assign(tokens.begin() + ptrdiff_t(at), tokens.end());
        child->parent = n;
        child->depth = int64_t(tokens.size());
        Node* c = child.get();
        n->children.emplace(tokens[at], std::move(child));
        return c;
      }
      Node* c = it->second.get();
      size_t same = 0;
      while (same < c->edge.size() && at + same < tokens.size() &&
             c->edge[same] == tokens[at + same])
        ++same;
      if (same < c->edge.size()) {  // split c's edge: n → mid → c
        auto mid = std::make_unique<Node>();
        mid->edge.assign(c->edge.begin(), c->edge.begin() + ptrdiff_t(same));
        mid->parent = n;
        mid->depth = n->depth + int64_t(same);
        std::unique_ptr<Node> moved = std::move(it->second);
        moved->edge.erase(moved->edge.begin(), moved->edge.begin() + ptrdiff_t(same));
        moved->parent = mid.get();
        Node* m = mid.get();
        m->children.emplace(moved->edge[0], std::move(moved));
        it->second = std::move(mid);
        c = m;
      }
      n = c;
      at += same;
    }
    return n;
  }

  // Removes nodes that hold nothing and lead nowhere, from `n` up.
  void prune(Node* n) {
    while (n != &root && !n->has_entry() && n->children.empty()) {
      Node* p = n->parent;
      p->children.erase(n->edge[0]);
      n = p;
    }
  }

  void drop_resident(Node* n) {
    st.bytes -= entry_bytes(*n);
    --st.entries;
    lru.erase(n->lru);
    if (n->packed) --st.compressed_entries;
    n->resident = false;
    n->state = State{};
    n->packed.reset();
    n->logits = {};
  }

  void drop_disk(Node* n) {
    std::error_code ec;
    fs::remove(dir / (n->disk_name + ".key"), ec);
    fs::remove(dir / (n->disk_name + ".state"), ec);
    st.disk_bytes -= n->disk_size;
    --st.disk_entries;
    disk_lru.erase(n->disk_lru);
    n->on_disk = false;
  }

  void add_disk(Node* n, std::string name, int64_t size, bool has_logits) {
    n->on_disk = true;
    n->disk_name = std::move(name);
    n->disk_size = size;
    n->disk_logits = has_logits;
    disk_lru.push_front(n);
    n->disk_lru = disk_lru.begin();
    st.disk_bytes += size;
    ++st.disk_entries;
    while (st.disk_bytes > opts.disk_bytes && disk_lru.size() > 1) {
      Node* old = disk_lru.back();
      if (writing.count(old->disk_name)) break;  // its write is still pending
      drop_disk(old);
      prune(old);
    }
  }

  // At most this fraction of a state's fp32 bytes is written (the disk budget stays a bound
  // before the file exists; a restart reads the real sizes).
  double disk_ratio_bound(const State& s) const {
    const CompressOptions& c = opts.disk_compression;
    if (c.method == "bf16" || c.method == "fp16") return 0.5;
    if (c.method == "int8") return double(s.head_size + 4) / double(4 * s.head_size) + 0.05;
    if (c.ratio > 0) return c.ratio;
    return 1.0;  // f32, or a rank / energy whose size depends on the state
  }

  // Queues an entry for the disk tier (its size is estimated until written).
  void queue_write(Node* n, const State& state, const std::vector<float>& logits) {
    if (dir.empty() || n->on_disk) return;
    WriteJob job;
    job.key.tokens = path_tokens(n);
    job.key.logits = logits;
    job.state = state;
    job.name = fmt_name(job.key.tokens);
    add_disk(n, job.name,
             int64_t(double(state.bytes()) * disk_ratio_bound(state)) + int64_t(logits.size() * 4) +
                 n->depth * 4,
             !logits.empty());
    jobs.push_back(std::move(job));
    writing[jobs.back().name] = &jobs.back();
    jobs_cv.notify_one();
  }

  static std::string fmt_name(const std::vector<int32_t>& tokens) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%016llx-%lld",
                  (unsigned long long)serve::fnv1a64(tokens.data(), tokens.size() * 4),
                  (long long)tokens.size());
    return buf;
  }

  void compress_cold() {
    if (opts.memory_compression.method == "f32") return;
    // From the least recent on; never the newest (just stored or just used).
    for (auto it = lru.rbegin(); st.bytes > opts.memory_bytes && *it != lru.front(); ++it) {
      Node* n = *it;
      if (n->packed) continue;
      st.bytes -= entry_bytes(*n);
      n->packed = compress_state(n->state, opts.memory_compression);
      n->state = State{};
      st.bytes += entry_bytes(*n);
      ++st.compressed_entries;
      ++st.compressions;
    }
  }

  void evict_to_budget() {
    compress_cold();
    while (st.bytes > opts.memory_bytes && !lru.empty()) {
      Node* n = lru.back();
      if (!dir.empty() && !n->on_disk) queue_write(n, state_of(*n), n->logits);
      drop_resident(n);
      ++st.evictions;
      prune(n);
    }
  }

  void write_loop() {
    std::unique_lock lock(mu);
    for (;;) {
      jobs_cv.wait(lock, [&] { return stopping || !jobs.empty(); });
      if (jobs.empty()) return;
      busy = true;
      WriteJob& job = jobs.front();
      lock.unlock();
      bool ok = true;
      try {
        save_state((dir / (job.name + ".state")).string(), job.state, *model,
                   opts.disk_compression);
        serve::write_cache_key((dir / (job.name + ".key")).string(), job.key);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rwkv7: prefix cache: cannot write %s: %s\n", job.name.c_str(),
                     e.what());
        ok = false;
      }
      lock.lock();
      writing.erase(job.name);
      if (!ok) {  // forget the disk entry
        if (Node* n = find_exact(job.key.tokens); n && n->on_disk) {
          drop_disk(n);
          prune(n);
        }
      }
      jobs.pop_front();
      busy = false;
      idle_cv.notify_all();
    }
  }

  Node* find_exact(std::span<const int32_t> tokens) {
    Node* n = &root;
    size_t at = 0;
    while (at < tokens.size()) {
      auto it = n->children.find(tokens[at]);
      if (it == n->children.end()) return nullptr;
      Node* c = it->second.get();
      if (at + c->edge.size() > tokens.size() ||
          !std::equal(c->edge.begin(), c->edge.end(), tokens.begin() + ptrdiff_t(at)))
        return nullptr;
      at += c->edge.size();
      n = c;
    }
    return n;
  }

  // Reads the disk tier's index; removes what is unreadable or unpaired.
  void load_index() {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw Error("prefix cache: cannot create " + dir.string() + ": " + ec.message());
    struct Found {
      fs::file_time_type time;
      std::string name;
    };
    std::vector<Found> keys;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const fs::path p = e.path();
      if (p.extension() == ".key") {
        keys.push_back({fs::last_write_time(p, ec), p.stem().string()});
      } else if (p.extension() == ".state") {
        if (!fs::exists(fs::path(p).replace_extension(".key"))) fs::remove(p, ec);
      } else if (p.string().find(".tmp.") != std::string::npos) {
        fs::remove(p, ec);  // a write cut short by a crash
      }
    }
    std::sort(keys.begin(), keys.end(), [](auto& a, auto& b) { return a.time < b.time; });
    for (const Found& f : keys) {  // oldest first, so the newest ends up most recent
      const fs::path key_path = dir / (f.name + ".key"), state_path = dir / (f.name + ".state");
      try {
        if (!fs::exists(state_path)) throw Error("no state file beside it");
        CacheKey key = serve::read_cache_key(key_path.string(), model->config().vocab_size);
        if (key.tokens.empty()) throw Error("empty key");
        Node* n = make_path(key.tokens);
        if (n->on_disk) throw Error("duplicate entry");
        add_disk(n, f.name, int64_t(fs::file_size(key_path) + fs::file_size(state_path)),
                 !key.logits.empty());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rwkv7: prefix cache: dropping %s: %s\n", key_path.c_str(), e.what());
        fs::remove(key_path, ec);
        fs::remove(state_path, ec);
      }
    }
  }

  // The entry of `n` from disk (or from its pending write). False if unreadable (then the
  // disk entry is gone).
  bool load_from_disk(Node* n, State& state, std::vector<float>& logits) {
    if (auto w = writing.find(n->disk_name); w != writing.end()) {
      state = w->second->state;
      logits = w->second->key.logits;
    } else {
      try {
        std::string warning;
        state = load_state((dir / (n->disk_name + ".state")).string(), *model, &warning);
        if (!warning.empty()) throw Error(warning);
        CacheKey key = serve::read_cache_key((dir / (n->disk_name + ".key")).string(),
                                             model->config().vocab_size);
        // A key in a start state's namespace (first id negative) holds a state that read the
        // start's tokens before its own: only the key's length can be checked.
        const bool from_start = !key.tokens.empty() && key.tokens[0] < 0;
        if (int64_t(key.tokens.size()) != n->depth ||
            (!from_start && state.tokens_consumed != n->depth))
          throw Error("the entry's length does not match its place in the cache");
        logits = std::move(key.logits);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rwkv7: prefix cache: dropping %s: %s\n", n->disk_name.c_str(),
                     e.what());
        drop_disk(n);
        return false;
      }
    }
    disk_lru.splice(disk_lru.begin(), disk_lru, n->disk_lru);
    ++st.disk_hits;
    return true;
  }

  void store(Node* n, const State& state, const std::vector<float>* logits) {
    if (n->resident) {
      if (logits && n->logits.empty()) {
        n->logits = *logits;
        st.bytes += int64_t(logits->size() * 4);
      }
      lru.splice(lru.begin(), lru, n->lru);
    } else {
      n->resident = true;
      n->state = state;
      if (logits) n->logits = *logits;
      lru.push_front(n);
      n->lru = lru.begin();
      st.bytes += entry_bytes(*n);
      ++st.entries;
    }
    evict_to_budget();
  }
};

PrefixCache::PrefixCache(std::shared_ptr<const Model> model, const PrefixCacheOptions& opts)
    : impl_(std::make_unique<Impl>()) {
  if (opts.memory_bytes < 0 || opts.disk_bytes < 0)
    throw Error("prefix cache: budgets must not be negative");
  check_compress_options(opts.disk_compression);
  check_compress_options(opts.memory_compression);
  impl_->model = std::move(model);
  impl_->opts = opts;
  if (!opts.disk_dir.empty()) {
    // States computed with bf16 products differ from fp32 ones (LoadOptions::precision): a
    // restart with the other precision must not resume from them.
    std::string folder = "model-" + safe_name(impl_->model->fingerprint());
    if (impl_->model->product_precision() != "fp32")
      folder.append(1, '-').append(impl_->model->product_precision());
    impl_->dir = fs::path(opts.disk_dir) / folder;
    impl_->load_index();
    impl_->writer = std::thread([this] { impl_->write_loop(); });
  }
}

PrefixCache::~PrefixCache() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->jobs_cv.notify_all();
  if (impl_->writer.joinable()) impl_->writer.join();
}

bool PrefixCache::enabled() const { return impl_->opts.memory_bytes > 0 || !impl_->dir.empty(); }

std::optional<PrefixCache::Hit> PrefixCache::lookup(std::span<const int32_t> tokens) {
  std::lock_guard lock(impl_->mu);
  Impl& m = *impl_;
  ++m.st.lookups;
  const int64_t n_tokens = int64_t(tokens.size());
  // Entries on the path of `tokens`, shallow to deep.
  std::vector<Node*> path;
  Node* n = &m.root;
  size_t at = 0;
  while (at < tokens.size()) {
    auto it = n->children.find(tokens[at]);
    if (it == n->children.end()) break;
    Node* c = it->second.get();
    if (at + c->edge.size() > tokens.size() ||
        !std::equal(c->edge.begin(), c->edge.end(), tokens.begin() + ptrdiff_t(at)))
      break;
    at += c->edge.size();
    n = c;
    if (n->has_entry() && n->usable_at(n_tokens)) path.push_back(n);
  }
  for (auto it = path.rbegin(); it != path.rend(); ++it) {
    Node* e = *it;
    Hit hit;
    hit.length = e->depth;
    if (e->resident) {
      m.lru.splice(m.lru.begin(), m.lru, e->lru);
      hit.state = state_of(*e);
      if (e->depth == n_tokens) hit.logits = e->logits;
    } else {
      std::vector<float> logits;
      if (!m.load_from_disk(e, hit.state, logits)) {
        m.prune(e);
        continue;
      }
      if (m.opts.memory_bytes > 0) m.store(e, hit.state, logits.empty() ? nullptr : &logits);
      if (e->depth == n_tokens) hit.logits = std::move(logits);
    }
    ++m.st.hits;
    m.st.tokens_saved += hit.length;
    return hit;
  }
  return std::nullopt;
}

void PrefixCache::insert(std::span<const int32_t> tokens, const State& state,
                         const std::vector<float>* logits) {
  if (tokens.empty()) return;
  std::lock_guard lock(impl_->mu);
  Impl& m = *impl_;
  if (m.opts.memory_bytes <= 0 && m.dir.empty()) return;
  const int64_t need =
      int64_t(state.bytes() + (logits ? logits->size() * 4 : 0) + tokens.size() * 4 + 256);
  if (need > m.opts.memory_bytes && m.dir.empty()) return;  // would never fit
  Node* n = m.make_path(tokens);
  ++m.st.inserts;
  if (m.opts.memory_bytes <= 0 || need > m.opts.memory_bytes) {
    m.queue_write(n, state, logits ? *logits : std::vector<float>{});  // straight to disk
    return;
  }
  m.store(n, state, logits);
}

void PrefixCache::persist() {
  std::unique_lock lock(impl_->mu);
  Impl& m = *impl_;
  if (m.dir.empty()) return;
  for (Node* n : m.lru)
    if (!n->on_disk) m.queue_write(n, state_of(*n), n->logits);
  m.idle_cv.wait(lock, [&] { return m.jobs.empty() && !m.busy; });
}

PrefixCacheStats PrefixCache::stats() const {
  std::lock_guard lock(impl_->mu);
  return impl_->st;
}

}  // namespace rwkv7
