#include "train/optimizer.hpp"

#include <algorithm>
#include <cmath>

#include "rwkv7/error.hpp"

namespace rwkv7::train {

double Schedule::lr_at(int64_t step) const {
  const double span = double(std::max<int64_t>(1, total_steps - 1 - warmup_steps));
  double progress = double(step - warmup_steps) / span;
  progress = std::clamp(progress, 0.0, 1.0);
  const double final_factor = lr_final / lr_init;
  const double mult =
      (0.5 + final_factor / 2) + (0.5 - final_factor / 2) * std::cos(M_PI * progress);
  double lr = lr_init * mult;
  if (step < warmup_steps) lr *= 0.01 + 0.99 * double(step) / double(warmup_steps);
  return lr;
}

AdamW::AdamW(const TensorMap& params, const AdamWOptions& opts) : o_(opts) {
  for (const auto& [name, p] : params) {
    m_.emplace(name, FloatTensor(p.shape));
    v_.emplace(name, FloatTensor(p.shape));
  }
}

bool AdamW::decays(const std::string& name, const Shape& shape) {
  const std::string suffix = ".weight";
  return shape.size() == 2 && name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

double AdamW::lr_scale(const std::string& name) {
  const std::string suffix = "att.w0";
  return name.size() >= suffix.size() &&
                 name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0
             ? 2.0
             : 1.0;
}

void AdamW::step(TensorMap& params, const TensorMap& grads, double lr) {
  ++t_;
  const double bc1 = 1 - std::pow(o_.beta1, double(t_)), bc2 = 1 - std::pow(o_.beta2, double(t_));
  for (auto& [name, p] : params) {
    auto g = grads.find(name);
    if (g == grads.end()) throw Error("optimizer: no gradient for '" + name + "'");
    FloatTensor& m = m_.at(name);
    FloatTensor& v = v_.at(name);
    const double plr = lr * lr_scale(name);
    const double decay = decays(name, p.shape) ? 1 - plr * o_.weight_decay : 1.0;
    const double step_size = plr / bc1;
    const double sqrt_bc2 = std::sqrt(bc2);
    const float b1 = float(o_.beta1), b2 = float(o_.beta2);
    for (size_t i = 0; i < p.data.size(); ++i) {
      const float gi = g->second.data[i];
      m.data[i] = b1 * m.data[i] + (1 - b1) * gi;
      v.data[i] = b2 * v.data[i] + (1 - b2) * gi * gi;
      const double denom = std::sqrt(double(v.data[i])) / sqrt_bc2 + o_.eps;
      p.data[i] = float(double(p.data[i]) * decay - step_size * double(m.data[i]) / denom);
    }
  }
}

double clip_grad_norm(TensorMap& grads, double max_norm) {
  double sq = 0;
  for (const auto& [name, g] : grads)
    for (float x : g.data) sq += double(x) * x;
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = float(max_norm / (norm + 1e-6));
    for (auto& [name, g] : grads)
      for (float& x : g.data) x *= scale;
  }
  return norm;
}

}  // namespace rwkv7::train
