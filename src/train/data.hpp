#pragma once
// Training data: documents (text files, folders of them, JSONL with a "text" field) tokenised
// and joined with token 0 between documents, or a binidx data set read in place; a held-out
// tail for validation; batches chosen deterministically from (seed, step) so a resumed run
// reads exactly what it would have read.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rwkv7/tokenizer.hpp"

namespace rwkv7 {
struct BinidxData;
}

namespace rwkv7::train {

// A stretch of tokens: held in memory (tokenised text) or read where they lie in a mapped
// binidx .bin (any size). Copies share the tokens.
class TokenStream {
 public:
  TokenStream() = default;
  TokenStream(std::vector<int32_t> tokens);  // NOLINT: a token vector is a stream
  explicit TokenStream(const BinidxData& mapped);

  int64_t size() const { return count_; }
  int32_t operator[](int64_t i) const;
  // Tokens [from, from + n) into out.
  void copy(int64_t from, int64_t n, int32_t* out) const;
  std::vector<int32_t> to_vector() const;
  TokenStream slice(int64_t from, int64_t n) const;
  // The largest token (Error naming `what` at a negative one): a pass over the data.
  int64_t max_token(const std::string& what) const;

 private:
  std::shared_ptr<const std::vector<int32_t>> owned_;
  std::shared_ptr<const BinidxData> mapped_;
  int64_t offset_ = 0, count_ = 0;
};

struct TokenData {
  TokenStream tokens;  // all documents, 0 between them (binidx: the .bin as it is)
  int64_t documents = 0;
  std::string description;  // for messages: "3 files, 1.1 MB"
};

// Paths: files (.jsonl → one document per line's "text"; anything else → one document),
// folders (every regular file inside, recursively, in sorted order). With the World
// vocabulary, text must be valid UTF-8 (Error names the file and the byte offset).
// A binidx data set (PREFIX.bin + PREFIX.idx) is given as PREFIX.bin, PREFIX.idx or PREFIX
// (when no file PREFIX exists); it must be the only path, and its tokens are used as they are
// (RWKV-LM's make_data put a 0 after each document).
TokenData load_token_data(const std::vector<std::string>& paths, const Tokenizer& tok);

// The binidx prefix a --data path names ("x.bin", "x.idx", or "x" with x.bin and x.idx
// beside it and no file "x"), or "" when it names none.
std::string binidx_prefix_of(const std::string& path);

struct Split {
  TokenStream train, val;
};
// The last `val_fraction` of the stream is held out (none when 0).
Split split_tail(const TokenStream& tokens, double val_fraction);

class Batcher {
 public:
  // Each row is ctx + 1 tokens (inputs are row[:-1], targets row[1:]). Error when the data is
  // shorter than one row. `aligned`: rows start at multiples of ctx only (the stream cut into
  // consecutive windows of the current length; the length curriculum uses it).
  Batcher(const TokenStream& tokens, int64_t batch, int64_t ctx, bool shuffle, uint64_t seed,
          const std::string& what = "training data", bool aligned = false);
  // No shuffle: row b of step s starts at (s·B + b)·T (wrapping at the end of the data).
  // Shuffle: a start drawn from (seed, s, b).
  std::vector<std::vector<int32_t>> rows(int64_t step) const;
  int64_t start(int64_t step, int64_t b) const;

 private:
  TokenStream tokens_;
  int64_t batch_, ctx_;
  bool shuffle_;
  uint64_t seed_;
  bool aligned_;
};

// Length curriculum (--ctx-schedule "256:0,1024:2000"): the context from each step on.
struct CtxStage {
  int64_t ctx = 0, from_step = 0;
};
// Error naming the flag unless every item is CTX:STEP with CTX >= 1, the first STEP 0 and the
// steps increasing.
std::vector<CtxStage> parse_ctx_schedule(const std::string& text);
// Index of the stage optimiser step `step` is in.
size_t stage_at(const std::vector<CtxStage>& stages, int64_t step);
// Rows per micro-batch at a stage's context that keep base_batch · base_ctx tokens per step
// (at least 1).
int64_t batch_for_ctx(int64_t base_batch, int64_t base_ctx, int64_t ctx);

// --carry-state: stream r (row b of micro-batch a is stream a·B + b) reads its own stretch of
// the data continuously: stream r starts at r·(N / streams) and its step s row is the ctx + 1
// tokens from start + s·ctx (wrapping at the end of the data), so a row starts where the same
// row of the previous step ended.
class StreamBatcher {
 public:
  StreamBatcher(const TokenStream& tokens, int64_t streams, int64_t ctx,
                const std::string& what = "training data");
  int64_t start(int64_t step, int64_t stream) const;
  std::vector<std::vector<int32_t>> rows(int64_t step, int64_t first_stream, int64_t count) const;

 private:
  TokenStream tokens_;
  int64_t streams_, ctx_;
};

// --carry-state --replay P: the streams of StreamBatcher with a memory. After each step the
// point where every stream ended is remembered (a ring of `capacity` points; the caller keeps
// the state of each in the same slot); at the next step, with probability P (drawn from
// (seed, step, stream)), a stream goes back to a remembered point and continues from there
// (from that point's state), so long-range memories are revisited.
class ReplayStreams {
 public:
  ReplayStreams(const TokenStream& tokens, int64_t streams, int64_t ctx, double p, uint64_t seed,
                int64_t capacity = 64);
  // Decides step `step`: per stream, -1 (continue) or the slot it goes back to (its cursor
  // moves there).
  std::vector<int64_t> plan(int64_t step);
  std::vector<int32_t> row(int64_t stream) const;  // ctx + 1 tokens from the stream's cursor
  // After the step: the stream's cursor moves on by ctx; returns the slot that remembers the
  // new point (the caller stores the stream's state there).
  int64_t advance(int64_t stream);
  int64_t cursor(int64_t stream) const { return cursor_[size_t(stream)]; }
  int64_t remembered(int64_t slot) const { return slots_[size_t(slot)]; }
  int64_t capacity() const { return capacity_; }

 private:
  TokenStream tokens_;
  int64_t ctx_;
  double p_;
  uint64_t seed_;
  int64_t capacity_, filled_ = 0, next_slot_ = 0;
  std::vector<int64_t> cursor_, slots_;
};

}  // namespace rwkv7::train
