// Baselines: naive, seasonal naive, DLinear (forward and exact backward).
#include "train/ts_baselines.hpp"

#include <algorithm>

#include "rwkv7/error.hpp"
#include "train/ts_net.hpp"

namespace rwkv7::ts {

void naive_forecast(std::span<const float> window, std::span<float> out) {
  std::fill(out.begin(), out.end(), window.back());
}

void seasonal_naive_forecast(std::span<const float> window, int64_t m, std::span<float> out) {
  const int64_t L = int64_t(window.size());
  if (m < 1 || m > L)
    throw Error("seasonal naive: season " + std::to_string(m) + " must be in [1, lookback " +
                std::to_string(L) + "]");
  for (int64_t h = 0; h < int64_t(out.size()); ++h)
    out[size_t(h)] = window[size_t(L + h - m * (h / m + 1))];
}

void moving_average(std::span<const float> window, int64_t kernel, std::span<float> trend) {
  if (kernel < 1 || kernel % 2 == 0)
    throw Error("DLinear: the moving-average kernel must be odd and positive, not " +
                std::to_string(kernel));
  const int64_t L = int64_t(window.size()), half = kernel / 2;
  for (int64_t i = 0; i < L; ++i) {
    double sum = 0;
    for (int64_t j = i - half; j <= i + half; ++j)
      sum += window[size_t(std::clamp<int64_t>(j, 0, L - 1))];
    trend[size_t(i)] = float(sum / double(kernel));
  }
}

TensorMap dlinear_init(int64_t L, int64_t H) {
  TensorMap p;
  for (const char* part : {"seasonal", "trend"}) {
    // As DLinear: every weight 1/L (each output starts as the window's mean).
    FloatTensor w({H, L});
    std::fill(w.data.begin(), w.data.end(), float(1.0 / double(L)));
    p[std::string("dlinear.") + part + ".weight"] = std::move(w);
    p[std::string("dlinear.") + part + ".bias"] = FloatTensor({H});
  }
  return p;
}

double dlinear_run(const TensorMap& params, int64_t kernel, std::span<const float> windows,
                   int64_t B, const Backend& be, std::vector<float>& pred,
                   std::span<const float> targets, TensorMap* grads) {
  const FloatTensor& ws = params.at("dlinear.seasonal.weight");
  const int64_t H = ws.shape[0], L = ws.shape[1];
  if (windows.size() != size_t(B * L)) throw Error("DLinear: windows must be [B, L]");
  std::vector<float> trend(size_t(B * L)), seasonal(size_t(B * L)), part(size_t(B * H));
  for (int64_t b = 0; b < B; ++b) {
    const size_t o = size_t(b * L);
    moving_average(windows.subspan(o, size_t(L)), kernel, std::span(trend).subspan(o, size_t(L)));
    for (int64_t i = 0; i < L; ++i)
      seasonal[o + size_t(i)] = windows[o + size_t(i)] - trend[o + size_t(i)];
  }
  pred.resize(size_t(B * H));
  linear_forward(be, seasonal.data(), ws.data.data(),
                 params.at("dlinear.seasonal.bias").data.data(), B, L, H, pred.data());
  linear_forward(be, trend.data(), params.at("dlinear.trend.weight").data.data(),
                 params.at("dlinear.trend.bias").data.data(), B, L, H, part.data());
  for (size_t i = 0; i < pred.size(); ++i) pred[i] += part[i];
  if (targets.empty()) return 0;
  if (targets.size() != pred.size() || !grads) throw Error("DLinear: targets must be [B, H]");
  double loss = 0;
  std::vector<float> dy(pred.size());
  for (size_t i = 0; i < pred.size(); ++i) {
    const double e = double(pred[i]) - targets[i];
    loss += e * e;
    dy[i] = float(2 * e / double(pred.size()));
  }
  linear_backward(be, seasonal.data(), ws.data.data(), dy.data(), B, L, H, nullptr,
                  grads->at("dlinear.seasonal.weight").data.data(),
                  grads->at("dlinear.seasonal.bias").data.data());
  linear_backward(be, trend.data(), params.at("dlinear.trend.weight").data.data(), dy.data(), B, L,
                  H, nullptr, grads->at("dlinear.trend.weight").data.data(),
                  grads->at("dlinear.trend.bias").data.data());
  return loss / double(pred.size());
}

}  // namespace rwkv7::ts
