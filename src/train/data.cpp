#include "train/data.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "io/binidx.hpp"
#include "io/jsonl.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/train.hpp"

namespace rwkv7::train {
namespace {

namespace fs = std::filesystem;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Offset of the first byte that breaks UTF-8, or npos.
size_t invalid_utf8_at(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = uint8_t(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return i;
    for (size_t k = 1; k < len; ++k)
      if ((uint8_t(s[i + k]) & 0xc0) != 0x80) return i;
    i += len;
  }
  return std::string::npos;
}

void add_document(std::vector<int32_t>& tokens, TokenData& d, const std::string& text,
                  const Tokenizer& tok, const std::string& where) {
  if (!tok.is_bytes()) {
    const size_t bad = invalid_utf8_at(text);
    if (bad != std::string::npos) {
      throw Error(where + ": not valid UTF-8 at byte " + std::to_string(bad) +
                  " (the World vocabulary needs text; use a byte-level model for binary data)");
    }
  }
  if (text.empty()) return;
  if (d.documents > 0) tokens.push_back(0);  // document separator
  auto ids = tok.encode(text);
  tokens.insert(tokens.end(), ids.begin(), ids.end());
  ++d.documents;
}

void add_file(std::vector<int32_t>& tokens, TokenData& d, const std::string& path,
              const Tokenizer& tok) {
  if (fs::path(path).extension() == ".jsonl") {
    for_each_jsonl_text(path, [&](std::string&& text, int64_t line) {
      add_document(tokens, d, text, tok, path + ":" + std::to_string(line));
    });
  } else {
    add_document(tokens, d, read_all(path), tok, path);
  }
}

TokenData load_binidx(const std::string& prefix) {
  const BinidxData b = open_binidx(prefix);
  if (b.tokens == 0) throw Error(binidx_bin_path(prefix) + ": binidx data set has no tokens");
  TokenData d;
  d.tokens = TokenStream(b);
  d.documents = b.documents;
  d.description = "binidx " + prefix + " (" + std::to_string(b.sequences) + " sequence(s), " +
                  std::to_string(b.documents) + " document(s), " + std::to_string(b.tokens) +
                  " tokens of " + std::to_string(binidx_type_bytes(b.type)) + " byte(s))";
  return d;
}

uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

TokenStream::TokenStream(std::vector<int32_t> tokens)
    : owned_(std::make_shared<const std::vector<int32_t>>(std::move(tokens))),
      count_(int64_t(owned_->size())) {}

TokenStream::TokenStream(const BinidxData& mapped)
    : mapped_(std::make_shared<const BinidxData>(mapped)), count_(mapped.tokens) {}

int32_t TokenStream::operator[](int64_t i) const {
  // Values outside int32 cannot reach training: max_token() is checked against the
  // vocabulary before any batch is made.
  return owned_ ? (*owned_)[size_t(offset_ + i)] : int32_t(mapped_->at(offset_ + i));
}

void TokenStream::copy(int64_t from, int64_t n, int32_t* out) const {
  if (owned_) {
    std::copy_n(owned_->data() + offset_ + from, n, out);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = int32_t(mapped_->at(offset_ + from + i));
}

std::vector<int32_t> TokenStream::to_vector() const {
  std::vector<int32_t> v(static_cast<size_t>(count_));
  copy(0, count_, v.data());
  return v;
}

TokenStream TokenStream::slice(int64_t from, int64_t n) const {
  TokenStream s = *this;
  s.offset_ = offset_ + from;
  s.count_ = n;
  return s;
}

int64_t TokenStream::max_token(const std::string& what) const {
  int64_t hi = -1;
  for (int64_t i = 0; i < count_; ++i) {
    const int64_t t = owned_ ? (*owned_)[size_t(offset_ + i)] : mapped_->at(offset_ + i);
    if (t < 0) throw Error(what + ": token " + std::to_string(t) + " at " + std::to_string(i));
    hi = std::max(hi, t);
  }
  return hi;
}

BinidxSummary make_binidx(const std::string& jsonl_path, const std::string& prefix,
                          const Tokenizer& tok) {
  std::string base = prefix;
  if (const std::string ext = fs::path(base).extension().string(); ext == ".bin" || ext == ".idx")
    base.resize(base.size() - ext.size());
  if (base.empty()) throw Error("binidx: empty output prefix");
  const BinidxType type = tok.vocab_size() <= 65536 ? BinidxType::U16 : BinidxType::I32;
  BinidxSummary sum;
  std::vector<int32_t> ids;
  const BinidxWriteSummary w = write_binidx(base, type, [&](const BinidxSequenceSink& add) {
    for_each_jsonl_text(jsonl_path, [&](std::string&& text, int64_t line) {
      const std::string where = jsonl_path + ":" + std::to_string(line);
      if (!tok.is_bytes() && invalid_utf8_at(text) != std::string::npos)
        throw Error(where + ": not valid UTF-8 at byte " + std::to_string(invalid_utf8_at(text)));
      if (text.empty()) return;
      ids = tok.encode(text);
      ids.push_back(0);  // end of document, as make_data writes it
      add(ids);
      ++sum.documents;
    });
  });
  sum.tokens = w.tokens;
  sum.bin_path = binidx_bin_path(base);
  sum.idx_path = binidx_idx_path(base);
  return sum;
}

std::string binidx_prefix_of(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (p.extension() == ".bin" || p.extension() == ".idx") {
    const std::string prefix = (p.parent_path() / p.stem()).string();
    return prefix;
  }
  if (!fs::exists(p, ec) && fs::is_regular_file(binidx_bin_path(path), ec) &&
      fs::is_regular_file(binidx_idx_path(path), ec))
    return path;
  return "";
}

TokenData load_token_data(const std::vector<std::string>& paths, const Tokenizer& tok) {
  if (paths.empty()) throw Error("no training data given");
  for (const std::string& p : paths) {
    if (binidx_prefix_of(p).empty()) continue;
    if (paths.size() > 1)
      throw Error(p + ": a binidx data set must be the only --data (got " +
                  std::to_string(paths.size()) + " paths)");
    return load_binidx(binidx_prefix_of(p));
  }
  TokenData d;
  std::vector<int32_t> tokens;
  int64_t files = 0, bytes = 0;
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> inside;
      try {
        for (const auto& e : fs::recursive_directory_iterator(p))
          if (e.is_regular_file()) inside.push_back(e.path().string());
      } catch (const fs::filesystem_error& e) {  // an unreadable subfolder, a vanished file
        throw Error(p + ": cannot list the folder (" + e.code().message() + ": " +
                    e.path1().string() + ")");
      }
      std::sort(inside.begin(), inside.end());
      if (inside.empty()) throw Error(p + ": folder has no files");
      for (const auto& f : inside) {
        add_file(tokens, d, f, tok);
        ++files;
        bytes += int64_t(fs::file_size(f, ec));
      }
    } else if (fs::is_regular_file(p, ec)) {
      add_file(tokens, d, p, tok);
      ++files;
      bytes += int64_t(fs::file_size(p, ec));
    } else {
      throw Error(p + ": no such file or folder");
    }
  }
  if (tokens.empty()) throw Error("training data is empty (" + std::to_string(files) + " files)");
  d.description = std::to_string(files) + " file(s), " + std::to_string(d.documents) +
                  " document(s), " + std::to_string(bytes) + " bytes, " +
                  std::to_string(tokens.size()) + " tokens";
  d.tokens = TokenStream(std::move(tokens));
  return d;
}

Split split_tail(const TokenStream& tokens, double val_fraction) {
  if (val_fraction < 0 || val_fraction >= 1) {
    throw Error("validation fraction must be in [0, 1), got " + std::to_string(val_fraction));
  }
  const int64_t n_val = int64_t(double(tokens.size()) * val_fraction);
  const int64_t n_train = tokens.size() - n_val;
  return Split{tokens.slice(0, n_train), tokens.slice(n_train, n_val)};
}

Batcher::Batcher(const TokenStream& tokens, int64_t batch, int64_t ctx, bool shuffle, uint64_t seed,
                 const std::string& what, bool aligned)
    : tokens_(tokens), batch_(batch), ctx_(ctx), shuffle_(shuffle), seed_(seed), aligned_(aligned) {
  if (batch < 1 || ctx < 1) throw Error("batch and context must be at least 1");
  if (int64_t(tokens.size()) < ctx + 1) {
    throw Error(what + " has " + std::to_string(tokens.size()) + " tokens, fewer than one row of " +
                "context " + std::to_string(ctx) + " + 1; use a smaller --ctx or more data");
  }
}

int64_t Batcher::start(int64_t step, int64_t b) const {
  const int64_t windows = int64_t(tokens_.size()) - ctx_;  // valid starts: [0, windows)
  if (aligned_) {  // window w covers [w·ctx, w·ctx + ctx]: its start w·ctx must be < windows
    const int64_t count = (windows - 1) / ctx_ + 1;
    if (!shuffle_) return ((step * batch_ + b) % count) * ctx_;
    const uint64_t h = mix64(seed_ ^ mix64(uint64_t(step) * 0x100000001b3ull + uint64_t(b)));
    return int64_t(h % uint64_t(count)) * ctx_;
  }
  if (!shuffle_) return ((step * batch_ + b) * ctx_) % windows;
  const uint64_t h = mix64(seed_ ^ mix64(uint64_t(step) * 0x100000001b3ull + uint64_t(b)));
  return int64_t(h % uint64_t(windows));
}

std::vector<std::vector<int32_t>> Batcher::rows(int64_t step) const {
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(batch_));
  for (int64_t b = 0; b < batch_; ++b) {
    const int64_t p = start(step, b);
    out[size_t(b)].resize(size_t(ctx_ + 1));
    tokens_.copy(p, ctx_ + 1, out[size_t(b)].data());
  }
  return out;
}

