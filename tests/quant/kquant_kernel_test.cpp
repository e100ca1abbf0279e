// Decode kernels for the K-quants and Q5_0/Q5_1/IQ4_NL (matvec_kquant) on every Highway
// target this machine runs (AVX-512 VNNI, AVX3 and AVX2 paths, the portable one) against the
// scalar twin, and the twin against the dequantised fp32 product.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "backends/cpu/kquant_kernels.hpp"
#include "core/quant.hpp"
#include "hwy/targets.h"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

constexpr DType kTypes[] = {DType::Q4_K, DType::Q5_K, DType::Q6_K,
                            DType::Q5_0, DType::Q5_1, DType::IQ4_NL};

struct Activation {  // one row quantised to Q8_0, in the kernels' form
  std::vector<float> f, d, dsum;
  std::vector<int8_t> q;
  std::vector<int32_t> neg_s4;
  cpu::Q8Act view() const { return {q.data(), d.data(), neg_s4.data(), d.size(), dsum.data()}; }
};

Activation make_activation(size_t nb, std::mt19937& rng) {
  Activation a;
  std::normal_distribution<float> dist(0.0f, 0.7f);
  a.f.resize(nb * 32);
  for (float& v : a.f) v = dist(rng);
  a.q.resize(nb * 32);
  a.d.resize(nb);
  a.neg_s4.resize(nb * 8);
  a.dsum.resize(nb);
  cpu::quantize_act_q8(a.f.data(), nb, a.q.data(), a.d.data(), a.neg_s4.data());
  cpu::q8_act_block_sums(a.d.data(), a.neg_s4.data(), nb, a.dsum.data());
  return a;
}

// rows × n values with `pad` spare bytes after each row. Even rows: quantised Gaussian values;
// odd rows: raw random bytes with random f16 scales in
// every scale slot, so every level and scale bit pattern appears.
std::vector<unsigned char> make_weights(DType t, size_t rows, size_t n, size_t pad,
                                        std::mt19937& rng) {
  const size_t bb = quant_block_bytes(t), nblk = n / size_t(quant_block_elems(t));
  const size_t stride = nblk * bb + pad;
  std::vector<unsigned char> w(rows * stride, 0xA5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<float> f(n);
  auto half = [&](unsigned char* p) {
    const uint16_t h = f32_to_f16(std::ldexp(float(byte(rng) + 1), -14) * (byte(rng) % 3 ? 1 : -1));
    __builtin_memcpy(p, &h, 2);
  };
  for (size_t r = 0; r < rows; ++r) {
    unsigned char* row = &w[r * stride];
    if (r % 2 == 0) {
      for (float& v : f) v = dist(rng);
      quantize_row(t, f.data(), row, int64_t(n));
      continue;
    }
    for (size_t b = 0; b < nblk; ++b) {
      unsigned char* blk = row + b * bb;
      for (size_t i = 0; i < bb; ++i) blk[i] = uint8_t(byte(rng));
      if (t == DType::Q6_K) {
        half(blk + 208);
      } else {
        half(blk);
        if (t == DType::Q4_K || t == DType::Q5_K || t == DType::Q5_1) half(blk + 2);
      }
    }
  }
  return w;
}

// Σ_b |ws·x.d·sum_b| + |wm·dsum_b| of one row in double: what the fp32 accumulation rounds.
double row_magnitude(DType t, const unsigned char* row, const Activation& a) {
  int16_t q[32];
  double mag = 0;
  for (size_t b = 0; b < a.d.size(); ++b) {
    float ws, wm;
    cpu::decode_block32(t, row, b, q, &ws, &wm);
    double s = 0;
    for (size_t i = 0; i < 32; ++i) s += double(q[i]) * a.q[32 * b + i];
    mag += std::fabs(s * ws * a.d[b]) + std::fabs(double(wm) * a.dsum[b]);
  }
  return mag;
}

void check_target(DType t, const char* target) {
  std::mt19937 rng(uint32_t(int(t) * 7 + 1));
  const bool k = is_k_quant(t);
  for (size_t n : k ? std::vector<size_t>{256, 512, 768, 2048} : std::vector<size_t>{32, 96, 512}) {
    for (size_t rows : {1, 2, 3, 4, 5, 7, 13}) {
      for (size_t pad : {0, 6}) {
        const Activation a = make_activation(n / 32, rng);
        const auto w = make_weights(t, rows, n, pad, rng);
        const size_t stride = row_bytes(t, int64_t(n)) + pad;
        std::vector<float> yf(rows + 1, -7.0f), yr(rows, -7.0f);
        cpu::matvec_kquant(t, w.data(), stride, rows, a.view(), yf.data());
        cpu::matvec_kquant_ref(t, w.data(), stride, rows, a.view(), yr.data());
        EXPECT_EQ(yf[rows], -7.0f) << "wrote past the last row";
        for (size_t r = 0; r < rows; ++r) {
          const double mag = row_magnitude(t, &w[r * stride], a);
          // Same exact integer sums per 32 values; only fp32 products and order differ.
          ASSERT_LE(std::fabs(double(yf[r]) - yr[r]), 4e-6 * mag + 1e-30)
              << dtype_name(t) << " " << target << " n " << n << " rows " << rows << " pad " << pad
              << " row " << r << ": " << yf[r] << " vs " << yr[r];
        }
      }
    }
  }
}

TEST(KQuantKernel, MatvecMatchesScalarTwinOnEveryTarget) {
  int targets = 0;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (DType t : kTypes) check_target(t, hwy::TargetName(target));
    std::printf("[ target ] %s\n", hwy::TargetName(target));
    ++targets;
  }
  hwy::SetSupportedTargetsForTest(0);
  EXPECT_GE(targets, 1);
}

