#include "serve/step_cost.hpp"

#include <algorithm>
#include <cmath>

namespace rwkv7 {

void StepCostModel::observe(int64_t decoding, int64_t prompt, double seconds) {
  if (!(seconds > 0) || !std::isfinite(seconds) || decoding < 0 || prompt < 0) return;
  const double d = double(decoding), p = double(prompt);
  if (prompt == 0) {
    if (decoding == 0) return;
    ++seen0_;
    n0_ = n0_ * forget_ + 1;
    d_ = d_ * forget_ + d;
    dd_ = dd_ * forget_ + d * d;
    t_ = t_ * forget_ + seconds;
    dt_ = dt_ * forget_ + d * seconds;
    return;
  }
  if (decoding == 0) return;  // prefill-only steps: no stream to keep smooth, nothing to learn
  const std::optional<double> base = decode_only(decoding);
  if (!base) return;
  ++seen1_;
  pe_ = pe_ * forget_ + p * (seconds - *base);
  pp_ = pp_ * forget_ + p * p;
}

std::optional<double> StepCostModel::decode_only(int64_t decoding) const {
  if (seen0_ < kMinSteps) return std::nullopt;
  const double mean_d = d_ / n0_, mean_t = t_ / n0_;
  const double var_d = dd_ / n0_ - mean_d * mean_d;
  // With (nearly) one d seen, the mean is the prediction there and the slope is unknown:
  // use it only near that d.
  if (var_d < 0.25) {
    if (std::abs(double(decoding) - mean_d) > 0.5) return std::nullopt;
    return mean_t;
  }
  const double slope = (dt_ / n0_ - mean_d * mean_t) / var_d;
  const double t = mean_t + std::max(slope, 0.0) * (double(decoding) - mean_d);
  if (!(t > 0)) return std::nullopt;
  return t;
}

std::optional<double> StepCostModel::per_prompt() const {
  if (seen1_ < kMinSteps || !(pp_ > 0)) return std::nullopt;
  const double b = pe_ / pp_;
  if (!(b > 0)) return std::nullopt;
  return b;
}

std::optional<int64_t> StepCostModel::prompt_positions(int64_t decoding, double slowdown) const {
  const std::optional<double> base = decode_only(decoding), b = per_prompt();
  if (!base || !b || !(slowdown >= 1)) return std::nullopt;
  const double n = std::floor((slowdown - 1) * *base / *b);
  return int64_t(std::min(n, double(int64_t(1) << 40)));
}

double shared_step_target(double step_seconds, int64_t decoding, std::optional<double> alone,
                          int64_t reading) {
  if (!(step_seconds > 0) || decoding <= 0) return 0;
  // The streams' share of the prompts' wait: one stream's worth per prompt, at most all of it.
  const double shared = double(std::clamp<int64_t>(reading, 1, decoding)) / double(decoding);
  // Their time alone not known yet: as if it were nothing, the least this allows.
  const double own = alone.value_or(0.0);
  return own + std::max(0.0, step_seconds - own) * shared;
}

StepTimeController::StepTimeController(int64_t lo, int64_t hi)
    : lo_(lo), hi_(std::max(lo, hi)), share_(lo) {}

int64_t StepTimeController::share(double allowance_seconds) const {
  if (!(allowance_seconds > 0) || !(settled_allowance_ > 0) ||
      allowance_seconds >= settled_allowance_)
    return share_;
  const double scaled = double(share_) * allowance_seconds / settled_allowance_;
  return std::clamp(int64_t(std::lround(scaled)), lo_, hi_);
}

void StepTimeController::observe(int64_t prompt_positions, double seconds, double target_seconds,
                                 double allowance_seconds) {
  if (!(target_seconds > 0) || prompt_positions <= 0 || !(seconds > 0) || !std::isfinite(seconds))
    return;
  const double scale = std::clamp(std::sqrt(target_seconds / seconds), 0.5, 2.0);
  share_ = std::clamp(int64_t(std::lround(double(prompt_positions) * scale)), lo_, hi_);
  settled_allowance_ =
      allowance_seconds > 0 && std::isfinite(allowance_seconds) ? allowance_seconds : 0;
}

}  // namespace rwkv7