std::vector<CtxStage> parse_ctx_schedule(const std::string& text) {
  std::vector<CtxStage> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t end = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, end - pos);
    const size_t colon = item.find(':');
    CtxStage st;
    try {
      if (colon == std::string::npos) throw std::invalid_argument(item);
      size_t u1 = 0, u2 = 0;
      st.ctx = std::stoll(item.substr(0, colon), &u1);
      st.from_step = std::stoll(item.substr(colon + 1), &u2);
      if (u1 != colon || u2 != item.size() - colon - 1) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw Error("--ctx-schedule: '" + item + "' is not CTX:STEP (e.g. 256:0,1024:2000)");
    }
    if (st.ctx < 1) throw Error("--ctx-schedule: context " + std::to_string(st.ctx) + " < 1");
    if (out.empty() && st.from_step != 0)
      throw Error("--ctx-schedule: the first stage must start at step 0 (got " + item + ")");
    if (!out.empty() && st.from_step <= out.back().from_step)
      throw Error("--ctx-schedule: steps must increase ('" + item + "')");
    out.push_back(st);
    pos = end + 1;
  }
  return out;
}

size_t stage_at(const std::vector<CtxStage>& stages, int64_t step) {
  size_t k = 0;
  while (k + 1 < stages.size() && stages[k + 1].from_step <= step) ++k;
  return k;
}

