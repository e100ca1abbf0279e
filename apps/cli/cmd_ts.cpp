// rwkv7 ts: time-series forecasting with RWKV-7 (train, forecast, eval, stream) on CSV data,
// beside naive, seasonal-naive and DLinear baselines on the same chronological split.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/timeseries.hpp"

namespace rwkv7::cli {
namespace {

struct DataFlags {
  std::string data;
  std::vector<std::string> columns;
  std::string time_column;

  void add(CLI::App* cmd) {
    cmd->add_option("--data", data, "CSV file: header row, a time column, value columns")
        ->required();
    cmd->add_option("--columns", columns, "Value columns to use (default: all but the time)")
        ->delimiter(',');
    cmd->add_option("--time-column", time_column, "The time column (default: the first)");
  }
  ts::Series read(const std::vector<std::string>& model_columns = {}) const {
    ts::CsvOptions o;
    o.columns = columns.empty() ? model_columns : columns;
    o.time_column = time_column;
    std::vector<std::string> warnings;
    ts::Series s = ts::read_csv(data, o, &warnings);
    for (const std::string& w : warnings) std::fprintf(stderr, "ts: warning: %s\n", w.c_str());
    return s;
  }
};

void register_ts_train(CLI::App* ts_cmd) {
  struct Opts {
    DataFlags data;
    ts::TrainOptions t;
    std::string out;
    bool no_revin = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = ts_cmd->add_subcommand(
      "train", "Train an RWKV-7 forecaster (and its DLinear baseline) on the 70% training part");
  o->data.add(cmd);
  auto& t = o->t;
  cmd->add_option("--lookback", t.model.lookback, "Input points (L)")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--horizon", t.model.horizon, "Forecast points (H)")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--patch", t.model.patch, "Patch length (P)")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--stride", t.model.stride, "Patch stride (S); S must divide L - P")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--layers", t.model.n_layer, "RWKV-7 blocks")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("--embd", t.model.n_embd, "Width (C)")->capture_default_str()->check(Positive);
  cmd->add_option("--head-size", t.model.head_size, "Head size")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_flag("--no-revin", o->no_revin, "Do not normalise each window by its own mean/std");
  cmd->add_option("--base-season", t.model.base_season,
                  "Forecast the residual over the seasonal naive forecast of this period (1 = "
                  "the last value; 0 = none)")
      ->capture_default_str();
  cmd->add_option("--season", t.season, "Seasonal naive's period in points (<= lookback)")
      ->required()
      ->check(Positive);
  cmd->add_option("--steps", t.steps, "Optimiser steps")->capture_default_str()->check(Positive);
  cmd->add_option("--dlinear-steps", t.dlinear_steps, "DLinear's steps (0 = --steps)")
      ->capture_default_str();
  cmd->add_option("--dlinear-kernel", t.dlinear_kernel, "DLinear's moving average (odd)")
      ->capture_default_str();
  cmd->add_option("--batch", t.batch, "Windows per step")->capture_default_str()->check(Positive);
  cmd->add_option("--lr", t.lr, "Learning rate after warm-up")->capture_default_str();
  cmd->add_option("--lr-final", t.lr_final, "Learning rate at the last step")
      ->capture_default_str();
  cmd->add_option("--warmup", t.warmup, "Warm-up steps")->capture_default_str();
  cmd->add_option("--weight-decay", t.weight_decay, "On 2-D weights")->capture_default_str();
  cmd->add_option("--grad-clip", t.grad_clip, "Global gradient-norm clip (0 = off)")
      ->capture_default_str();
  cmd->add_option("--val-every", t.val_every, "Validate every N steps; the best weights are kept")
      ->capture_default_str();
  cmd->add_flag("--keep-final", t.keep_final,
                "Keep the last step's weights, not the best validation MSE's (both models)");
  cmd->add_option("--seed", t.model.seed, "Seed of the init and the batches")
      ->capture_default_str();
  cmd->add_option("-t,--threads", t.threads, "Worker threads (0 = all cores)")->check(ThreadCount);
  cmd->add_option("-o,--output", o->out, "Model file to write (safetensors)")->required();
  cmd->callback([o] {
    ts::TrainOptions t = o->t;
    t.model.revin = !o->no_revin;
    const ts::Series s = o->data.read();
    std::fprintf(stderr, "ts: %s: %lld points, %zu channel(s)\n", s.source.c_str(),
                 (long long)s.length(), s.names.size());
    ts::Forecaster f = ts::Forecaster::train(s, t, [](const ts::StepInfo& i) {
      if (!i.val_mse) return;
      std::fprintf(stderr,
                   "ts: %-7s step %lld/%lld  loss %.4f  |g| %.3f  lr %.2g  val mse %.4f  %.1fs\n",
                   i.model.c_str(), (long long)i.step, (long long)i.steps, i.loss, i.grad_norm,
                   i.lr, *i.val_mse, i.seconds);
    });
    f.save(o->out);
    std::fprintf(stderr, "ts: model written to %s\n", o->out.c_str());
  });
}

void register_ts_forecast(CLI::App* ts_cmd) {
  struct Opts {
    DataFlags data;
    std::string model, out;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = ts_cmd->add_subcommand(
      "forecast",
      "Forecast the horizon after the end of the data (CSV: step, then one column per channel)");
  cmd->add_option("-m,--model", o->model, "Model from rwkv7 ts train")->required();
  o->data.add(cmd);
  cmd->add_option("-o,--output", o->out, "CSV file (default: stdout)");
  cmd->callback([o] {
    const ts::Forecaster f = ts::Forecaster::load(o->model);
    const ts::Series s = o->data.read(f.columns());
    const auto fc = f.forecast(s);
    std::ostringstream csv;
    csv << "step";
    for (const std::string& n : s.names) csv << ',' << n;
    csv << '\n';
    for (size_t h = 0; h < fc[0].size(); ++h) {
      csv << h + 1;
      for (const auto& c : fc) csv << ',' << c[h];
      csv << '\n';
    }
    if (o->out.empty()) {
      std::fputs(csv.str().c_str(), stdout);
    } else {
      std::ofstream out(o->out, std::ios::binary);
      if (!(out << csv.str())) throw Error(o->out + ": cannot write the forecast");
    }
  });
}

void register_ts_eval(CLI::App* ts_cmd) {
  struct Opts {
    DataFlags data;
    std::string model, svg;
    bool json = false, validation = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = ts_cmd->add_subcommand(
      "eval",
      "MSE/MAE on the normalised series over the test part (last 20%): the model, naive, "
      "seasonal naive, DLinear");
  cmd->add_option("-m,--model", o->model, "Model from rwkv7 ts train")->required();
  o->data.add(cmd);
  cmd->add_flag("--json", o->json, "One JSON object on stdout");
  cmd->add_flag("--validation", o->validation, "The validation part instead of the test part");
  cmd->add_option("--svg", o->svg, "Plot forecast vs actual (first channel, first test window)");
  cmd->callback([o] {
    const ts::Forecaster f = ts::Forecaster::load(o->model);
    const ts::Series s = o->data.read(f.columns());
    const ts::Evaluation e = f.evaluate(s, o->validation);
    if (!o->svg.empty()) f.plot(s, 0, o->svg);
    const ts::ModelOptions& m = f.options();
    if (o->json) {
      nlohmann::json j = {{"data", s.source},
                          {"part", e.part},
                          {"lookback", m.lookback},
                          {"horizon", m.horizon},
                          {"windows", e.rwkv.windows},
                          {"mse", e.rwkv.mse},
                          {"mae", e.rwkv.mae},
                          {"naive_mse", e.naive.mse},
                          {"naive_mae", e.naive.mae},
                          {"seasonal_naive_mse", e.seasonal_naive.mse},
                          {"seasonal_naive_mae", e.seasonal_naive.mae},
                          {"season", e.season},
                          {"dlinear_mse", e.dlinear.mse},
                          {"dlinear_mae", e.dlinear.mae}};
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("%s, %s part, lookback %lld, horizon %lld, %lld windows (normalised series)\n",
                s.source.c_str(), e.part.c_str(), (long long)m.lookback, (long long)m.horizon,
                (long long)e.rwkv.windows);
    const std::pair<const char*, const ts::Metrics*> rows[] = {
        {"RWKV-7", &e.rwkv},
        {"naive", &e.naive},
        {"seasonal naive", &e.seasonal_naive},
        {"DLinear", &e.dlinear}};
    for (auto [name, mt] : rows)
      std::printf("  %-15s mse %.4f  mae %.4f\n", name, mt->mse, mt->mae);
  });
}

void register_ts_stream(CLI::App* ts_cmd) {
  struct Opts {
    DataFlags data;
    std::string model, column;
    int64_t synthetic = 0, every = 1, chunk = 64;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = ts_cmd->add_subcommand(
      "stream",
      "Run the recurrent form over one channel of any length in bounded memory (forecasts at "
      "every S-th point); prints a JSON summary");
  cmd->add_option("-m,--model", o->model, "Model from rwkv7 ts train")->required();
  cmd->add_option("--data", o->data.data, "CSV file (its first model column is streamed)");
  cmd->add_option("--synthetic", o->synthetic,
                  "Instead of --data: this many points of a noisy daily+weekly sine (normalised)");
  cmd->add_option("--every", o->every, "Forecast at every k-th forecast point (0 = last only)")
      ->capture_default_str();
  cmd->add_option("--chunk", o->chunk, "Patches per pass through the blocks")
      ->capture_default_str()
      ->check(Positive);
  cmd->add_option("-t,--threads", o->threads, "Worker threads (0 = all cores)")->check(ThreadCount);
  cmd->callback([o] {
    const ts::Forecaster f = ts::Forecaster::load(o->model);
    ts::Streamer st(f, o->threads, o->every, o->chunk);
    double checksum = 0;
    auto on = [&](int64_t, std::span<const float> fc) { checksum += fc[0]; };
    if (o->synthetic > 0) {
      // Deterministic: two seasons and a small pseudo-random term, in blocks of 64 Ki points.
      std::vector<float> block;
      uint64_t x = 88172645463325252ull;
      for (int64_t done = 0; done < o->synthetic;) {
        const int64_t n = std::min<int64_t>(65536, o->synthetic - done);
        block.resize(size_t(n));
        for (int64_t i = 0; i < n; ++i) {
          const double t = double(done + i);
          x ^= x << 13, x ^= x >> 7, x ^= x << 17;
          block[size_t(i)] =
              float(std::sin(2 * M_PI * t / 48) + 0.5 * std::sin(2 * M_PI * t / 336) +
                    0.1 * (double(x >> 11) * 0x1.0p-53 - 0.5));
        }
        st.push(block, on);
        done += n;
      }
    } else {
      if (o->data.data.empty()) throw Error("ts stream: give --data FILE.csv or --synthetic N");
      const ts::Series s = o->data.read(f.columns());
      st.push(f.normalised(s)[0], on);
    }
    const ts::StreamResult r = st.finish(on);
    nlohmann::json j = {{"points", r.points},           {"patches", r.patches},
                        {"forecasts", r.forecasts},     {"seconds", r.seconds},
                        {"state_bytes", r.state_bytes}, {"forecast_checksum", checksum}};
    std::printf("%s\n", j.dump().c_str());
  });
}

}  // namespace

void register_ts(CLI::App& app) {
  auto* cmd = app.add_subcommand("ts", "Time-series forecasting with RWKV-7 (CSV in and out)");
  cmd->require_subcommand(1);
  register_ts_train(cmd);
  register_ts_forecast(cmd);
  register_ts_eval(cmd);
  register_ts_stream(cmd);
}

}  // namespace rwkv7::cli
