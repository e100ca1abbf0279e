// The time-series harness: windows of the chronological split, training of the RWKV-7
// forecaster and of DLinear by the same AdamW and schedule, evaluation beside the naive
// baselines, the model file, the plot.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>

#include "core/atomic_write.hpp"
#include "core/svg_plot.hpp"
#include "core/thread_pool.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "train/optimizer.hpp"
#include "train/ts_baselines.hpp"
#include "train/ts_internal.hpp"
#include "train/ts_net.hpp"

namespace rwkv7::ts {

using Clock = std::chrono::steady_clock;

std::vector<WindowAt> windows_in(int64_t channels, int64_t length, int64_t from, int64_t to,
                                 int64_t L, int64_t H) {
  std::vector<WindowAt> out;
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t t = std::max(from, L); t + H <= std::min(to, length); ++t) out.push_back({c, t});
  return out;
}

void gather(const std::vector<std::vector<float>>& norm, std::span<const WindowAt> at, int64_t L,
            int64_t H, std::vector<float>& x, std::vector<float>& y) {
  x.resize(at.size() * size_t(L));
  y.resize(at.size() * size_t(H));
  for (size_t i = 0; i < at.size(); ++i) {
    const std::vector<float>& v = norm[size_t(at[i].channel)];
    std::copy_n(v.begin() + (at[i].t - L), L, x.begin() + ptrdiff_t(i * size_t(L)));
    std::copy_n(v.begin() + at[i].t, H, y.begin() + ptrdiff_t(i * size_t(H)));
  }
}

namespace {

constexpr int64_t kEvalBatch = 256;

struct Accumulator {
  double se = 0, ae = 0;
  int64_t n = 0, windows = 0;
  void add(std::span<const float> pred, std::span<const float> y) {
    for (size_t i = 0; i < y.size(); ++i) {
      const double e = double(pred[i]) - y[i];
      se += e * e;
      ae += std::abs(e);
    }
    n += int64_t(y.size());
  }
  Metrics metrics() const { return {n ? se / double(n) : 0, n ? ae / double(n) : 0, windows}; }
};

double joint_clip(TensorMap& a, TensorMap& b, double max_norm) {
  double sq = 0;
  for (TensorMap* m : {&a, &b})
    for (const auto& [n, g] : *m)
      for (float x : g.data) sq += double(x) * x;
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = float(max_norm / (norm + 1e-6));
    for (TensorMap* m : {&a, &b})
      for (auto& [n, g] : *m)
        for (float& x : g.data) x *= scale;
  }
  return norm;
}

std::vector<WindowAt> checked_windows(const Series& s, int64_t from, int64_t to, int64_t L,
                                      int64_t H, const char* part) {
  std::vector<WindowAt> w = windows_in(int64_t(s.values.size()), s.length(), from, to, L, H);
  if (w.empty())
    throw Error(s.source + ": the " + part + " part [" + std::to_string(from) + ", " +
                std::to_string(to) + ") has no window of lookback " + std::to_string(L) +
                " and horizon " + std::to_string(H) + " (series of " + std::to_string(s.length()) +
                " points)");
  return w;
}

}  // namespace

Metrics eval_rwkv(const Net& net, const std::vector<std::vector<float>>& norm,
                  std::span<const WindowAt> at, const Backend& be) {
  NetWorkspace ws;
  Accumulator acc;
  std::vector<float> x, y, pred;
  for (size_t i = 0; i < at.size(); i += kEvalBatch) {
    const auto part = at.subspan(i, std::min<size_t>(kEvalBatch, at.size() - i));
    gather(norm, part, net.opt.lookback, net.opt.horizon, x, y);
    net_predict(net, x, int64_t(part.size()), be, ws, pred);
    acc.add(pred, y);
  }
  acc.windows = int64_t(at.size());
  return acc.metrics();
}

