// Compressed states: round trips per method, ratios from byte counts computed here, the
// choice of ranks, the serialised form, and hostile input.
#include "rwkv7/state_compress.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "io/io_test_util.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

constexpr int64_t L = 2, H = 3, N = 16, C = H * N;

// A state whose head (l, h) has WKV of exact rank h + 1 (sum of outer products), plus random
// shifts; `noise` adds a full-rank part.
State synthetic_state(uint32_t seed, float noise = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  State s;
  s.n_layer = L, s.n_embd = C, s.n_head = H, s.head_size = N;
  s.att_shift.resize(size_t(L * C));
  s.ffn_shift.resize(size_t(L * C));
  for (float& x : s.att_shift) x = nd(rng);
  for (float& x : s.ffn_shift) x = nd(rng);
  s.wkv.assign(size_t(L * H * N * N), 0.0f);
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h) {
      float* S = &s.wkv[size_t((l * H + h) * N * N)];
      for (int64_t c = 0; c <= h; ++c) {
        std::vector<float> a(static_cast<size_t>(N)), b(static_cast<size_t>(N));
        for (float& x : a) x = nd(rng);
        for (float& x : b) x = nd(rng) * float(3 - c);
        for (int64_t i = 0; i < N; ++i)
          for (int64_t j = 0; j < N; ++j) S[i * N + j] += a[size_t(i)] * b[size_t(j)];
      }
      for (int64_t i = 0; i < N * N; ++i) S[i] += noise * nd(rng);
    }
  s.tokens_consumed = 1234;
  s.model_fingerprint = "fp";
  return s;
}

double raw_bytes() { return double((2 * L * C + L * H * N * N) * 4); }

CompressOptions opts(const std::string& method, int64_t rank = -1, double energy = -1,
                     double ratio = -1) {
  CompressOptions o;
  o.method = method, o.rank = rank, o.energy = energy, o.ratio = ratio;
  return o;
}

TEST(StateCompress, F32IsExactAndRatioOne) {
  State s = synthetic_state(1, 0.1f);
  auto cs = compress_state(s, opts("f32"));
  EXPECT_EQ(cs.ratio(), 1.0);
  State back = decompress_state(cs);
  EXPECT_EQ(back.wkv, s.wkv);
  EXPECT_EQ(back.att_shift, s.att_shift);
  EXPECT_EQ(back.tokens_consumed, 1234);
  EXPECT_EQ(back.model_fingerprint, "fp");
}

TEST(StateCompress, SixteenBitFormsRoundWithinHalfAnUlp) {
  State s = synthetic_state(2, 0.1f);
  for (const char* m : {"bf16", "fp16"}) {
    auto cs = compress_state(s, opts(m));
    EXPECT_DOUBLE_EQ(cs.ratio(), 0.5) << m;  // every number in 2 bytes instead of 4
    State back = decompress_state(cs);
    const double rel = std::string(m) == "bf16" ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
    for (size_t i = 0; i < s.wkv.size(); ++i)
      ASSERT_LE(std::fabs(back.wkv[i] - s.wkv[i]), rel * std::fabs(s.wkv[i]) + 1e-7) << m << i;
    for (size_t i = 0; i < s.att_shift.size(); ++i)
      ASSERT_LE(std::fabs(back.att_shift[i] - s.att_shift[i]), rel * std::fabs(s.att_shift[i]));
  }
  State big = synthetic_state(3);
  big.wkv[5] = 1e6f;  // beyond fp16: saturates instead of becoming infinite
  State back = decompress_state(compress_state(big, opts("fp16")));
  EXPECT_EQ(back.wkv[5], 65504.0f);
}

TEST(StateCompress, Int8RowsErrorAndRatio) {
  State s = synthetic_state(4, 0.1f);
  auto cs = compress_state(s, opts("int8"));
  // int8 WKV + one fp32 scale per row of N, shifts in bf16.
  const double want = double(L * H * N * N * 1 + L * H * N * 4 + 2 * L * C * 2) / raw_bytes();
  EXPECT_DOUBLE_EQ(cs.ratio(), want);
  State back = decompress_state(cs);
  for (int64_t row = 0; row < L * H * N; ++row) {
    float mx = 0;
    for (int64_t j = 0; j < N; ++j) mx = std::max(mx, std::fabs(s.wkv[size_t(row * N + j)]));
    for (int64_t j = 0; j < N; ++j) {
      const size_t i = size_t(row * N + j);
      ASSERT_LE(std::fabs(back.wkv[i] - s.wkv[i]), 0.5f * mx / 127.0f * 1.0001f) << i;
    }
  }
  CompressOptions exact = opts("int8");
  exact.exact_shift = true;
  auto ce = compress_state(s, exact);
  EXPECT_DOUBLE_EQ(ce.ratio(), double(L * H * N * N + L * H * N * 4 + 2 * L * C * 4) / raw_bytes());
  EXPECT_EQ(decompress_state(ce).att_shift, s.att_shift);
}

