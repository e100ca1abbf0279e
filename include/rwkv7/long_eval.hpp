#pragma once
// Long-context evaluations: synthetic recall tasks (passkey retrieval, multi-query associative
// recall) made by one generator for training and test sets (different seeds), scored by
// teacher-forced exact match, and the mean loss per log-spaced position bucket.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rwkv7/evaluate.hpp"
#include "rwkv7/model.hpp"
#include "rwkv7/state_compress.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7 {

// One sequence of a recall task. Each group is one answer: the positions p whose next token
// tokens[p + 1] must be the arg-max of the logits at p (teacher-forced, which is the same as
// greedy decoding reproducing the answer). A group is correct when all its positions are.
struct RecallSample {
  std::vector<int32_t> tokens;
  std::vector<std::vector<int64_t>> groups;
  // The cell of the result table: passkey (length in tokens, depth 0..1 of the key);
  // MQAR (key-value pairs, sequence length).
  int64_t length = 0;
  double depth = 0;
  int64_t pairs = 0;
  // Tokens of context before the first question (passkey: the filler and the key; MQAR: the
  // key-value pairs); every answer position is at or after it. 0 = not known.
  int64_t context_end = 0;
};

struct PasskeyOptions {
  std::vector<int64_t> lengths = {1024};  // context tokens before the answer
  std::vector<double> depths = {0, 0.25, 0.5, 0.75, 1};
  int64_t per_cell = 4;
  uint64_t seed = 0;  // training and test sets: different seeds
};

// A 5-digit key in a sentence hidden at `depth` of filler text (a window of `filler` at a
// seeded offset, repeated when short), the question at the end, the answer " <key>" scored.
std::vector<RecallSample> make_passkey_samples(const Tokenizer& tok, std::string_view filler,
                                               const PasskeyOptions& opts);

struct MqarOptions {
  int64_t vocab = 256;  // keys from [1, V/2), values from [V/2, V); 0 fills the gaps
  std::vector<int64_t> pairs = {4, 16, 64};
  std::vector<int64_t> lengths = {256};
  int64_t per_cell = 16;
  uint64_t seed = 0;
};

// Zoology's multi-query associative recall: `pairs` key-value pairs at the start, then every
// key queried once (in random order, at random places among filler zeros) followed by its
// value, which is scored. Needs length >= 4·pairs and pairs <= the distinct keys.
std::vector<RecallSample> make_mqar_samples(const MqarOptions& opts);

// Per group of `s`: is every answer position's arg-max (first maximum) the next token?
// logits [tokens - 1, V]: row p holds the logits after reading tokens[0..p].
std::vector<bool> score_recall_groups(const RecallSample& s, std::span<const float> logits,
                                      int64_t V);

// The model's per-group results for every sample, reading each in windows of `window`
// positions (only the answer rows' logits are looked at). With `compress_at_context_end`, the
// state is compressed and decompressed once after the context (RecallSample::context_end),
// so the questions are answered from the compressed state (Error for a sample without one);
// method "reset" replaces the state by zeros there (the baseline of a forgotten context).
std::vector<std::vector<bool>> evaluate_recall(
    const Model& model, const std::vector<RecallSample>& samples, int64_t window = 256,
    const Progress& progress = {}, const CompressOptions* compress_at_context_end = nullptr);

// Accuracy by cell: rows × columns (passkey: length × depth; MQAR: pairs × length).
struct RecallTable {
  std::string row_name, col_name;
  std::vector<double> rows, cols;
  std::vector<int64_t> correct, total;  // [rows, cols]
  double accuracy(size_t r, size_t c) const;
  double overall() const;
};
enum class RecallTask { Passkey, Mqar };
RecallTable tabulate_recall(RecallTask task, const std::vector<RecallSample>& samples,
                            const std::vector<std::vector<bool>>& results);

// Samples as JSON lines ({"tokens", "groups", "length", "depth", "pairs"}) and back.
void write_recall_jsonl(const std::string& path, const std::vector<RecallSample>& samples);
std::vector<RecallSample> read_recall_jsonl(const std::string& path);

// Mean loss per position bucket [lo, hi) (positions of the predicted token, from 1), buckets
// doubling: [1,2), [2,4), [4,8), ... up to the longest document.
struct PositionBucket {
  int64_t lo = 0, hi = 0, count = 0;
  double mean_loss = 0;
};
std::vector<PositionBucket> bucket_losses(const std::vector<std::vector<double>>& per_document);

// -log p(tokens[i + 1] | tokens[0..i]) for every i, in windows of `window` positions.
std::vector<double> loss_per_position(const Model& model, std::span<const int32_t> tokens,
                                      int64_t window = 256);

// Heat map of a recall table (accuracy per cell), or a line of mean loss per bucket.
void write_recall_svg(const std::string& path, const std::string& title, const RecallTable& t);
void write_position_loss_svg(const std::string& path, const std::vector<PositionBucket>& b);

}  // namespace rwkv7