Metrics eval_dlinear(const TensorMap& p, int64_t kernel,
                     const std::vector<std::vector<float>>& norm, std::span<const WindowAt> at,
                     const Backend& be) {
  const int64_t H = p.at("dlinear.trend.weight").shape[0],
                L = p.at("dlinear.trend.weight").shape[1];
  Accumulator acc;
  std::vector<float> x, y, pred;
  for (size_t i = 0; i < at.size(); i += kEvalBatch) {
    const auto part = at.subspan(i, std::min<size_t>(kEvalBatch, at.size() - i));
    gather(norm, part, L, H, x, y);
    dlinear_run(p, kernel, x, int64_t(part.size()), be, pred);
    acc.add(pred, y);
  }
  acc.windows = int64_t(at.size());
  return acc.metrics();
}

namespace {

// Trains `params` with AdamW on random batches of the training windows; keeps the parameters
// of the best validation MSE (or the last step's, o.keep_final). `grad_fn(x, y, B, grads)`
// returns the loss.
template <class Params, class GradFn, class ValFn>
void fit(const std::string& what, Params& params, const TrainOptions& o, int64_t steps,
         const std::vector<std::vector<float>>& norm, std::span<const WindowAt> train_w, int64_t L,
         int64_t H, GradFn grad_fn, ValFn val_fn,
         const std::function<void(const StepInfo&)>& on_step) {
  train::AdamWOptions ao;
  ao.weight_decay = o.weight_decay;
  auto maps = params.maps();  // the TensorMaps of the parameters (one or two)
  std::vector<train::AdamW> adams;
  for (TensorMap* m : maps) adams.emplace_back(*m, ao);
  train::Schedule sched{o.lr, o.lr_final, std::min(o.warmup, steps / 2), steps};
  std::mt19937_64 rng(params.seed() ^ 0x5eed);
  const int64_t B = std::min<int64_t>(o.batch, int64_t(train_w.size()));
  std::vector<WindowAt> batch(static_cast<size_t>(B));
  std::vector<float> x, y;
  auto grads = params.zero_grads();
  Params best = params;
  double best_val = val_fn(params);  // the untrained model (with a base forecast: the base)
  const auto t0 = Clock::now();
  for (int64_t s = 0; s < steps; ++s) {
    for (WindowAt& w : batch) w = train_w[size_t(rng() % train_w.size())];
    gather(norm, batch, L, H, x, y);
    const double loss = grad_fn(x, y, B, grads);
    auto gmaps = params.grad_maps(grads);
    const double gnorm = gmaps.size() == 2 ? joint_clip(*gmaps[0], *gmaps[1], o.grad_clip)
                                           : train::clip_grad_norm(*gmaps[0], o.grad_clip);
    const double lr = sched.lr_at(s);
    for (size_t k = 0; k < maps.size(); ++k) adams[k].step(*maps[k], *gmaps[k], lr);
    StepInfo info{what, s + 1, steps, loss, lr, gnorm, 0, std::nullopt};
    if ((o.val_every > 0 && (s + 1) % o.val_every == 0) || s + 1 == steps) {
      info.val_mse = val_fn(params);
      if (!o.keep_final && *info.val_mse < best_val) {
        best_val = *info.val_mse;
        best = params;
      }
    }
    info.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (on_step) on_step(info);
  }
  if (!o.keep_final) params = std::move(best);
}

// The RWKV-7 network as fit() sees it.
struct NetParams {
  Net net;
  std::vector<TensorMap*> maps() { return {&net.blocks.tensors, &net.io}; }
  uint64_t seed() const { return net.opt.seed; }
  NetGrads zero_grads() const { return {}; }
  static std::vector<TensorMap*> grad_maps(NetGrads& g) { return {&g.blocks, &g.io}; }
};

struct DlinearParams {
  TensorMap p;
  uint64_t seed_ = 0;
  std::vector<TensorMap*> maps() { return {&p}; }
  uint64_t seed() const { return seed_; }
  TensorMap zero_grads() const {
    TensorMap g;
    for (const auto& [n, t] : p) g.emplace(n, FloatTensor(t.shape));
    return g;
  }
  static std::vector<TensorMap*> grad_maps(TensorMap& g) { return {&g}; }
};

}  // namespace

