// Q8_0 / Q4_0 formats: ggml block layout bit for bit, round-trip error bounds, fast (int8)
// matmul against the reference (dequantise + double) with a tolerance from the format.
#include "core/quant.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/tensor.hpp"
#include "core/thread_pool.hpp"
#include "ops/ops.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<unsigned char> quantize(DType t, const std::vector<float>& x) {
  std::vector<unsigned char> q(row_bytes(t, int64_t(x.size())));
  quantize_row(t, x.data(), q.data(), int64_t(x.size()));
  return q;
}

TEST(QuantFormat, SizesAndNames) {
  EXPECT_EQ(row_bytes(DType::Q8_0, 64), 68u);
  EXPECT_EQ(row_bytes(DType::Q4_0, 64), 36u);
  EXPECT_EQ(row_bytes(DType::F16, 64), 128u);
  EXPECT_THROW(row_bytes(DType::Q8_0, 48), Error);
  EXPECT_EQ(dtype_name(DType::Q8_0), "q8_0");
  EXPECT_EQ(dtype_name(DType::Q4_0), "q4_0");
  EXPECT_TRUE(is_quantized(DType::Q4_0));
  EXPECT_FALSE(is_quantized(DType::BF16));
  TensorView v{DType::Q4_0, {3, 64}, nullptr};
  EXPECT_EQ(v.nbytes(), 3u * 36u);
}

// Hand-computed: max |x| = 127 → d = 1 (f16 0x3C00); q = roundf(x) (halves away from zero).
TEST(QuantFormat, Q8_0BlockBitExact) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[size_t(j)] = float(j);
  x[0] = 127;
  x[1] = -127;
  x[2] = 0.5f;
  x[3] = -0.5f;
  x[4] = 2.49f;
  x[5] = -3.5f;
  std::vector<unsigned char> want = {0x00, 0x3C, 0x7F, 0x81, 0x01, 0xFF, 0x02, 0xFC};
  for (int j = 6; j < 32; ++j) want.push_back(uint8_t(j));
  EXPECT_EQ(quantize(DType::Q8_0, x), want);
}

// Hand-computed: block 1 has its largest magnitude at -8 → d = -8/-8 = 1; block 2 at +8 →
// d = -1 (f16 0xBC00). q = min(15, trunc(x/d + 8.5)); byte j = q[j] | q[j+16] << 4.
TEST(QuantFormat, Q4_0BlockBitExact) {
  std::vector<float> x(64, 0.0f);
  x[0] = -8;
  x[1] = 7;
  x[2] = 7.4f;
  x[3] = 0;
  x[4] = -0.5f;
  x[5] = -0.6f;
  x[16] = 3;
  x[17] = -3;
  x[32] = 8;
  x[33] = -8;  // 16.5 → 16, clamped to 15: dequantises to -7
  std::vector<unsigned char> want = {0x00, 0x3C, 0xB0, 0x5F, 0x8F, 0x88, 0x88, 0x87};
  for (int j = 6; j < 16; ++j) want.push_back(0x88);
  for (unsigned char b : {0x00, 0xBC, 0x80, 0x8F}) want.push_back(b);
  for (int j = 2; j < 16; ++j) want.push_back(0x88);
  auto q = quantize(DType::Q4_0, x);
  EXPECT_EQ(q, want);
  std::vector<float> back(64);
  dequantize_row(DType::Q4_0, q.data(), back.data(), 64);
  EXPECT_EQ(back[0], -8.0f);
  EXPECT_EQ(back[1], 7.0f);
  EXPECT_EQ(back[5], -1.0f);
  EXPECT_EQ(back[32], 8.0f);
  EXPECT_EQ(back[33], -7.0f);
  EXPECT_EQ(dequantize_element(DType::Q4_0, q.data(), 17), -3.0f);
  EXPECT_EQ(load_as_f32(DType::Q4_0, q.data(), 33), -7.0f);
}

TEST(QuantFormat, ZeroBlockAndUnpack) {
  std::vector<float> x(32, 0.0f);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    auto q = quantize(t, x);
    std::vector<float> back(32, 1.0f);
    dequantize_row(t, q.data(), back.data(), 32);
    for (float v : back) EXPECT_EQ(v, 0.0f);
  }
  auto y = random_vec(96, 5);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    auto q = quantize(t, y);
    std::vector<int8_t> qi(96);
    std::vector<float> d(3), back(96);
    unpack_row_i8(t, q.data(), qi.data(), d.data(), 96);
    dequantize_row(t, q.data(), back.data(), 96);
    for (int i = 0; i < 96; ++i)
      EXPECT_EQ(back[size_t(i)], d[size_t(i / 32)] * float(qi[size_t(i)]));
  }
}

