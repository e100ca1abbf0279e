// Decode kernels for Q8_0 / Q4_0 weights read in place (matvec_q8_0 / matvec_q4_0) on every
// Highway target this machine runs, against their scalar twins and against the dequantised
// fp32 product with a tolerance from the Q8_0 quantisation of the activations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/quant_kernels.hpp"
#include "core/quant.hpp"
#include "hwy/targets.h"

namespace rwkv7 {
namespace {

struct Activation {  // one row quantised to Q8_0, in the kernels' form
  std::vector<float> f;
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int32_t> neg_s4;
  cpu::Q8Act view() const { return {q.data(), d.data(), neg_s4.data(), d.size()}; }
};

Activation make_activation(size_t nb, std::mt19937& rng) {
  Activation a;
  std::normal_distribution<float> dist(0.0f, 0.7f);
  a.f.resize(nb * 32);
  for (float& v : a.f) v = dist(rng);
  a.q.resize(nb * 32);
  a.d.resize(nb);
  a.neg_s4.resize(nb * 8);
  std::vector<unsigned char> blocks(row_bytes(DType::Q8_0, int64_t(nb * 32)));
  quantize_row_q8_0(a.f.data(), blocks.data(), int64_t(nb * 32));
  unpack_row_i8(DType::Q8_0, blocks.data(), a.q.data(), a.d.data(), int64_t(nb * 32));
  cpu::q8_act_lane_sums(a.q.data(), nb, a.neg_s4.data());
  return a;
}

// rows × nb blocks with `pad` spare bytes after each row. Even rows: quantised Gaussian
// values; odd rows: raw random bytes (Q8_0 reaches -128, every nibble appears) with a random
// f16 scale, so nothing depends on the quantiser's value range.
std::vector<unsigned char> make_weights(DType t, size_t rows, size_t nb, size_t pad,
                                        std::mt19937& rng) {
  const size_t bb = quant_block_bytes(t), stride = nb * bb + pad;
  std::vector<unsigned char> w(rows * stride, 0xA5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<float> f(nb * 32);
  for (size_t r = 0; r < rows; ++r) {
    unsigned char* row = &w[r * stride];
    if (r % 2 == 0) {
      for (float& v : f) v = dist(rng);
      quantize_row(t, f.data(), row, int64_t(nb * 32));
      continue;
    }
    for (size_t b = 0; b < nb; ++b) {
      unsigned char* blk = row + b * bb;
      for (size_t i = 2; i < bb; ++i) blk[i] = uint8_t(byte(rng));
      const uint16_t h = f32_to_f16(std::ldexp(float(byte(rng) + 1), -12) * (b % 3 ? 1 : -1));
      __builtin_memcpy(blk, &h, 2);
    }
  }
  return w;
}

// Σ_b |int sum_b · scale_b| of row r in double: the magnitude the fp32 accumulation rounds.
double row_magnitude(DType t, const unsigned char* row, const Activation& a) {
  const size_t nb = a.d.size();
  std::vector<float> deq(nb * 32);
  dequantize_row(t, row, deq.data(), int64_t(nb * 32));
  double mag = 0;
  for (size_t b = 0; b < nb; ++b) {
    double s = 0;
    for (size_t i = 0; i < 32; ++i) s += double(deq[b * 32 + i]) * a.q[b * 32 + i];
    mag += std::fabs(s * a.d[b]);
  }
  return mag;
}

using MatvecFn = void (*)(const uint8_t*, size_t, size_t, const cpu::Q8Act&, float*);

void check_target(DType t, MatvecFn fast, MatvecFn ref, const char* target) {
  std::mt19937 rng(uint32_t(t == DType::Q8_0 ? 11 : 12));
  for (size_t nb : {1, 2, 3, 15, 16, 17, 24, 33, 96}) {
    for (size_t rows : {1, 2, 3, 4, 5, 7, 13}) {
      for (size_t pad : {0, 6}) {
        const Activation a = make_activation(nb, rng);
        const auto w = make_weights(t, rows, nb, pad, rng);
        const size_t stride = nb * quant_block_bytes(t) + pad;
        std::vector<float> yf(rows + 1, -7.0f), yr(rows, -7.0f);
        fast(w.data(), stride, rows, a.view(), yf.data());
        ref(w.data(), stride, rows, a.view(), yr.data());
        EXPECT_EQ(yf[rows], -7.0f) << "wrote past the last row";
        for (size_t r = 0; r < rows; ++r) {
          const double mag = row_magnitude(t, &w[r * stride], a);
          // Same exact int32 block sums; only the fp32 scale products and summation order differ.
          ASSERT_LE(std::fabs(double(yf[r]) - yr[r]), 4e-6 * mag + 1e-30)
              << dtype_name(t) << " " << target << " nb " << nb << " rows " << rows << " pad "
              << pad << " row " << r << ": " << yf[r] << " vs " << yr[r];
        }
      }
    }
  }
}

TEST(QuantKernel, MatvecMatchesScalarTwinOnEveryTarget) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    check_target(DType::Q8_0, cpu::matvec_q8_0, cpu::matvec_q8_0_ref, hwy::TargetName(target));
    check_target(DType::Q4_0, cpu::matvec_q4_0, cpu::matvec_q4_0_ref, hwy::TargetName(target));
  }
  hwy::SetSupportedTargetsForTest(0);
}

// quantize_act_q8 equals its scalar twin bit for bit, including roundf's halves away from zero
// (block 0: amax 127 → d = 1, x = ±k.5), an all-zero block and tiny scales.
TEST(QuantKernel, ActivationQuantiserMatchesScalarOnEveryTarget) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    std::mt19937 rng(21);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (size_t nb : {1, 3, 24, 96}) {
      std::vector<float> x(nb * 32);
      for (float& v : x) v = dist(rng);
      for (size_t j = 0; j < 32; ++j) x[j] = (j % 2 ? -1.0f : 1.0f) * (float(j) + 0.5f);
      x[0] = 127.0f;
      if (nb > 1)
        for (size_t j = 0; j < 32; ++j) x[32 + j] = 0.0f;
      if (nb > 2)
        for (size_t j = 0; j < 32; ++j) x[64 + j] *= 1e-6f;
      const size_t n = nb * 32;
      std::vector<unsigned char> blocks(row_bytes(DType::Q8_0, int64_t(n)));
      quantize_row_q8_0(x.data(), blocks.data(), int64_t(n));
      std::vector<int8_t> q0(n), q1(n, 99);
      std::vector<float> d0(nb), d1(nb, -1.0f);
      std::vector<int32_t> s0(nb * 8), s1(nb * 8, 12345);
      unpack_row_i8(DType::Q8_0, blocks.data(), q0.data(), d0.data(), int64_t(n));
      cpu::q8_act_lane_sums(q0.data(), nb, s0.data());
      cpu::quantize_act_q8(x.data(), nb, q1.data(), d1.data(), s1.data());
      EXPECT_EQ(q1, q0) << hwy::TargetName(target) << " nb " << nb;
      EXPECT_EQ(d1, d0) << hwy::TargetName(target) << " nb " << nb;
      EXPECT_EQ(s1, s0) << hwy::TargetName(target) << " nb " << nb;
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

// The scalar twin against the dequantised fp32 product: x̂ differs from x by ≤ e_b per element
// in block b (d/2 rounding plus f16 rounding of d, as in quant_test.cpp), so
// |y - Σ w_i x_i| ≤ Σ_i |w_i|·e_b(i) + fp32 rounding.
TEST(QuantKernel, ScalarTwinMatchesDequantisedProduct) {
  std::mt19937 rng(5);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    const auto ref = t == DType::Q8_0 ? cpu::matvec_q8_0_ref : cpu::matvec_q4_0_ref;
    for (size_t nb : {1, 7, 24}) {
      const size_t rows = 9, n = nb * 32, stride = row_bytes(t, int64_t(n));
      const Activation a = make_activation(nb, rng);
      const auto w = make_weights(t, rows, nb, 0, rng);
      std::vector<float> y(rows), wd(n);
      ref(w.data(), stride, rows, a.view(), y.data());
      for (size_t r = 0; r < rows; ++r) {
        dequantize_row(t, &w[r * stride], wd.data(), int64_t(n));
        double exact = 0, bound = 0, mag = 0;
        for (size_t b = 0; b < nb; ++b) {
          double amax = 0;
          for (size_t i = 0; i < 32; ++i) amax = std::max(amax, double(std::fabs(a.f[b * 32 + i])));
          const double d = amax / 127.0;
          const double e = d * 0.5 + 127 * std::max(d / 2048, std::ldexp(1.0, -25));
          for (size_t i = 0; i < 32; ++i) {
            const double wi = wd[b * 32 + i], xi = a.f[b * 32 + i];
            exact += wi * xi;
            bound += std::fabs(wi) * e;
            mag += std::fabs(wi * xi);
          }
        }
        ASSERT_LE(std::fabs(y[r] - exact), bound * 1.001 + 1e-5 * mag + 1e-30)
            << dtype_name(t) << " nb " << nb << " row " << r;
      }
    }
  }
}

}  // namespace
}  // namespace rwkv7