Forecaster::Forecaster() : impl_(std::make_unique<Impl>()) {}
Forecaster::~Forecaster() = default;
Forecaster::Forecaster(Forecaster&&) noexcept = default;
Forecaster& Forecaster::operator=(Forecaster&&) noexcept = default;

const ModelOptions& Forecaster::options() const { return impl_->net.opt; }
const std::vector<std::string>& Forecaster::columns() const { return impl_->columns; }
int64_t Forecaster::season() const { return impl_->season; }

Forecaster Forecaster::train(const Series& series, const TrainOptions& o,
                             const std::function<void(const StepInfo&)>& on_step) {
  check_options(o.model);
  const int64_t L = o.model.lookback, H = o.model.horizon;
  if (o.season < 1 || o.season > L)
    throw Error("time series: --season must be in [1, lookback " + std::to_string(L) + "], not " +
                std::to_string(o.season));
  if (o.steps < 1 || o.batch < 1) throw Error("time series: steps and batch must be at least 1");
  if (!(o.lr > 0) || !(o.lr_final > 0)) throw Error("time series: learning rates must be > 0");
  std::vector<float> probe(1);
  moving_average(probe, o.dlinear_kernel, probe);  // checks the kernel
  const Split sp = chronological_split(series.length());
  const std::vector<WindowAt> train_w = checked_windows(series, 0, sp.train_end, L, H, "training");
  const std::vector<WindowAt> val_w =
      checked_windows(series, sp.train_end, sp.val_end, L, H, "validation");
  Forecaster f;
  Impl& m = *f.impl_;
  m.columns = series.names;
  m.season = o.season;
  m.dlinear_kernel = o.dlinear_kernel;
  m.scaler = fit_scaler(series, sp.train_end);
  const std::vector<std::vector<float>> norm = normalise(series, m.scaler);
  ThreadPool pool(o.threads);
  auto be = make_cpu_backend(&pool);

  NetParams np{init_net(o.model)};
  NetWorkspace ws;
  fit(
      "rwkv", np, o, o.steps, norm, train_w, L, H,
      [&](const std::vector<float>& x, const std::vector<float>& y, int64_t B, NetGrads& g) {
        return net_loss_and_grads(np.net, x, y, B, *be, &pool, ws, g);
      },
      [&](NetParams& p) { return eval_rwkv(p.net, norm, val_w, *be).mse; }, on_step);
  m.net = std::move(np.net);

  DlinearParams dp{dlinear_init(L, H), o.model.seed};
  fit(
      "dlinear", dp, o, o.dlinear_steps > 0 ? o.dlinear_steps : o.steps, norm, train_w, L, H,
      [&](const std::vector<float>& x, const std::vector<float>& y, int64_t B, TensorMap& g) {
        for (auto& [n, t] : g) std::fill(t.data.begin(), t.data.end(), 0.0f);
        std::vector<float> pred;
        return dlinear_run(dp.p, o.dlinear_kernel, x, B, *be, pred, y, &g);
      },
      [&](DlinearParams& p) { return eval_dlinear(p.p, o.dlinear_kernel, norm, val_w, *be).mse; },
      on_step);
  m.dlinear = std::move(dp.p);
  return f;
}

Evaluation Forecaster::evaluate(const Series& series, bool validation) const {
  const Impl& m = *impl_;
  const int64_t L = m.net.opt.lookback, H = m.net.opt.horizon;
  check_columns(m, series);
  const Split sp = chronological_split(series.length());
  const std::vector<WindowAt> at =
      validation ? checked_windows(series, sp.train_end, sp.val_end, L, H, "validation")
                 : checked_windows(series, sp.val_end, sp.length, L, H, "test");
  const std::vector<std::vector<float>> norm = normalise(series, m.scaler);
  ThreadPool pool(0);
  auto be = make_cpu_backend(&pool);
  Evaluation e;
  e.part = validation ? "val" : "test";
  e.season = m.season;
  e.rwkv = eval_rwkv(m.net, norm, at, *be);
  e.dlinear = eval_dlinear(m.dlinear, m.dlinear_kernel, norm, at, *be);
  Accumulator naive, seasonal;
  std::vector<float> x, y, pred(static_cast<size_t>(H));
  for (size_t i = 0; i < at.size(); ++i) {
    gather(norm, std::span(at).subspan(i, 1), L, H, x, y);
    naive_forecast(x, pred);
    naive.add(pred, y);
    seasonal_naive_forecast(x, m.season, pred);
    seasonal.add(pred, y);
  }
  naive.windows = seasonal.windows = int64_t(at.size());
  e.naive = naive.metrics();
  e.seasonal_naive = seasonal.metrics();
  return e;
}

