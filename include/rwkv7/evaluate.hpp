#pragma once
// Evaluation: cross-entropy / perplexity of a token stream, and the LAMBADA protocol.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "rwkv7/model.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7 {

// progress(done, total) is called now and then.
using Progress = std::function<void(int64_t done, int64_t total)>;

struct LossResult {
  int64_t predicted = 0;  // tokens scored: n - 1
  double loss = 0;        // mean cross-entropy in nats
  double perplexity = 0;  // exp(loss)
};

// Mean cross-entropy of predicting tokens[1..n-1] from the tokens before them, in windows of
// `window` positions (memory stays constant for any length).
LossResult evaluate_loss(const Model& model, std::span<const int32_t> tokens, int64_t window = 256,
                         const Progress& progress = {});

// Mean cross-entropy over the rows training cuts (row k: tokens [k·row, k·row + row], predicting
// its last `row` tokens), every row from a copy of `start` (zeros when null), as a tuned start
// state is used; a tail shorter than a row is left out. Error when there is not one row.
LossResult evaluate_rows(const Model& model, std::span<const int32_t> tokens, int64_t row,
                         const State* start = nullptr);

struct LambadaSample {
  std::string context;  // the passage without its last word
  std::string target;   // " " + last word
};

// Splits each passage at its last space (the official protocol).
std::vector<LambadaSample> read_lambada_jsonl(const std::string& path);

struct LambadaResult {
  int64_t samples = 0;
  double perplexity = 0;  // exp(-mean over samples of log P(target | context))
  double accuracy = 0;    // fraction whose every target token is the arg-max
};

// Feeds [0] + encode(context), scores encode(target) (SPEC §8), `batch` samples at a time.
LambadaResult evaluate_lambada(const Model& model, const Tokenizer& tok,
                               const std::vector<LambadaSample>& samples, int64_t batch = 16,
                               const Progress& progress = {});

}  // namespace rwkv7
