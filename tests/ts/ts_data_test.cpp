// Time series: the CSV loader, the split, RevIN, patching and the naive/seasonal/DLinear
// baselines (issue 13).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backends/backend.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/timeseries.hpp"
#include "test_support.hpp"
#include "train/optimizer.hpp"
#include "train/ts_baselines.hpp"
#include "train/ts_net.hpp"

namespace rwkv7::ts {
namespace {

std::string error_of(const std::string& csv, const CsvOptions& o = {}) {
  try {
    parse_csv(csv, "my.csv", o, nullptr);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TsCsv, ReadsNumbersAndChosenColumns) {
  const Series s = parse_csv("t,a,b,c\n1.5,10,20,30\n2.5,11,21,31\n3.5,-1e2,22,32\n", "x.csv",
                             {{"c", "a"}, ""}, nullptr);
  ASSERT_EQ(s.names, (std::vector<std::string>{"c", "a"}));
  ASSERT_EQ(s.length(), 3);
  EXPECT_EQ(s.time, (std::vector<double>{1.5, 2.5, 3.5}));
  EXPECT_EQ(s.values[0], (std::vector<float>{30, 31, 32}));
  EXPECT_EQ(s.values[1], (std::vector<float>{10, 11, -100}));
  EXPECT_EQ(s.time_text[2], "3.5");
}

TEST(TsCsv, ReadsIsoDates) {
  const Series s =
      parse_csv("date,v\n2020-02-28,1\n2020-02-29,2\n2020-03-01T06:30,3\n", "d.csv", {}, nullptr);
  // 2020 is a leap year: one day between each date, then 6.5 hours.
  EXPECT_DOUBLE_EQ(s.time[1] - s.time[0], 86400);
  EXPECT_DOUBLE_EQ(s.time[2] - s.time[1], 86400 + 6.5 * 3600);
  // 1970-01-01 is the epoch.
  const Series e = parse_csv("date,v\n1970-01-01,1\n", "e.csv", {}, nullptr);
  EXPECT_DOUBLE_EQ(e.time[0], 0);
}

TEST(TsCsv, InterpolatesGapsLinearlyWithAWarningNeverZero) {
  std::vector<std::string> warnings;
  const Series s = parse_csv("t,a,b\n1,1,\n2,NA,5\n3,,6\n4,7,NA\n", "gaps.csv", {}, &warnings);
  // a: 1, _, _, 7 → 3 and 5 on the line; b: held at its ends (5 first, 6 last).
  EXPECT_EQ(s.values[0], (std::vector<float>{1, 3, 5, 7}));
  EXPECT_EQ(s.values[1], (std::vector<float>{5, 5, 6, 6}));
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("'a'"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("2 missing"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[1].find("'b'"), std::string::npos) << warnings[1];
  EXPECT_NE(warnings[1].find("2 missing"), std::string::npos) << warnings[1];
}

TEST(TsCsv, MalformedInputIsAnErrorNamingFileAndLine) {
  EXPECT_NE(error_of("t,a\n1,2\n2,3,4\n").find("my.csv: line 3"), std::string::npos);
  EXPECT_NE(error_of("t,a\n1,2\n2,abc\n").find("my.csv: line 3"), std::string::npos);
  EXPECT_NE(error_of("t,a\n1,2\n\n2x,3\n").find("my.csv: line 4"), std::string::npos);
  EXPECT_NE(error_of("t,a\n2,2\n1,3\n").find("line 3"), std::string::npos);  // time goes back
  EXPECT_NE(error_of("t,a\n1,NA\n2,\n").find("no values"), std::string::npos);
  EXPECT_NE(error_of("t,a\n1,2\n", {{"zz"}, ""}).find("no column named 'zz'"), std::string::npos);
  EXPECT_NE(error_of("").find("empty"), std::string::npos);
  EXPECT_NE(error_of("t,a\n").find("no data rows"), std::string::npos);
  EXPECT_NE(error_of("t,a\n1,inf\n").find("line 2"), std::string::npos);
}

TEST(TsSplit, IsChronological70_10_20) {
  const Split s = chronological_split(1000);
  EXPECT_EQ(s.train_end, 700);
  EXPECT_EQ(s.val_end, 800);
  EXPECT_EQ(s.length, 1000);
}

TEST(TsSharedData, TheThreeSeriesLoadWithTheReadmeLengths) {
  const std::pair<const char*, std::pair<int64_t, size_t>> files[] = {
      {"data/timeseries/eustockmarkets_daily.csv", {1860, 4}},
      {"data/timeseries/sunspot_monthly.csv", {3177, 1}},
      {"data/timeseries/taylor_halfhourly_electricity.csv", {4032, 1}}};
  for (auto [rel, want] : files) {
    RWKV7_REQUIRE_SHARED(path, rel);
    std::vector<std::string> warnings;
    const Series s = read_csv(path, {}, &warnings);
    EXPECT_EQ(s.length(), want.first) << rel;
    EXPECT_EQ(s.values.size(), want.second) << rel;
  }
}

TEST(TsRevin, RoundTripsAndNormalises) {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> d(5, 3);
  std::vector<float> x(37), xn(37), back(37);
  for (float& v : x) v = d(rng);
  const RevinStats st = revin_stats(x);
  revin_normalise(x, st, xn);
  double mean = 0, sq = 0;
  for (float v : xn) mean += v;
  mean /= double(xn.size());
  for (float v : xn) sq += (v - mean) * (v - mean);
  EXPECT_NEAR(mean, 0, 1e-5);
  EXPECT_NEAR(std::sqrt(sq / double(xn.size())), 1, 1e-4);
  revin_denormalise(xn, st, back);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(back[i], x[i], 1e-5 * std::abs(x[i]) + 1e-5);
}

TEST(TsPatch, ShapesAndPlacement) {
  ModelOptions o;
  o.lookback = 20, o.patch = 6, o.stride = 2;
  ASSERT_EQ(patch_count(o), 8);  // patches start at 0, 2, ..., 14; the last ends at 20
  std::vector<float> x(20), out(size_t(8 * 6));
  for (int i = 0; i < 20; ++i) x[size_t(i)] = float(i * i);
  patchify(x, 6, 2, out);
  for (int n = 0; n < 8; ++n)
    for (int j = 0; j < 6; ++j) EXPECT_EQ(out[size_t(n * 6 + j)], float((2 * n + j) * (2 * n + j)));
  EXPECT_EQ(out.back(), x.back());
  o.stride = 4;  // 20 - 6 = 14 is not a multiple of 4
  EXPECT_THROW(patch_count(o), Error);
  o.patch = 21;
  EXPECT_THROW(patch_count(o), Error);
  o = ModelOptions{};
  o.lookback = 336, o.patch = 16, o.stride = 8;
  EXPECT_EQ(patch_count(o), 41);  // RWKV-TS's setting
}

TEST(TsBaselines, NaiveAndSeasonalNaive) {
  std::vector<float> w(10), out(7);
  for (int i = 0; i < 10; ++i) w[size_t(i)] = float(100 + i);
  naive_forecast(w, out);
  for (float v : out) EXPECT_EQ(v, 109);
  // Season 3: the forecast for point 10 + h is the latest point before 10 at the same phase.
  seasonal_naive_forecast(w, 3, out);
  for (int h = 0; h < 7; ++h) {
    int src = 10 + h;
    while (src >= 10) src -= 3;
    EXPECT_EQ(out[size_t(h)], w[size_t(src)]) << h;
  }
  EXPECT_THROW(seasonal_naive_forecast(w, 11, out), Error);
}

TEST(TsDlinear, MovingAverageRepeatsTheEnds) {
  const std::vector<float> w{1, 2, 4, 8, 16};
  std::vector<float> trend(5);
  moving_average(w, 3, trend);
  EXPECT_FLOAT_EQ(trend[0], (1 + 1 + 2) / 3.0f);
  EXPECT_FLOAT_EQ(trend[2], (2 + 4 + 8) / 3.0f);
  EXPECT_FLOAT_EQ(trend[4], (8 + 16 + 16) / 3.0f);
  EXPECT_THROW(moving_average(w, 4, trend), Error);
}

// A series with an exact linear forecast (x = sin(2πt/12) + 0.05·t: the sine obeys
// x_t = 2cos(2π/12)·x_{t-1} - x_{t-2} and the line is linear): DLinear, trained by the
// project's AdamW, must find one; the naive forecast is far off.
TEST(TsDlinear, LearnsASeriesWithAKnownLinearAnswer) {
  const int64_t L = 24, H = 6, T = 400;
  std::vector<float> x(T);
  for (int64_t t = 0; t < T; ++t)
    x[size_t(t)] = float(std::sin(2 * M_PI * double(t) / 12) + 0.05 * double(t - 200) / 10);
  auto be = make_reference_backend();
  TensorMap p = dlinear_init(L, H), g = dlinear_init(L, H);
  train::AdamWOptions ao;
  ao.weight_decay = 0;
  train::AdamW adam(p, ao);
  train::Schedule sched{1e-2, 1e-3, 10, 600};
  auto windows = [&](int64_t from, int64_t to, std::vector<float>& xs, std::vector<float>& ys) {
    xs.clear(), ys.clear();
    for (int64_t t = from; t < to; ++t) {
      xs.insert(xs.end(), x.begin() + (t - L), x.begin() + t);
      ys.insert(ys.end(), x.begin() + t, x.begin() + t + H);
    }
  };
  std::vector<float> xs, ys, pred;
  windows(L, 300, xs, ys);
  const int64_t B = int64_t(ys.size()) / H;
  for (int64_t s = 0; s < 600; ++s) {
    for (auto& [n, t] : g) std::fill(t.data.begin(), t.data.end(), 0.0f);
    dlinear_run(p, 5, xs, B, *be, pred, ys, &g);
    adam.step(p, g, sched.lr_at(s));
  }
  windows(300, T - H, xs, ys);  // later windows: the trend has moved on
  dlinear_run(p, 5, xs, int64_t(ys.size()) / H, *be, pred);
  double mse = 0, naive = 0;
  for (size_t i = 0; i < ys.size(); ++i) {
    mse += (pred[i] - ys[i]) * (pred[i] - ys[i]);
    const float last = xs[(i / size_t(H)) * size_t(L) + size_t(L - 1)];
    naive += (last - ys[i]) * (last - ys[i]);
  }
  mse /= double(ys.size()), naive /= double(ys.size());
  EXPECT_LT(mse, 1e-3) << "naive " << naive;
  EXPECT_GT(naive, 0.3);
}

// DLinear with both layers picking the last point (weight e_L, bias 0) is the naive forecast:
// seasonal + trend = the window itself.
TEST(TsDlinear, LastPointWeightsGiveTheNaiveForecast) {
  const int64_t L = 9, H = 4;
  TensorMap p = dlinear_init(L, H);
  for (const char* w : {"dlinear.seasonal.weight", "dlinear.trend.weight"}) {
    FloatTensor& t = p.at(w);
    std::fill(t.data.begin(), t.data.end(), 0.0f);
    for (int64_t h = 0; h < H; ++h) t.data[size_t(h * L + L - 1)] = 1;
  }
  std::vector<float> x{3, 1, 4, 1, 5, 9, 2, 6, 5}, pred, naive(H);
  auto be = make_reference_backend();
  dlinear_run(p, 3, x, 1, *be, pred);
  naive_forecast(x, naive);
  for (int64_t h = 0; h < H; ++h) EXPECT_FLOAT_EQ(pred[size_t(h)], naive[size_t(h)]);
}

}  // namespace
}  // namespace rwkv7::ts