std::vector<std::vector<float>> Forecaster::normalised(const Series& series) const {
  check_columns(*impl_, series);
  return normalise(series, impl_->scaler);
}

std::vector<std::vector<float>> Forecaster::forecast(const Series& series, int64_t end) const {
  const Impl& m = *impl_;
  const int64_t L = m.net.opt.lookback;
  check_columns(m, series);
  if (end < 0) end = series.length();
  if (end < L || end > series.length())
    throw Error(series.source + ": a forecast from point " + std::to_string(end) + " needs " +
                std::to_string(L) + " points before it (the series has " +
                std::to_string(series.length()) + ")");
  const std::vector<std::vector<float>> norm = normalise(series, m.scaler);
  ThreadPool pool(0);
  auto be = make_cpu_backend(&pool);
  std::vector<WindowAt> at;
  for (int64_t c = 0; c < int64_t(norm.size()); ++c) at.push_back({c, end});
  std::vector<float> x(at.size() * size_t(L)), pred;
  for (size_t i = 0; i < at.size(); ++i)
    std::copy_n(norm[i].begin() + (end - L), L, x.begin() + ptrdiff_t(i * size_t(L)));
  NetWorkspace ws;
  net_predict(m.net, x, int64_t(at.size()), *be, ws, pred);
  const int64_t H = m.net.opt.horizon;
  std::vector<std::vector<float>> out(norm.size(), std::vector<float>(size_t(H)));
  for (size_t c = 0; c < norm.size(); ++c)
    for (int64_t h = 0; h < H; ++h)
      out[c][size_t(h)] =
          float(pred[c * size_t(H) + size_t(h)] * m.scaler.scale[c] + m.scaler.mean[c]);
  return out;
}

void Forecaster::plot(const Series& series, int64_t channel, const std::string& svg_path) const {
  const Impl& m = *impl_;
  const int64_t L = m.net.opt.lookback, H = m.net.opt.horizon;
  if (channel < 0 || channel >= int64_t(series.values.size()))
    throw Error("time series: no channel " + std::to_string(channel));
  const Split sp = chronological_split(series.length());
  const int64_t t0 = std::max(sp.val_end, L);
  if (t0 + H > series.length())
    throw Error(series.source + ": the test part is shorter than the horizon");
  const std::vector<float> fc = forecast(series, t0)[size_t(channel)];
  PlotSpec spec;
  spec.title = "rwkv7 ts: " + series.names[size_t(channel)] + ", first test window";
  spec.x_label = series.time_name;
  spec.y_label = series.names[size_t(channel)];
  PlotSeries actual{"actual", plot_color(0), 1.5, false, {}},
      pred{"RWKV-7 forecast", plot_color(1), 2, false, {}};
  const std::vector<float>& v = series.values[size_t(channel)];
  for (int64_t t = t0 - std::min<int64_t>(L, 2 * H); t < t0 + H; ++t)
    actual.points.emplace_back(series.time[size_t(t)], v[size_t(t)]);
  for (int64_t h = 0; h < H; ++h)
    pred.points.emplace_back(series.time[size_t(t0 + h)], fc[size_t(h)]);
  spec.series = {actual, pred};
  spec.x_format = "%.3f";
  spec.y_format = "%.1f";
  const std::string svg = render_svg_plot(spec);
  write_file_atomic(svg_path, [&](std::ostream& out) { out << svg; });
}

}  // namespace rwkv7::ts
