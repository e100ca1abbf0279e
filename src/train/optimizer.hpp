#pragma once
// The official RWKV-7 optimiser (SPEC §5): AdamW with bias correction, β1 0.9, β2 0.99,
// eps 1e-18; weight decay only on 2-D `*.weight` matrices; att.w0 at twice the learning rate.
// Learning rate: linear warm-up from 1% then cosine decay to lr_final (RWKV-LM trainer).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "model/backward.hpp"

namespace rwkv7 {
class ThreadPool;
}

namespace rwkv7::train {

struct Schedule {
  double lr_init = 6e-4, lr_final = 6e-5;
  int64_t warmup_steps = 10, total_steps = 1000;

  // lr at 0-based step s: cosine from lr_init (at the end of warm-up) to lr_final (at the
  // last step); during warm-up multiplied by 0.01 + 0.99·s/warmup.
  double lr_at(int64_t step) const;
};

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.99, eps = 1e-18, weight_decay = 0.001;
};

class AdamW {
 public:
  AdamW(const TensorMap& params, const AdamWOptions& opts);

  // p ← p·(1 - lr·wd) (decayed groups), then Adam with bias correction at step t (1-based).
  // Element ranges of each tensor in parallel on `pool` when given (same result: elementwise).
  // The gradients are read multiplied by grad_scale (gradient clipping without a pass of its
  // own over them: clip_scale). `bf16_copies` (TrainParams::bf16_weights), when given: each
  // parameter with a copy there gets it rewritten from its new values in the same pass.
  void step(TensorMap& params, const TensorMap& grads, double lr, ThreadPool* pool = nullptr,
            double grad_scale = 1.0, Bf16Weights* bf16_copies = nullptr);

  int64_t steps_taken() const { return t_; }
  // First and second moments by parameter name (for checkpoints).
  TensorMap& first_moments() { return m_; }
  TensorMap& second_moments() { return v_; }
  void set_steps_taken(int64_t t) { t_ = t; }

  static bool decays(const std::string& name, const Shape& shape);  // 2-D *.weight
  static double lr_scale(const std::string& name);                  // 2 for att.w0

 private:
  AdamWOptions o_;
  TensorMap m_, v_;
  int64_t t_ = 0;
};

// Global L2 norm of all gradients; if above max_norm (> 0), scales them to max_norm.
// Returns the norm before clipping.
// With a pool: partial sums per part (the norm's rounding depends on the pool's size only).
double clip_grad_norm(TensorMap& grads, double max_norm, ThreadPool* pool = nullptr);
// The global L2 norm alone, and the factor clip_grad_norm would scale by (1 when max_norm is 0
// or not exceeded).
double grad_norm(const TensorMap& grads, ThreadPool* pool = nullptr);
double clip_scale(double norm, double max_norm);

}  // namespace rwkv7::train
