// Time series: the RWKV-7 forecaster's exact gradients (finite differences), the streaming
// form against the parallel one, training + the model file, and the CLI (issue 13).
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "backends/backend.hpp"
#include "cli/cli_support.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/timeseries.hpp"
#include "temp_dir.hpp"
#include "train/ts_baselines.hpp"
#include "train/ts_internal.hpp"
#include "train/ts_net.hpp"

namespace rwkv7::ts {
namespace {

ModelOptions tiny_options() {
  ModelOptions o;
  o.lookback = 12, o.horizon = 3, o.patch = 4, o.stride = 2;  // N = 5 patches
  o.n_layer = 2, o.n_embd = 8, o.head_size = 4;
  o.base_season = 3;  // the residual over a seasonal naive forecast
  o.seed = 7;
  return o;
}

// The official init zeroes several matrices (output projections, ffn.value), which would make
// many gradients trivially 0: every parameter gets a random nudge.
Net random_net(const ModelOptions& o, uint64_t seed) {
  Net net = init_net(o);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0, 0.2f);
  for (TensorMap* m : {&net.blocks.tensors, &net.io})
    for (auto& [n, t] : *m)
      for (float& v : t.data) v += d(rng);
  return net;
}

std::vector<float> random_values(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.5f, 1.5f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Directional finite differences per tensor: (loss(p + h·u) - loss(p - h·u)) / 2h against
// g·u, u a random unit direction over that tensor.
TEST(TsNet, GradientsMatchFiniteDifferences) {
  const ModelOptions o = tiny_options();
  Net net = random_net(o, 11);
  const int64_t B = 3;
  const std::vector<float> x = random_values(size_t(B * o.lookback), 1);
  const std::vector<float> y = random_values(size_t(B * o.horizon), 2);
  auto be = make_reference_backend();
  NetWorkspace ws;
  NetGrads g;
  net_loss_and_grads(net, x, y, B, *be, nullptr, ws, g);
  NetGrads scratch;
  auto loss = [&] { return net_loss_and_grads(net, x, y, B, *be, nullptr, ws, scratch); };
  std::mt19937_64 rng(5);
  std::normal_distribution<double> nd;
  const double h = 3e-3, rel = 2e-2, abs_floor = 2e-4;
  int checked = 0, strong = 0;
  auto check = [&](TensorMap& params, const TensorMap& grads) {
    for (auto& [name, t] : params) {
      if (name == "emb.weight" || name == "head.weight") continue;  // placeholders, unused
      const FloatTensor& gt = grads.at(name);
      std::vector<double> u(t.data.size());
      double len = 0;
      for (double& v : u) v = nd(rng), len += v * v;
      double ana = 0;
      for (size_t i = 0; i < u.size(); ++i) ana += (u[i] /= std::sqrt(len)) * gt.data[i];
      const std::vector<float> keep = t.data;
      for (size_t i = 0; i < u.size(); ++i) t.data[i] = float(keep[i] + h * u[i]);
      const double lp = loss();
      for (size_t i = 0; i < u.size(); ++i) t.data[i] = float(keep[i] - h * u[i]);
      const double lm = loss();
      t.data = keep;
      const double fd = (lp - lm) / (2 * h);
      EXPECT_NEAR(fd, ana, rel * std::abs(ana) + abs_floor) << name;
      ++checked;
      // Where the gradient is far above the floor, a 2% error in it is caught.
      if (std::abs(ana) > 50 * abs_floor) ++strong;
    }
  };
  check(net.io, g.io);
  check(net.blocks.tensors, g.blocks);
  EXPECT_GT(checked, 50);
  EXPECT_GT(strong, checked * 3 / 4) << "most directional derivatives must be well above the floor";
}

// The same loss through a second implementation: net_predict and a direct MSE.
TEST(TsNet, LossIsTheMseOfThePrediction) {
  const ModelOptions o = tiny_options();
  const Net net = random_net(o, 3);
  const int64_t B = 2;
  const std::vector<float> x = random_values(size_t(B * o.lookback), 8);
  const std::vector<float> y = random_values(size_t(B * o.horizon), 9);
  auto be = make_reference_backend();
  NetWorkspace ws;
  NetGrads g;
  const double loss = net_loss_and_grads(net, x, y, B, *be, nullptr, ws, g);
  std::vector<float> pred;
  net_predict(net, x, B, *be, ws, pred);
  double mse = 0;
  for (size_t i = 0; i < y.size(); ++i) mse += (pred[i] - y[i]) * (pred[i] - y[i]);
  EXPECT_NEAR(loss, mse / double(y.size()), 1e-9 + 1e-6 * loss);
  // RevIN: shifting and scaling a window shifts and scales its forecast the same way.
  std::vector<float> x2 = x, pred2;
  for (float& v : x2) v = 3 * v + 10;
  net_predict(net, x2, B, *be, ws, pred2);
  for (size_t i = 0; i < pred.size(); ++i) EXPECT_NEAR(pred2[i], 3 * pred[i] + 10, 1e-3);
}

// The parallel form: all patches of the stream through the blocks in one training-graph pass
// (model/backward.hpp blocks_forward), each patch normalised by its trailing window, the head
// and the denormalisation written out here in double.
std::vector<std::vector<float>> parallel_forecasts(const Net& net, const std::vector<float>& v) {
  const ModelOptions& o = net.opt;
  const int64_t L = o.lookback, P = o.patch, S = o.stride, N = patch_count(o), C = o.n_embd,
                H = o.horizon;
  std::vector<float> emb;
  std::vector<std::pair<double, double>> stats;
  const FloatTensor &we = net.io.at("ts.embed.weight"), &bei = net.io.at("ts.embed.bias");
  for (int64_t t = L; t <= int64_t(v.size()); t += S) {
    double mean = 0, var = 0;
    for (int64_t i = t - L; i < t; ++i) mean += v[size_t(i)];
    mean /= double(L);
    for (int64_t i = t - L; i < t; ++i) var += (v[size_t(i)] - mean) * (v[size_t(i)] - mean);
    const double sd = std::sqrt(var / double(L) + kRevinEps);
    stats.emplace_back(mean, sd);
    for (int64_t c = 0; c < C; ++c) {
      double s = bei.data[size_t(c)];
      for (int64_t j = 0; j < P; ++j)
        s += we.data[size_t(c * P + j)] * ((v[size_t(t - P + j)] - mean) / sd);
      emb.push_back(float(s));
    }
  }
  const int64_t T = int64_t(stats.size());
  auto be = make_reference_backend();
  train::TrainWorkspace ws;
  const std::vector<float> hidden = train::blocks_forward(net.blocks, emb, 1, T, *be, ws);
  const FloatTensor &wh = net.io.at("ts.head.weight"), &bh = net.io.at("ts.head.bias");
  std::vector<std::vector<float>> out;
  for (int64_t p = N - 1; p < T; ++p) {
    std::vector<float> f(static_cast<size_t>(H));
    for (int64_t k = 0; k < H; ++k) {
      double s = bh.data[size_t(k)];
      for (int64_t i = 0; i < N * C; ++i)
        s += double(wh.data[size_t(k * N * C + i)]) * hidden[size_t((p - N + 1) * C + i)];
      // + the base: the latest point at the same phase of the season, normalised likewise
      const int64_t t = L + p * S;
      int64_t src = t + k;
      while (src >= t) src -= o.base_season;
      s += (v[size_t(src)] - stats[size_t(p)].first) / stats[size_t(p)].second;
      f[size_t(k)] = float(s * stats[size_t(p)].second + stats[size_t(p)].first);
    }
    out.push_back(f);
  }
  return out;
}

TEST(TsStream, StreamingForecastEqualsTheParallelForm) {
  const ModelOptions o = tiny_options();
  Forecaster f;
  ImplAccess::of(f).net = random_net(o, 21);
  std::vector<float> v(131);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(std::sin(0.3 * double(i)) + 0.01 * double(i));
  const std::vector<std::vector<float>> want = parallel_forecasts(ImplAccess::of(f).net, v);
  ASSERT_GT(want.size(), 40u);
  for (int64_t chunk : {1, 7, 1000}) {
    Streamer st(f, 1, 1, chunk);
    std::vector<std::vector<float>> got;
    std::vector<int64_t> at;
    // Fed in uneven pieces: the result must not depend on them.
    auto on = [&](int64_t point, std::span<const float> fc) {
      got.emplace_back(fc.begin(), fc.end());
      at.push_back(point);
    };
    for (size_t i = 0; i < v.size(); i += 13)
      st.push(std::span(v).subspan(i, std::min<size_t>(13, v.size() - i)), on);
    const StreamResult r = st.finish(on);
    ASSERT_EQ(got.size(), want.size()) << "chunk " << chunk;
    EXPECT_EQ(r.forecasts, int64_t(want.size()));
    EXPECT_EQ(at.front(), o.lookback + (patch_count(o) - 1) * o.stride);
    for (size_t k = 0; k < want.size(); ++k)
      for (size_t h = 0; h < want[k].size(); ++h)
        ASSERT_NEAR(got[k][h], want[k][h], 2e-4 * (1 + std::abs(want[k][h])))
            << "chunk " << chunk << ", forecast " << k << ", step " << h;
    EXPECT_EQ(r.last_forecast, got.back());
  }
  // Only the last forecast: the same value.
  Streamer last(f, 1, 0, 5);
  last.push(v, {});
  const StreamResult r = last.finish();
  EXPECT_EQ(r.forecasts, 1);
  for (size_t h = 0; h < want.back().size(); ++h)
    EXPECT_NEAR(r.last_forecast[h], want.back()[h], 2e-4 * (1 + std::abs(want.back()[h])));
}

Series sine_series(int64_t n) {
  Series s;
  s.source = "sine";
  s.time_name = "t";
  s.names = {"a", "b"};
  s.values.assign(2, std::vector<float>(size_t(n)));
  for (int64_t i = 0; i < n; ++i) {
    s.time.push_back(double(i));
    s.time_text.push_back(std::to_string(i));
    s.values[0][size_t(i)] = float(10 + 3 * std::sin(2 * M_PI * double(i) / 8));
    s.values[1][size_t(i)] = float(std::cos(2 * M_PI * double(i) / 6) + 0.01 * double(i));
  }
  return s;
}

TEST(TsForecaster, TrainsSavesLoadsAndEvaluatesTheSame) {
  const Series s = sine_series(160);
  TrainOptions t;
  t.model = tiny_options();
  t.steps = 30, t.batch = 8, t.val_every = 10, t.season = 8, t.dlinear_kernel = 3;
  t.threads = 1;
  int64_t steps_seen = 0;
  const Forecaster f = Forecaster::train(s, t, [&](const StepInfo&) { ++steps_seen; });
  EXPECT_EQ(steps_seen, 60);  // the RWKV model's and DLinear's
  const Evaluation e = f.evaluate(s);
  // The seasonal naive forecast of channel a (period 8) is exact; channel b's period is 6.
  EXPECT_GT(e.seasonal_naive.mse, 0);
  EXPECT_GT(e.rwkv.windows, 0);
  EXPECT_TRUE(std::isfinite(e.rwkv.mse) && std::isfinite(e.dlinear.mse));
  testing::TempDir dir;
  const std::string path = dir.file("m.safetensors");
  f.save(path);
  const Forecaster g = Forecaster::load(path);
  const Evaluation e2 = g.evaluate(s);
  EXPECT_EQ(e2.rwkv.mse, e.rwkv.mse);
  EXPECT_EQ(e2.dlinear.mse, e.dlinear.mse);
  EXPECT_EQ(g.columns(), s.names);
  EXPECT_EQ(g.forecast(s), f.forecast(s));
  Series other = s;
  other.names = {"b", "a"};
  EXPECT_THROW(f.forecast(other), Error);
  // A file without the time-series metadata is refused by name.
  write_safetensors(dir.file("x.safetensors"), {{"a", FloatTensor({2}).view()}});
  try {
    Forecaster::load(dir.file("x.safetensors"));
    FAIL();
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("x.safetensors"), std::string::npos);
  }
}

// The validation MSE of the model returned is the best one measured (untrained included), or with
// keep_final the last step's, whichever is lower.
TEST(TsForecaster, KeepsTheBestOrTheFinalWeights) {
  const Series s = sine_series(160);
  for (bool keep_final : {false, true}) {
    TrainOptions t;
    t.model = tiny_options();
    t.steps = 24, t.batch = 8, t.val_every = 4, t.season = 8, t.dlinear_kernel = 3;
    t.lr = 2e-2, t.lr_final = 2e-2;  // large enough for the validation MSE to move up and down
    t.threads = 1;
    t.keep_final = keep_final;
    std::vector<double> rwkv_val;
    const Forecaster f = Forecaster::train(s, t, [&](const StepInfo& i) {
      if (i.model == "rwkv" && i.val_mse) rwkv_val.push_back(*i.val_mse);
    });
    ASSERT_EQ(rwkv_val.size(), 6u);
    const double got = f.evaluate(s, /*validation=*/true).rwkv.mse;
    const double best = *std::min_element(rwkv_val.begin(), rwkv_val.end());
    SCOPED_TRACE(keep_final ? "keep_final" : "best");
    if (keep_final)
      EXPECT_NEAR(got, rwkv_val.back(), 1e-6 * rwkv_val.back());
    else
      EXPECT_LE(got, best * (1 + 1e-6));
  }
}

TEST(TsCli, TrainEvalForecastOnACsv) {
  testing::TempDir dir;
  const std::string csv = dir.file("s.csv"), model = dir.file("m.safetensors");
  {
    std::ofstream out(csv);
    out << "t,a,b\n";
    const Series s = sine_series(160);
    for (int64_t i = 0; i < 160; ++i)
      out << i << ',' << (i == 40 ? std::string("NA") : std::to_string(s.values[0][size_t(i)]))
          << ',' << s.values[1][size_t(i)] << '\n';
  }
  using testing::quote;
  auto r = testing::run_cli("ts train --data " + quote(csv) +
                            " --columns a --lookback 12 --horizon 3 --patch 4 --stride 2 --layers 1"
                            " --embd 8 --head-size 4 --season 8 --dlinear-kernel 3 --steps 5"
                            " --batch 4 -t 1 -o " +
                            quote(model));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("column 'a': 1 missing"), std::string::npos) << r.err;
  r = testing::run_cli("ts eval --json -m " + quote(model) + " --data " + quote(csv) + " --svg " +
                       quote(dir.file("p.svg")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* k : {"mse", "mae", "seasonal_naive_mse", "dlinear_mse", "naive_mse"})
    EXPECT_TRUE(j.contains(k) && j[k].is_number()) << k;
  EXPECT_NE(testing::slurp(dir.file("p.svg")).find("<svg"), std::string::npos);
  r = testing::run_cli("ts forecast -m " + quote(model) + " --data " + quote(csv));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("step,a\n1,", 0), 0u) << r.out;
  r = testing::run_cli("ts stream --synthetic 500 --every 2 -t 1 -m " + quote(model));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto s = nlohmann::json::parse(r.out);
  EXPECT_EQ(s["points"], 500);
  // Patches at points 12, 14, ..., 500; forecasts from the 5th patch on, every 2nd of those.
  EXPECT_EQ(s["patches"], (500 - 12) / 2 + 1);
  EXPECT_EQ(s["forecasts"], ((500 - 12) / 2 + 1 - 4 + 1) / 2);
  r = testing::run_cli("ts eval -m " + quote(model) + " --data " + quote(dir.file("none.csv")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("none.csv"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace rwkv7::ts