int64_t batch_for_ctx(int64_t base_batch, int64_t base_ctx, int64_t ctx) {
  return std::max<int64_t>(1, base_batch * base_ctx / ctx);
}

StreamBatcher::StreamBatcher(const TokenStream& tokens, int64_t streams, int64_t ctx,
                             const std::string& what)
    : tokens_(tokens), streams_(streams), ctx_(ctx) {
  if (streams < 1 || ctx < 1) throw Error("streams and context must be at least 1");
  if (int64_t(tokens.size()) < ctx + 1) {
    throw Error(what + " has " + std::to_string(tokens.size()) + " tokens, fewer than one row of " +
                "context " + std::to_string(ctx) + " + 1; use a smaller --ctx or more data");
  }
}

int64_t StreamBatcher::start(int64_t step, int64_t stream) const {
  const int64_t n = int64_t(tokens_.size());
  return (stream * (n / streams_) + step * ctx_) % n;
}

std::vector<std::vector<int32_t>> StreamBatcher::rows(int64_t step, int64_t first_stream,
                                                      int64_t count) const {
  const int64_t n = tokens_.size();
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t p = start(step, first_stream + i);
    for (int64_t j = 0; j <= ctx_; ++j) out[size_t(i)].push_back(tokens_[(p + j) % n]);
  }
  return out;
}

ReplayStreams::ReplayStreams(const TokenStream& tokens, int64_t streams, int64_t ctx, double p,
                             uint64_t seed, int64_t capacity)
    : tokens_(tokens), ctx_(ctx), p_(p), seed_(seed), capacity_(capacity) {
  if (!(p >= 0 && p <= 1)) throw Error("--replay: probability must be in [0, 1]");
  if (capacity < 1) throw Error("replay: capacity must be at least 1");
  const StreamBatcher starts(tokens, streams, ctx);  // validates and gives the first cursors
  for (int64_t r = 0; r < streams; ++r) cursor_.push_back(starts.start(0, r));
  slots_.assign(size_t(capacity), 0);
}

std::vector<int64_t> ReplayStreams::plan(int64_t step) {
  std::vector<int64_t> out(cursor_.size(), -1);
  for (size_t r = 0; r < cursor_.size(); ++r) {
    if (filled_ == 0 || p_ == 0) continue;
    const uint64_t h = mix64(seed_ ^ mix64(uint64_t(step) * 0x9e3779b97f4a7c15ull + r + 1));
    const double u = double(h >> 11) * 0x1.0p-53;
    if (u >= p_) continue;
    const int64_t slot = int64_t(mix64(h) % uint64_t(filled_));
    out[r] = slot;
    cursor_[r] = slots_[size_t(slot)];
  }
  return out;
}

std::vector<int32_t> ReplayStreams::row(int64_t stream) const {
  const int64_t n = tokens_.size(), p = cursor_[size_t(stream)];
  std::vector<int32_t> out;
  for (int64_t j = 0; j <= ctx_; ++j) out.push_back(tokens_[(p + j) % n]);
  return out;
}

int64_t ReplayStreams::advance(int64_t stream) {
  int64_t& c = cursor_[size_t(stream)];
  c = (c + ctx_) % tokens_.size();
  const int64_t slot = next_slot_;
  slots_[size_t(slot)] = c;
  next_slot_ = (next_slot_ + 1) % capacity_;
  filled_ = std::min(filled_ + 1, capacity_);
  return slot;
}

}  // namespace rwkv7::train
