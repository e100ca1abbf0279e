#pragma once
// Shared by the time-series files: the forecaster's insides and the window helpers.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rwkv7/timeseries.hpp"
#include "train/ts_net.hpp"

namespace rwkv7::ts {

struct Forecaster::Impl {
  Net net;
  TensorMap dlinear;  // ts_baselines.hpp
  int64_t dlinear_kernel = 25, season = 1;
  std::vector<std::string> columns;
  Scaler scaler;  // of the training part of the series it was trained on
};

struct ImplAccess {
  static Forecaster::Impl& of(Forecaster& f) { return *f.impl_; }
  static const Forecaster::Impl& of(const Forecaster& f) { return *f.impl_; }
};

// One forecast window: input [t - L, t), target [t, t + H) of one channel.
struct WindowAt {
  int64_t channel = 0, t = 0;
};
// Every window (stride 1, every channel) whose target lies in [from, to) and input in the series.
std::vector<WindowAt> windows_in(int64_t channels, int64_t length, int64_t from, int64_t to,
                                 int64_t L, int64_t H);
// x [n, L], y [n, H] of the windows `at` of the normalised channels.
void gather(const std::vector<std::vector<float>>& norm, std::span<const WindowAt> at, int64_t L,
            int64_t H, std::vector<float>& x, std::vector<float>& y);

Metrics eval_rwkv(const Net& net, const std::vector<std::vector<float>>& norm,
                  std::span<const WindowAt> at, const Backend& be);
Metrics eval_dlinear(const TensorMap& p, int64_t kernel,
                     const std::vector<std::vector<float>>& norm, std::span<const WindowAt> at,
                     const Backend& be);

// Error unless the series has the model's channels, in its order.
void check_columns(const Forecaster::Impl& m, const Series& s);

}  // namespace rwkv7::ts