TEST(StateCompress, LowRankRebuildsExactlyLowRankHeadsAndCountsItsBytes) {
  State s = synthetic_state(5);  // head h has rank h + 1 <= 3
  auto cs = compress_state(s, opts("lowrank", 3));
  EXPECT_EQ(cs.detail, "rank 3");
  // shifts bf16 + one i32 rank per head + two fp32 factors of N per component
  EXPECT_DOUBLE_EQ(cs.ratio(),
                   double(2 * L * C * 2 + L * H * 4 + L * H * 3 * 2 * N * 4) / raw_bytes());
  State back = decompress_state(cs);
  for (size_t i = 0; i < s.wkv.size(); ++i)
    ASSERT_NEAR(back.wkv[i], s.wkv[i], 1e-4 * (1 + std::fabs(s.wkv[i]))) << i;
  // Rank 1 keeps head 0 (rank 1) exactly and loses the others.
  State r1 = decompress_state(compress_state(s, opts("lowrank", 1)));
  double err0 = 0, err2 = 0;
  for (int64_t i = 0; i < N * N; ++i) {
    err0 = std::max(err0, double(std::fabs(r1.wkv[size_t(i)] - s.wkv[size_t(i)])));
    err2 = std::max(
        err2, double(std::fabs(r1.wkv[size_t(2 * N * N + i)] - s.wkv[size_t(2 * N * N + i)])));
  }
  EXPECT_LT(err0, 1e-4);
  EXPECT_GT(err2, 1e-2);
  // int8 factors: 1 byte per value + an fp32 scale per factor vector.
  auto c8 = compress_state(s, opts("lowrank-int8", 3));
  EXPECT_DOUBLE_EQ(c8.ratio(),
                   double(2 * L * C * 2 + L * H * 4 + L * H * 3 * (2 * N + 8)) / raw_bytes());
  auto cb = compress_state(s, opts("lowrank-bf16", 2));
  EXPECT_DOUBLE_EQ(cb.ratio(),
                   double(2 * L * C * 2 + L * H * 4 + L * H * 2 * 2 * N * 2) / raw_bytes());
}

TEST(StateCompress, AdaptiveRankFollowsEachHeadsSpectrum) {
  State s = synthetic_state(6);  // ranks 1, 2, 3 per layer: 12 components in all
  auto cs = compress_state(s, opts("adaptive", -1, 0.999999));
  EXPECT_NE(cs.detail.find("ranks 1..3"), std::string::npos) << cs.detail;
  EXPECT_DOUBLE_EQ(cs.ratio(), double(2 * L * C * 2 + L * H * 4 + 12 * 2 * N * 4) / raw_bytes());
  State back = decompress_state(cs);
  for (size_t i = 0; i < s.wkv.size(); ++i)
    ASSERT_NEAR(back.wkv[i], s.wkv[i], 1e-4 * (1 + std::fabs(s.wkv[i]))) << i;
}

TEST(StateCompress, TargetRatioPicksTheLargestRankThatFits) {
  State s = synthetic_state(7, 0.3f);
  auto bytes_at = [](int64_t r, int64_t factor_bytes, int64_t extra) {
    return double(2 * L * C * 2 + L * H * 4 + L * H * r * (2 * N * factor_bytes + extra));
  };
  for (double target : {0.1, 0.3, 0.5}) {
    auto cs = compress_state(s, opts("lowrank", -1, -1, target));
    int64_t r = 0;
    while (r < N && bytes_at(r + 1, 4, 0) <= target * raw_bytes()) ++r;
    EXPECT_EQ(cs.detail, "rank " + std::to_string(r)) << target;
    EXPECT_LE(cs.ratio(), target);
    auto c8 = compress_state(s, opts("lowrank-int8", -1, -1, target));
    int64_t r8 = 0;
    while (r8 < N && bytes_at(r8 + 1, 1, 8) <= target * raw_bytes()) ++r8;
    EXPECT_EQ(c8.detail, "rank " + std::to_string(r8)) << target;
    for (const char* m : {"adaptive", "adaptive-bf16", "adaptive-int8"}) {
      auto ca = compress_state(s, opts(m, -1, -1, target));
      EXPECT_LE(ca.ratio(), target) << m;
      EXPECT_GT(ca.ratio(), 0.5 * target) << m << ": the budget should be mostly used";
    }
  }
}

