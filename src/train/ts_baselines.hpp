#pragma once
// Baselines of the time-series harness, on the same windows as the RWKV-7 forecaster:
// naive (last value), seasonal naive (the value one season back), DLinear (moving-average
// trend + remainder, one linear layer each, Zeng et al. 2023; trained by the same AdamW).
#include <cstdint>
#include <span>
#include <vector>

#include "backends/backend.hpp"
#include "core/tensor.hpp"

namespace rwkv7::ts {

// out [H]: every step the window's last value.
void naive_forecast(std::span<const float> window, std::span<float> out);
// out[h] = window[L + h - m·(⌊h/m⌋ + 1)]: the latest value at the same phase of the season m (Error
// unless 1 <= m <= L).
void seasonal_naive_forecast(std::span<const float> window, int64_t season, std::span<float> out);

// trend [L] = mean of the `kernel` values centred on each point, the window's ends repeated
// (kernel odd); the remainder is window - trend.
void moving_average(std::span<const float> window, int64_t kernel, std::span<float> trend);

// DLinear's parameters: dlinear.{seasonal,trend}.{weight [H, L], bias [H]}.
TensorMap dlinear_init(int64_t lookback, int64_t horizon);
// Forecasts [B, H] of windows [B, L]; with targets, returns the MSE and accumulates its
// gradient into `grads` (zeroed by the caller), else returns 0.
double dlinear_run(const TensorMap& params, int64_t kernel, std::span<const float> windows,
                   int64_t B, const Backend& be, std::vector<float>& pred,
                   std::span<const float> targets = {}, TensorMap* grads = nullptr);

}  // namespace rwkv7::ts