// |x - x̂| ≤ d/2 from rounding plus |q|·|d - f16(d)|, where f16 rounding of d is ≤ d·2^-11
// (normal) or 2^-25 (subnormal, d < 2^-14): |q| ≤ 127 for Q8_0; Q4_0: the value opposite the
// extreme may clamp from 8 to 7 steps: ≤ |d|, with |q| ≤ 8.
TEST(QuantRoundTrip, ErrorBounds) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    auto x = random_vec(32 * 25, seed, seed % 3 == 0 ? 1e-3f : 2.0f);
    if (seed == 7) x[100] = 50.0f;  // an outlier inflates only its own block
    for (DType t : {DType::Q8_0, DType::Q4_0}) {
      auto q = quantize(t, x);
      std::vector<float> back(x.size());
      dequantize_row(t, q.data(), back.data(), int64_t(x.size()));
      for (size_t b = 0; b < x.size() / 32; ++b) {
        float amax = 0;
        for (size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
        const float d = t == DType::Q8_0 ? amax / 127 : amax / 8;
        const float f16_err = std::max(d / 2048, std::ldexp(1.0f, -25));
        const float bound = t == DType::Q8_0 ? d * 0.5f + 127 * f16_err : d + 8 * f16_err;
        for (size_t j = 0; j < 32; ++j) {
          ASSERT_LE(std::fabs(x[b * 32 + j] - back[b * 32 + j]), bound * 1.0001f + 1e-30f)
              << dtype_name(t) << " seed " << seed << " block " << b << " j " << j;
        }
      }
    }
  }
}

// The fast path quantises x to Q8_0 per block: each |x_i - x̂_i| ≤ e_b (bound above), so
// |y_fast - y_ref| ≤ Σ_i |w_i|·e_b(i) plus fp32 accumulation (relative 1e-5 of Σ|w_i x_i|).
TEST(QuantMatmul, FastMatchesReference) {
  ThreadPool pool(2);
  auto fast = make_cpu_backend(&pool);
  auto ref = make_reference_backend();
  uint32_t seed = 100;
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    for (int64_t cols : {32, 64, 800}) {
      for (int64_t rows : {1, 7, 67}) {
        for (int64_t count : {1, 3, 70}) {
          auto wf = random_vec(size_t(rows * cols), ++seed);
          auto x = random_vec(size_t(count * cols), ++seed, 0.5f);
          std::vector<unsigned char> wq(size_t(rows) * row_bytes(t, cols));
          for (int64_t r = 0; r < rows; ++r)
            quantize_row(t, &wf[size_t(r * cols)], &wq[size_t(r) * row_bytes(t, cols)], cols);
          Matrix m{t, rows, cols, wq.data()};
          std::vector<float> yf(size_t(count * rows)), yr(yf.size());
          fast->matmul({m, x.data(), yf.data(), count});
          ref->matmul({m, x.data(), yr.data(), count});
          std::vector<float> wd(wf.size());
          dequantize_row(t, wq.data(), wd.data(), rows * cols);
          for (int64_t s = 0; s < count; ++s) {
            const float* xs = &x[size_t(s * cols)];
            for (int64_t o = 0; o < rows; ++o) {
              double bound = 0, mag = 0;
              for (int64_t b = 0; b < cols / 32; ++b) {
                float amax = 0;
                for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xs[b * 32 + j]));
                const double d = amax / 127.0;
                const double e = d * 0.5 + 127 * std::max(d / 2048, std::ldexp(1.0, -25));
                for (int j = 0; j < 32; ++j) {
                  const double w = std::fabs(wd[size_t(o * cols + b * 32 + j)]);
                  bound += w * e;
                  mag += w * std::fabs(xs[b * 32 + j]);
                }
              }
              const size_t i = size_t(s * rows + o);
              ASSERT_LE(std::fabs(yf[i] - yr[i]), bound * 1.001 + 1e-5 * mag + 1e-30)
                  << dtype_name(t) << " cols " << cols << " rows " << rows << " count " << count
                  << " at " << s << "," << o;
            }
          }
        }
      }
    }
  }
}

// The reference is exact dequantisation + double accumulation: compare with a plain loop.
TEST(QuantMatmul, ReferenceIsDequantisedProduct) {
  auto ref = make_reference_backend();
  const int64_t rows = 5, cols = 96, count = 2;
  auto wf = random_vec(size_t(rows * cols), 9);
  auto x = random_vec(size_t(count * cols), 10);
  std::vector<unsigned char> wq(size_t(rows) * row_bytes(DType::Q4_0, cols));
  quantize_row(DType::Q4_0, wf.data(), wq.data(), rows * cols);
  std::vector<float> wd(wf.size()), y(size_t(rows * count));
  dequantize_row(DType::Q4_0, wq.data(), wd.data(), rows * cols);
  ref->matmul({Matrix{DType::Q4_0, rows, cols, wq.data()}, x.data(), y.data(), count});
  for (int64_t s = 0; s < count; ++s)
    for (int64_t o = 0; o < rows; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < cols; ++i)
        acc += double(wd[size_t(o * cols + i)]) * x[size_t(s * cols + i)];
      EXPECT_FLOAT_EQ(y[size_t(s * rows + o)], float(acc));
    }
}

}  // namespace
}  // namespace rwkv7
