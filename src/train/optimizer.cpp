#include "train/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.hpp"
#include "core/function_ref.hpp"
#include "core/lane_sum.hpp"
#include "core/thread_pool.hpp"
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
  return is_weight_matrix(name, shape);
}

double AdamW::lr_scale(const std::string& name) {
  const std::string suffix = "att.w0";
  return name.size() >= suffix.size() &&
                 name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0
             ? 2.0
             : 1.0;
}

namespace {

constexpr int64_t kMinElementsPerPart = 1 << 15;

// fn(i0, i1) over [0, n): in parallel ranges on the pool when given and n is large.
void each_range(ThreadPool* pool, size_t n, FunctionRef<void(int64_t, int64_t)> fn) {
  if (pool && int64_t(n) >= 2 * kMinElementsPerPart) {
    pool->parallel_for(int64_t(n), kMinElementsPerPart, fn);
  } else if (n > 0) {
    fn(0, int64_t(n));
  }
}

}  // namespace

namespace {

struct AdamWCoefficients {
  float b1, b2, decay, step_size, inv_sqrt_bc2, eps, grad_scale;
};

// One tensor's update over [i0, i1), in fp32 as PyTorch's AdamW on fp32 parameters; with
// kCopy, each new value also rounded to bf16 into h (a kept copy). Written so the compiler
// vectorises it: distinct buffers (restrict), no captured references, and this layer is
// compiled with -fno-math-errno (a scalar sqrt would otherwise stay a call).
template <bool kCopy>
void adamw_range(float* __restrict p, const float* __restrict g, float* __restrict m,
                 float* __restrict v, uint16_t* __restrict h, int64_t i0, int64_t i1,
                 AdamWCoefficients k) {
  for (int64_t i = i0; i < i1; ++i) {
    const float gi = g[i] * k.grad_scale;
    const float mi = k.b1 * m[i] + (1 - k.b1) * gi;
    const float vi = k.b2 * v[i] + (1 - k.b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float pi = p[i] * k.decay - k.step_size * mi / (std::sqrt(vi) * k.inv_sqrt_bc2 + k.eps);
    p[i] = pi;
    if constexpr (kCopy) h[i] = f32_to_bf16(pi);
  }
}

double sum_of_squares(const float* __restrict x, int64_t n) {
  return lane_sum(n, [x](int64_t i) { return double(x[i]) * double(x[i]); });
}

}  // namespace

void AdamW::step(TensorMap& params, const TensorMap& grads, double lr, ThreadPool* pool,
                 double grad_scale, Bf16Weights* bf16_copies) {
  if (bf16_copies)  // checked before anything moves: a refused step changes nothing
    for (const auto& [name, copy] : *bf16_copies) {
      auto p = params.find(name);
      if (p != params.end() && copy.size() != p->second.data.size())
        throw Error("optimizer: the bf16 copy of '" + name + "' has " +
                    std::to_string(copy.size()) + " values, the parameter " +
                    std::to_string(p->second.data.size()));
    }
  ++t_;
  const double bc1 = 1 - std::pow(o_.beta1, double(t_)), bc2 = 1 - std::pow(o_.beta2, double(t_));
  for (auto& [name, p] : params) {
    auto g = grads.find(name);
    if (g == grads.end()) throw Error("optimizer: no gradient for '" + name + "'");
    FloatTensor& m = m_.at(name);
    FloatTensor& v = v_.at(name);
    const double plr = lr * lr_scale(name);
    const AdamWCoefficients k{float(o_.beta1),
                              float(o_.beta2),
                              float(decays(name, p.shape) ? 1 - plr * o_.weight_decay : 1.0),
                              float(plr / bc1),
                              float(1 / std::sqrt(bc2)),
                              float(o_.eps),
                              float(grad_scale)};
    float *pd = p.data.data(), *md = m.data.data(), *vd = v.data.data();
    const float* gd = g->second.data.data();
    uint16_t* hd = nullptr;  // the parameter's kept bf16 copy, if any
    if (bf16_copies)
      if (auto c = bf16_copies->find(name); c != bf16_copies->end()) hd = c->second.data();
    each_range(pool, p.data.size(), [&](int64_t i0, int64_t i1) {
      if (hd)
        adamw_range<true>(pd, gd, md, vd, hd, i0, i1, k);
      else
        adamw_range<false>(pd, gd, md, vd, nullptr, i0, i1, k);
    });
  }
}

double grad_norm(const TensorMap& grads, ThreadPool* pool) {
  const int parts = pool ? pool->size() : 1;
  std::vector<double> part_sq(size_t(parts), 0.0);
  for (const auto& [name, g] : grads) {
    const float* x = g.data.data();
    auto sum_squares = [&](int part, int64_t i0, int64_t i1) {
      part_sq[size_t(part)] += sum_of_squares(x + i0, i1 - i0);
    };
    if (pool && int64_t(g.data.size()) >= 2 * kMinElementsPerPart) {
      pool->parallel_parts(int64_t(g.data.size()), kMinElementsPerPart, sum_squares);
    } else {
      sum_squares(0, 0, int64_t(g.data.size()));
    }
  }
  double sq = 0;
  for (double s : part_sq) sq += s;
  return std::sqrt(sq);
}

double clip_scale(double norm, double max_norm) {
  return max_norm > 0 && norm > max_norm ? double(float(max_norm / (norm + 1e-6))) : 1.0;
}

double clip_grad_norm(TensorMap& grads, double max_norm, ThreadPool* pool) {
  const double norm = grad_norm(grads, pool);
  const double scale = clip_scale(norm, max_norm);
  if (scale != 1.0) {
    for (auto& [name, g] : grads) {
      float* x = g.data.data();
      each_range(pool, g.data.size(), [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) x[i] *= float(scale);
      });
    }
  }
  return norm;
}

}  // namespace rwkv7::train
