#pragma once
// Time-series forecasting with RWKV-7 (issue 13): a continuous-input RWKV-7 (per-channel
// instance normalisation of the lookback window, patches with a linear patch embedding in
// place of the token embedding, the RWKV-7 blocks unchanged, a linear head to the forecast
// horizon; point forecasts, MSE), its baselines (naive, seasonal naive, DLinear) on the same
// chronological split, and a streaming form with a constant-size state. Channels are
// independent: every channel is a row through the same weights.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rwkv7::ts {

// A series read from CSV: one time column and one or more channels.
struct Series {
  std::string source;                      // file name, for messages
  std::string time_name;                   // header of the time column
  std::vector<std::string> time_text;      // [T] the time cells as written (for output)
  std::vector<double> time;                // [T] the number, or seconds since 1970 for a date
  std::vector<std::string> names;          // [channels] column headers
  std::vector<std::vector<float>> values;  // [channels][T]
  int64_t length() const { return time.empty() ? 0 : int64_t(time.size()); }
};

struct CsvOptions {
  std::vector<std::string> columns;  // channels by header name; empty = every non-time column
  std::string time_column;           // empty = the first column
};

// Header row, then one row per time step. The time column holds a number or an ISO date
// (YYYY-MM-DD, optionally THH:MM[:SS] or a space before the time). An empty or NA/NaN value
// cell is interpolated linearly between its neighbours (held at the ends), with one warning
// per column naming it and the count; a row of the wrong width, an unreadable number or time,
// a channel with no value at all: Error naming the file and line.
Series parse_csv(std::string_view text, const std::string& name, const CsvOptions& opts,
                 std::vector<std::string>* warnings);
Series read_csv(const std::string& path, const CsvOptions& opts,
                std::vector<std::string>* warnings);

// Chronological split: [0, train_end) training (70%), [train_end, val_end) validation (10%),
// [val_end, length) test (20%), as the long-term forecasting benchmarks do.
struct Split {
  int64_t train_end = 0, val_end = 0, length = 0;
};
Split chronological_split(int64_t length);

// Per-channel z-score with the mean and standard deviation of the training part (the
// "normalised series" every reported MSE/MAE is measured on).
struct Scaler {
  std::vector<double> mean, scale;  // [channels]
};
Scaler fit_scaler(const Series& s, int64_t train_end);
std::vector<std::vector<float>> normalise(const Series& s, const Scaler& scaler);

struct ModelOptions {
  int64_t lookback = 336, horizon = 96;  // L input points, H forecast points
  int64_t patch = 16, stride = 8;        // P, S: N = (L - P) / S + 1 patches, the last ends at L
  int64_t n_layer = 1, n_embd = 32, head_size = 16;  // RWKV-7 blocks: C = n_embd
  bool revin = true;  // normalise each window by its own mean/std (and undo it on the output)
  // > 0: the network forecasts the residual over the seasonal naive forecast of this period
  // (1 = the last value), taken on the normalised window; 0 = the network alone.
  int64_t base_season = 0;
  uint64_t seed = 0;
};

struct TrainOptions {
  ModelOptions model;
  int64_t steps = 600, batch = 32, warmup = 30;
  double lr = 1e-3, lr_final = 1e-4, weight_decay = 0.01, grad_clip = 1.0;
  int64_t season = 0;           // seasonal naive's period in points (> 0)
  int64_t dlinear_kernel = 25;  // DLinear's moving-average width (odd)
  int64_t dlinear_steps = 0;    // 0 = steps
  int64_t val_every = 50;       // keep the weights of the best validation MSE, checked this often
  // Keep the last step's weights instead (the validation MSE is still measured and reported):
  // for a validation part too short or too unlike the test part to select by.
  bool keep_final = false;
  int threads = 0;  // 0 = all cores
};

struct StepInfo {
  std::string model;  // "rwkv" or "dlinear"
  int64_t step = 0, steps = 0;
  double loss = 0, lr = 0, grad_norm = 0, seconds = 0;
  std::optional<double> val_mse;
};

// Metrics on the normalised series over one split part, every window (stride 1) whose
// forecast lies inside it, every channel.
struct Metrics {
  double mse = 0, mae = 0;
  int64_t windows = 0;  // windows × channels
};

struct Evaluation {
  std::string part;  // "test" or "val"
  Metrics rwkv, naive, seasonal_naive, dlinear;
  int64_t season = 0;
};

// A trained forecaster: the RWKV-7 model, its DLinear baseline, the scaler and the options.
class Forecaster {
 public:
  Forecaster();
  ~Forecaster();
  Forecaster(Forecaster&&) noexcept;
  Forecaster& operator=(Forecaster&&) noexcept;

  // Trains on the training part (validation part for model selection).
  static Forecaster train(const Series& series, const TrainOptions& opts,
                          const std::function<void(const StepInfo&)>& on_step);
  // A safetensors file (atomic write); load validates every tensor and option.
  void save(const std::string& path) const;
  static Forecaster load(const std::string& path);

  const ModelOptions& options() const;
  const std::vector<std::string>& columns() const;
  int64_t season() const;

  // The series' channels with the model's scaler (the training part's mean/std).
  std::vector<std::vector<float>> normalised(const Series& series) const;
  // Forecast [channels][horizon] in the series' own units from the `lookback` points that end
  // at `end` (exclusive; default: the end of the series).
  std::vector<std::vector<float>> forecast(const Series& series, int64_t end = -1) const;
  // The model and the baselines on the test (or validation) part.
  Evaluation evaluate(const Series& series, bool validation = false) const;
  // An SVG of the forecast vs the actual values for channel `channel` at the start of the
  // test part (atomic write).
  void plot(const Series& series, int64_t channel, const std::string& svg_path) const;

  struct Impl;

 private:
  friend struct ImplAccess;
  std::unique_ptr<Impl> impl_;
};

// Streaming: the recurrent form consumes one channel point by point in bounded memory (the
// RWKV state, the last L points, the last N patch outputs). A patch enters the recurrence at
// every S-th point once L points are seen, normalised with the mean/std of the L points that
// end with it (RevIN of the trailing window); from the N-th patch on, a forecast is available
// at each of those points. The state carries everything since the start of the stream, so a
// streaming forecast equals the model's forecast over the whole prefix in one pass (the
// parallel form), not that of a window that starts from a zero state.
struct StreamResult {
  int64_t points = 0, patches = 0, forecasts = 0;
  std::vector<float> last_forecast;  // [H]
  double seconds = 0;
  int64_t state_bytes = 0;  // the recurrent state plus the trailing buffers
};
class Streamer {
 public:
  // `forecast_every`: compute a forecast at every k-th forecast point (0 = only the last one,
  // at finish()). Patches go through the blocks `chunk` at a time (a forecast is reported when
  // its chunk runs; chunk 1 = at once). The model must outlive the streamer.
  Streamer(const Forecaster& model, int threads, int64_t forecast_every = 1, int64_t chunk = 64);
  ~Streamer();
  // Feeds normalised values of one channel; `on_forecast(point, forecast[H])` is called at
  // each forecast point (normalised units; `point` = values seen when it was due).
  using OnForecast = std::function<void(int64_t, std::span<const float>)>;
  void push(std::span<const float> values, const OnForecast& on_forecast);
  // Runs the patches still pending (reporting their forecasts) and sums up.
  StreamResult finish(const OnForecast& on_forecast = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rwkv7::ts