// The scalar twin against the dequantised fp32 product: the activations differ from x by at
// most e_b per element of block b (half a step plus the f16 rounding of the step, as in
// quant_kernel_test.cpp), so |y - Σ w_i x_i| ≤ Σ_i |w_i|·e_b(i) + fp32 rounding.
TEST(KQuantKernel, ScalarTwinMatchesDequantisedProduct) {
  std::mt19937 rng(9);
  for (DType t : kTypes) {
    const size_t n = is_k_quant(t) ? 768 : 224, rows = 9, stride = row_bytes(t, int64_t(n));
    const Activation a = make_activation(n / 32, rng);
    const auto w = make_weights(t, rows, n, 0, rng);
    std::vector<float> y(rows), wd(n);
    cpu::matvec_kquant_ref(t, w.data(), stride, rows, a.view(), y.data());
    for (size_t r = 0; r < rows; ++r) {
      dequantize_row(t, &w[r * stride], wd.data(), int64_t(n));
      double exact = 0, bound = 0, mag = 0;
      for (size_t b = 0; b < n / 32; ++b) {
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
      EXPECT_LE(std::fabs(y[r] - exact), bound + 1e-5 * mag + 1e-6)
          << dtype_name(t) << " row " << r << ": " << y[r] << " vs " << exact;
    }
  }
}

TEST(KQuantKernel, BadInputIsAnError) {
  std::vector<unsigned char> w(1024);
  std::vector<float> d(8), dsum(8), y(1);
  std::vector<int8_t> q(256);
  std::vector<int32_t> s(64);
  cpu::Q8Act x{q.data(), d.data(), s.data(), 8, nullptr};
  EXPECT_THROW(cpu::matvec_kquant(DType::Q4_K, w.data(), 144, 1, x, y.data()), Error);  // no dsum
  x.dsum = dsum.data();
  x.nb = 4;  // 128 columns: not a whole super-block
  EXPECT_THROW(cpu::matvec_kquant(DType::Q6_K, w.data(), 210, 1, x, y.data()), Error);
  EXPECT_THROW(cpu::matvec_kquant(DType::Q8_0, w.data(), 34, 1, x, y.data()), Error);
}

}  // namespace
}  // namespace rwkv7
