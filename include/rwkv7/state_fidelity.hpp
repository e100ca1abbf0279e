#pragma once
// What a compressed state keeps, measured on the model's predictions (not on reconstruction
// error): read M tokens, compress + decompress the state, continue teacher-forced over the
// next T tokens from both states, and compare the next-token distributions.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rwkv7/evaluate.hpp"
#include "rwkv7/model.hpp"
#include "rwkv7/state_compress.hpp"

namespace rwkv7 {

struct FidelityScore {
  int64_t positions = 0;
  double top1_agreement = 0;  // fraction of positions whose arg-max is the same
  double kl = 0;              // mean KL(p_true || p_approx) in nats
  double loss_true = 0;       // mean cross-entropy of the targets, nats
  double loss_approx = 0;
  double loss_delta = 0;  // (loss_approx - loss_true) / loss_true
};

// true_logits and approx_logits [T, V] row-major; targets [T]: the token each row predicts.
// Error on mismatched sizes or a target outside [0, V).
FidelityScore score_fidelity(std::span<const float> true_logits,
                             std::span<const float> approx_logits, int64_t vocab,
                             std::span<const int32_t> targets);

struct FidelityOptions {
  std::vector<int64_t> prefix_tokens = {1000, 10000};  // M: tokens read before compressing
  int64_t continue_tokens = 256;                       // T: positions compared
  // 0: compress once, after the prefix. K > 0: the compared state lives compressed: it is
  // compressed and decompressed after every K tokens, prefix and continuation alike.
  int64_t recompress_every = 0;
  // Windows of the text: W prefixes whose starts are spread evenly over it; every score is the
  // mean over the W·T compared positions (the ratio, the mean over windows).
  int64_t windows = 1;
};

struct FidelityResult {
  int64_t prefix_tokens = 0;
  int64_t recompress_every = 0;
  int64_t windows = 1;
  std::string method, detail;
  double target_ratio = -1;  // CompressOptions::ratio (-1: the method's own)
  double ratio = 0;          // achieved (for recompression: the mean over compressions)
  FidelityScore score;
};

// Every configuration at every prefix length (method "reset" is the baseline: the continuation
// from a zero state, as if the prefix had not been read); `tokens` must hold max(M) + T + 1
// tokens.
// progress(done, total) counts configurations.
std::vector<FidelityResult> evaluate_state_fidelity(const Model& model,
                                                    std::span<const int32_t> tokens,
                                                    const std::vector<CompressOptions>& configs,
                                                    const FidelityOptions& opts,
                                                    const Progress& progress = {});

// Top-1 agreement (or, with log_kl, log10 of the mean KL) against ratio, a line per method,
// for the results of one prefix length (written atomically).
void write_fidelity_svg(const std::string& path, const std::vector<FidelityResult>& results,
                        const std::string& title, bool log_kl = false);

}  // namespace rwkv7
