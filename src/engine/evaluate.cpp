#include "rwkv7/evaluate.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "io/jsonl.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

// log softmax(logits)[target], in double.
double log_prob(const float* logits, int64_t V, int32_t target) {
  float mx = *std::max_element(logits, logits + V);
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(double(logits[i]) - mx);
  return double(logits[target]) - mx - std::log(sum);
}

bool is_argmax(const float* logits, int64_t V, int32_t target) {
  return std::max_element(logits, logits + V) - logits == target;  // first max, as torch
}

}  // namespace

LossResult evaluate_loss(const Model& model, std::span<const int32_t> tokens, int64_t window,
                         const Progress& progress) {
  if (tokens.size() < 2)
    throw Error("evaluation needs at least 2 tokens (got " + std::to_string(tokens.size()) + ")");
  const int64_t V = model.config().vocab_size;
  const int64_t n = int64_t(tokens.size()) - 1;  // inputs; each predicts the next token
  State st = model.new_state();
  double total = 0;
  std::vector<float> logits;
  for (int64_t p = 0; p < n; p += window) {
    const int64_t len = std::min(window, n - p);
    logits = model.forward(tokens.subspan(size_t(p), size_t(len)), st, Logits::All);
    for (int64_t i = 0; i < len; ++i)
      total -= log_prob(&logits[size_t(i * V)], V, tokens[size_t(p + i + 1)]);
    if (progress) progress(p + len, n);
  }
  LossResult r;
  r.predicted = n;
  r.loss = total / double(n);
  r.perplexity = std::exp(r.loss);
  return r;
}

LossResult evaluate_rows(const Model& model, std::span<const int32_t> tokens, int64_t row,
                         const State* start) {
  if (row < 1) throw Error("evaluation rows must be at least 1 position long");
  const int64_t rows = (int64_t(tokens.size()) - 1) / row;
  if (rows < 1)
    throw Error("evaluation needs at least one row of " + std::to_string(row + 1) +
                " tokens (got " + std::to_string(tokens.size()) + ")");
  if (start) model.check_state(*start);
  const int64_t V = model.config().vocab_size;
  double total = 0;
  std::vector<float> logits;
  State st;
  for (int64_t k = 0; k < rows; ++k) {
    st = start ? *start : model.new_state();
    logits = model.forward(tokens.subspan(size_t(k * row), size_t(row)), st, Logits::All);
    for (int64_t i = 0; i < row; ++i)
      total -= log_prob(&logits[size_t(i * V)], V, tokens[size_t(k * row + i + 1)]);
  }
  LossResult r;
  r.predicted = rows * row;
  r.loss = total / double(r.predicted);
  r.perplexity = std::exp(r.loss);
  return r;
}

std::vector<LambadaSample> read_lambada_jsonl(const std::string& path) {
  std::vector<LambadaSample> out;
  for_each_jsonl_text(path, [&](std::string&& text, int64_t lineno) {
    const size_t sp = text.rfind(' ');
    if (sp == std::string::npos) {
      throw Error(path + ":" + std::to_string(lineno) + ": passage has no space to split at");
    }
    out.push_back({text.substr(0, sp), text.substr(sp)});
  });
  if (out.empty()) throw Error(path + ": no passages");
  return out;
}

LambadaResult evaluate_lambada(const Model& model, const Tokenizer& tok,
                               const std::vector<LambadaSample>& samples, int64_t batch,
                               const Progress& progress) {
  const int64_t V = model.config().vocab_size;
  double sum_logp = 0;
  int64_t correct = 0;
  for (size_t s0 = 0; s0 < samples.size(); s0 += size_t(batch)) {
    const size_t s1 = std::min(samples.size(), s0 + size_t(batch));
    // Per sample: prefix = [0] + ctx[:-1] (no logits), then scored = ctx[-1] + target[:-1].
    std::vector<std::vector<int32_t>> prefix(s1 - s0), scored(s1 - s0), target(s1 - s0);
    std::vector<State> states(s1 - s0, model.new_state());
    std::vector<std::vector<float>> logits(s1 - s0);
    std::vector<SequenceRequest> first, second;
    for (size_t i = 0; i < s1 - s0; ++i) {
      std::vector<int32_t> src = {0};
      const auto ctx = tok.encode(samples[s0 + i].context);
      src.insert(src.end(), ctx.begin(), ctx.end());
      target[i] = tok.encode(samples[s0 + i].target);
      if (target[i].empty())
        throw Error("LAMBADA sample " + std::to_string(s0 + i) + ": empty target");
      prefix[i].assign(src.begin(), src.end() - 1);
      scored[i] = {src.back()};
      scored[i].insert(scored[i].end(), target[i].begin(), target[i].end() - 1);
      if (!prefix[i].empty()) first.push_back({prefix[i], &states[i], Logits::None, nullptr});
      second.push_back({scored[i], &states[i], Logits::All, &logits[i]});
    }
    model.forward(first);
    model.forward(second);
    for (size_t i = 0; i < s1 - s0; ++i) {
      bool all_right = true;
      for (size_t j = 0; j < target[i].size(); ++j) {
        const float* row = &logits[i][j * size_t(V)];
        sum_logp += log_prob(row, V, target[i][j]);
        all_right = all_right && is_argmax(row, V, target[i][j]);
      }
      correct += all_right;
    }
    if (progress) progress(int64_t(s1), int64_t(samples.size()));
  }
  LambadaResult r;
  r.samples = int64_t(samples.size());
  r.perplexity = std::exp(-sum_logp / double(r.samples));
  r.accuracy = double(correct) / double(r.samples);
  return r;
}

}  // namespace rwkv7
