#pragma once
// Fitting a learned state projection (rwkv7/state_projection.hpp) to a model: the projection
// that keeps the model's predictions, not the state's numbers. States are sampled by reading
// random stretches of a text; the teacher is the model's next-token distribution over the
// following tokens from the true state; the loss is the mean KL(teacher ‖ model from the
// projected state), minimised by Adam over the encoders and decoders, its gradient from the
// exact backward pass w.r.t. the initial state (the weights frozen). The start is the principal
// subspace of the sampled states.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "rwkv7/state_projection.hpp"

namespace rwkv7 {

struct ProjectionFitOptions {
  int64_t rank = 8;
  bool key_side = false;
  int64_t samples = 128;                        // sampled states (the training set)
  int64_t min_prefix = 256, max_prefix = 4096;  // tokens read before each sampled state
  int64_t continue_tokens = 64;                 // teacher positions after each state
  int64_t steps = 200;                          // Adam steps (0 = the principal subspace only)
  int64_t batch = 8;                            // states per step
  double lr = 2e-3;
  uint64_t seed = 1;
  int threads = 0;  // 0 = all cores
};

struct ProjectionFitReport {
  double kl_start = 0;          // mean KL over all samples with the principal subspace
  double kl_end = 0;            // the same after the steps
  std::vector<double> step_kl;  // each step's batch mean KL (before its update)
};

// `tokens`: the text (ids < V) to sample from; it needs max_prefix + continue_tokens + 1
// tokens at least. progress(done, total) counts samples read, then steps.
StateProjection fit_state_projection(const std::string& model_path, std::span<const int32_t> tokens,
                                     const ProjectionFitOptions& opts,
                                     ProjectionFitReport* report = nullptr,
                                     const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace rwkv7