TEST(StateCompress, OptionsAreChecked) {
  State s = synthetic_state(8);
  testing::expect_error([&] { compress_state(s, opts("zip")); }, {"'zip'", "adaptive-int8"});
  testing::expect_error([&] { compress_state(s, opts("lowrank")); }, {"rank or ratio"});
  testing::expect_error([&] { compress_state(s, opts("adaptive", -1, 1.5)); }, {"energy"});
  testing::expect_error([&] { compress_state(s, opts("bf16", -1, -1, 0.3)); }, {"fixed ratio"});
  testing::expect_error([&] { compress_state(s, opts("lowrank", -1, -1, 0)); }, {"ratio"});
  s.wkv[3] = NAN;
  testing::expect_error([&] { compress_state(s, opts("bf16")); }, {"NaN"});
}

TEST(StateCompress, SerialisedFormRoundTripsEveryMethod) {
  State s = synthetic_state(9, 0.2f);
  for (const std::string& m : state_compression_methods()) {
    CompressOptions o = opts(m);
    if (m.rfind("lowrank", 0) == 0) o.rank = 4;
    if (m.rfind("adaptive", 0) == 0) o.energy = 0.9;
    auto cs = compress_state(s, o);
    const std::string bytes = cs.serialize();
    auto back = CompressedState::deserialize(bytes, "mem");
    EXPECT_EQ(back.method, m);
    EXPECT_EQ(back.bytes(), cs.bytes()) << m;
    EXPECT_EQ(back.tokens_consumed, 1234);
    EXPECT_EQ(back.detail, cs.detail);
    EXPECT_EQ(decompress_state(back).wkv, decompress_state(cs).wkv) << m;
  }
}

TEST(StateCompress, HostileSerialisedFormsAreRefusedNamingTheOrigin) {
  State s = synthetic_state(10);
  auto good = compress_state(s, opts("lowrank-int8", 2));
  auto mutate = [&](auto f) {
    CompressedState c = good;
    f(c);
    return c.serialize();
  };
  auto find = [](CompressedState& c, const std::string& name) -> CompressedState::Part& {
    for (auto& p : c.parts)
      if (p.name == name) return p;
    throw std::runtime_error("no part " + name);
  };
  testing::expect_error([&] { CompressedState::deserialize("garbage!", "x.state"); }, {"x.state"});
  testing::expect_error([&] { CompressedState::deserialize("", "x.state"); }, {"x.state"});
  // rank beyond N
  auto big_rank = mutate([&](CompressedState& c) {
    int32_t r = 1000;
    std::memcpy(find(c, "state.wkv.rank").data.data(), &r, 4);
  });
  testing::expect_error([&] { CompressedState::deserialize(big_rank, "x.state"); },
                        {"x.state", "state.wkv.rank", "1000"});
  // ranks that do not add up to the factor rows
  auto short_rank = mutate([&](CompressedState& c) {
    int32_t r = 1;
    std::memcpy(find(c, "state.wkv.rank").data.data(), &r, 4);
  });
  testing::expect_error([&] { CompressedState::deserialize(short_rank, "x.state"); },
                        {"x.state", "state.wkv.u"});
  // a missing scale, an unknown method, a NaN scale, a negative scale
  auto no_scale = mutate([&](CompressedState& c) {
    std::erase_if(c.parts, [](const auto& p) { return p.name == "state.wkv.v_scale"; });
  });
  testing::expect_error([&] { CompressedState::deserialize(no_scale, "x.state"); },
                        {"x.state", "v_scale", "missing"});
  auto unknown = mutate([&](CompressedState& c) { c.method = "lowrank-int4"; });
  testing::expect_error([&] { CompressedState::deserialize(unknown, "x.state"); },
                        {"x.state", "lowrank-int4"});
  for (float bad : {NAN, -1.0f}) {
    auto nan_scale = mutate([&](CompressedState& c) {
      std::memcpy(find(c, "state.wkv.u_scale").data.data(), &bad, 4);
    });
    auto cs = CompressedState::deserialize(nan_scale, "x.state");
    testing::expect_error([&] { decompress_state(cs); }, {"state.wkv.u_scale", "element 0"});
  }
  // a huge claimed state from a few bytes
  CompressedState tiny = compress_state(s, opts("lowrank", 0));
  tiny.n_layer = 1 << 19;
  testing::expect_error([&] { decompress_state(tiny); }, {"stored bytes"});
  // a part with the wrong dtype for the method
  auto wrong_dtype = mutate([&](CompressedState& c) { c.method = "lowrank-bf16"; });
  testing::expect_error([&] { CompressedState::deserialize(wrong_dtype, "x.state"); },
                        {"x.state", "must be bf16"});
}

}  // namespace
}  // namespace rwkv7
