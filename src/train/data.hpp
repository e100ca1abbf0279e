#pragma once
// Training data: documents (text files, folders of them, JSONL with a "text" field) tokenised
// and joined with token 0 between documents; a held-out tail for validation; batches chosen
// deterministically from (seed, step) so a resumed run reads exactly what it would have read.
#include <cstdint>
#include <string>
#include <vector>

#include "rwkv7/tokenizer.hpp"

namespace rwkv7::train {

struct TokenData {
  std::vector<int32_t> tokens;  // all documents, 0 between them
  int64_t documents = 0;
  std::string description;  // for messages: "3 files, 1.1 MB"
};

// Paths: files (.jsonl → one document per line's "text"; anything else → one document),
// folders (every regular file inside, recursively, in sorted order). With the World
// vocabulary, text must be valid UTF-8 (Error names the file and the byte offset).
TokenData load_token_data(const std::vector<std::string>& paths, const Tokenizer& tok);

struct Split {
  std::vector<int32_t> train, val;
};
// The last `val_fraction` of the stream is held out (none when 0).
Split split_tail(const std::vector<int32_t>& tokens, double val_fraction);

class Batcher {
 public:
  // Each row is ctx + 1 tokens (inputs are row[:-1], targets row[1:]). Error when the data is
  // shorter than one row.
  Batcher(const std::vector<int32_t>& tokens, int64_t batch, int64_t ctx, bool shuffle,
          uint64_t seed, const std::string& what = "training data");
  // No shuffle: row b of step s starts at (s·B + b)·T (wrapping at the end of the data).
  // Shuffle: a start drawn from (seed, s, b).
  std::vector<std::vector<int32_t>> rows(int64_t step) const;
  int64_t start(int64_t step, int64_t b) const;

 private:
  const std::vector<int32_t>& tokens_;
  int64_t batch_, ctx_;
  bool shuffle_;
  uint64_t seed_;
};

}  // namespace rwkv7::train
