// bf16 products of inference (LoadOptions::precision "bf16"): weights packed at load into pair
// panels, every product over them rounds x to bf16 and runs VDPBF16PS. Checked against the
// scalar reference on the rounded operands, and for the property the server's exactness rests
// on: a position's outputs are the same bits whatever else is in its product or its list.
#include "backends/cpu/pair_panels.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cpu/gemm_bf16_kernels.hpp"
#include "core/dtype.hpp"
#include "core/thread_pool.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

#define REQUIRE_BF16_DOT()                                                                     \
  if (!cpu::bf16_dot_available())                                                              \
  GTEST_SKIP() << "this CPU (or the ISA cap) has no AVX512_BF16: pair panels are never made, " \
                  "bf16 products run in fp32"

std::vector<float> rounded(std::vector<float> v) {
  for (float& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}

std::vector<float> absolute(std::vector<float> v) {
  for (float& x : v) x = std::fabs(x);
  return v;
}

struct Weight {
  std::vector<float> f32;      // values as given
  std::vector<uint16_t> bf16;  // bf16 bits (for a bf16 weight)
  std::vector<float> exact;    // the values the product multiplies: rounded to bf16
  Matrix m;
  std::shared_ptr<const void> owner;
};

std::unique_ptr<Weight> make_weight(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng,
                                    ThreadPool& pool) {
  auto w = std::make_unique<Weight>();
  w->f32 = testing::randn(size_t(rows * cols), rng);
  for (float x : w->f32) w->bf16.push_back(f32_to_bf16(x));
  w->exact = rounded(w->f32);
  const void* data = dtype == DType::F32 ? static_cast<const void*>(w->f32.data()) : w->bf16.data();
  w->m = Matrix{dtype, rows, cols, data};
  w->owner = prepare_cpu_panels(w->m, pool, false, false, /*bf16_pairs=*/true);
  return w;
}

TEST(PairPanels, MadeForBf16AndFp32WeightsOnly) {
  REQUIRE_BF16_DOT();
  std::mt19937 rng(1);
  ThreadPool pool(2);
  for (DType dtype : {DType::F32, DType::BF16}) {
    auto w = make_weight(dtype, 70, 131, rng, pool);
    EXPECT_NE(w->m.cpu_pair_panels, nullptr) << dtype_name(dtype);
    EXPECT_EQ(w->m.cpu_panels, nullptr) << dtype_name(dtype) << ": one layout, not two";
  }
  std::vector<uint16_t> f16(64 * 64, 0x3c00);
  Matrix m{DType::F16, 64, 64, f16.data()};
  auto owner = prepare_cpu_panels(m, pool, false, false, true);
  EXPECT_EQ(m.cpu_pair_panels, nullptr) << "f16 has the range bf16 lacks: its usual panels";
  EXPECT_NE(m.cpu_panels, nullptr);
}

// The AVX-512 packers (16 × 16 transposes, edges and padding in scalar code) write what the
// scalar loops write, for bf16 and fp32 weights, partial panels and odd input counts.
TEST(PairPanels, FastPackEqualsItsScalarTwin) {
  REQUIRE_BF16_DOT();
  std::mt19937 rng(7);
  for (const auto& [rows, cols] : {std::pair<size_t, size_t>{70, 131}, {128, 768}, {33, 40}}) {
    const auto f32 = testing::randn(rows * cols, rng);
    std::vector<uint16_t> bf16;
    for (float x : f32) bf16.push_back(f32_to_bf16(x));
    const size_t n = cpu::pair_panels_size(rows, cols), panels = (rows + 63) / 64;
    std::vector<uint16_t> fast(n, 0xffff), slow(n, 0xeeee);
    cpu::pack_pair_panels(bf16.data(), rows, cols, 0, panels, fast.data());
    cpu::pack_pair_panels_scalar(bf16.data(), rows, cols, 0, panels, slow.data());
    EXPECT_EQ(fast, slow) << "bf16 " << rows << " x " << cols;
    std::fill(fast.begin(), fast.end(), 0xffff);
    std::fill(slow.begin(), slow.end(), 0xeeee);
    cpu::pack_pair_panels(f32.data(), rows, cols, 0, panels, fast.data());
    cpu::pack_pair_panels_scalar(f32.data(), rows, cols, 0, panels, slow.data());
    EXPECT_EQ(fast, slow) << "fp32 " << rows << " x " << cols;
  }
}

// y = bf16(x) · bf16(W)ᵀ in fp32 sums; the oracle is the scalar reference over the rounded
// operands, within fp32 summation rounding (an independent sum in another order).
TEST(PairPanels, ProductEqualsReferenceOverRoundedOperands) {
  REQUIRE_BF16_DOT();
  std::mt19937 rng(2);
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(&pool);
  auto ref = make_reference_backend();
  // 131: odd (a zero-padded last pair); 768: two blocks of 384; 1100: blocks of 512 and a rest;
  // 70 outputs: a partial panel.
  for (int64_t cols : {131, 768, 1100})
    for (DType dtype : {DType::F32, DType::BF16}) {
      auto w = make_weight(dtype, 70, cols, rng, pool);
      const Matrix exact{DType::F32, 70, cols, w->exact.data()};
      const auto wa = absolute(w->exact);
      const Matrix w_abs{DType::F32, 70, cols, wa.data()};
      for (int64_t count : {1, 5, 6, 13, 70}) {
        const auto x = testing::randn(size_t(count * cols), rng);
        const auto xr = rounded(x);
        const auto xa = absolute(xr);
        std::vector<float> got(size_t(count * 70), -1.0f), want(got.size()), mag(got.size());
        cpu->matmul({w->m, x.data(), got.data(), count});
        ref->matmul({exact, xr.data(), want.data(), count});
        ref->matmul({w_abs, xa.data(), mag.data(), count});
        double gap = 0;  // from the fp32 product of the unrounded x: rounding x must show
        std::vector<float> unrounded(got.size());
        ref->matmul({exact, x.data(), unrounded.data(), count});
        for (size_t e = 0; e < got.size(); ++e) {
          ASSERT_NEAR(got[e], want[e], 4 * std::sqrt(double(cols)) * 1.2e-7 * mag[e])
              << dtype_name(dtype) << " cols " << cols << " count " << count << " at " << e;
          gap = std::max(gap, std::fabs(double(unrounded[e]) - want[e]) / (mag[e] + 1e-30));
        }
        EXPECT_GT(gap, 1e-4) << "x must be rounded to bf16";
      }
    }
}

// With x split (the LoRA factors): x as hi + lo, 16 significant bits, so the product is the
// fp32 product of the rounded weight within ~2^-16 relative, and still the same bits for a
// position whatever else is in its product.
TEST(PairPanels, SplitXIsNearlyExactAndPositionIndependent) {
  REQUIRE_BF16_DOT();
  std::mt19937 rng(4);
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(&pool);
  auto ref = make_reference_backend();
  const int64_t rows = 70, cols = 768;  // a partial second panel
  auto w = make_weight(DType::BF16, rows, cols, rng, pool);
  w->m.cpu_pairs_split_x = true;
  const Matrix exact{DType::F32, rows, cols, w->exact.data()};
  const auto wa = absolute(w->exact);
  const Matrix w_abs{DType::F32, rows, cols, wa.data()};
  for (int64_t count : {1, 9, 32}) {
    const auto x = testing::randn(size_t(count * cols), rng);
    const auto xa = absolute(x);
    std::vector<float> got(size_t(count * rows)), want(got.size()), mag(got.size());
    cpu->matmul({w->m, x.data(), got.data(), count});
    ref->matmul({exact, x.data(), want.data(), count});
    ref->matmul({w_abs, xa.data(), mag.data(), count});
    for (size_t e = 0; e < got.size(); ++e)
      ASSERT_NEAR(got[e], want[e],
                  (std::ldexp(1.0, -16) + 8 * std::sqrt(double(cols)) * 1.2e-7) * mag[e])
          << "count " << count << " at " << e;
    for (int64_t t = 0; t < count; ++t) {
      std::vector<float> alone(static_cast<size_t>(rows));
      cpu->matmul({w->m, x.data() + t * cols, alone.data(), 1});
      ASSERT_EQ(std::memcmp(alone.data(), got.data() + t * rows, alone.size() * 4), 0)
          << "position " << t << " of " << count;
    }
  }
}

// Each position's outputs are bitwise the same alone, among others in one product, and in a
// list of products (one parallel region): the batch a sequence decodes in changes nothing.
TEST(PairPanels, EachPositionsOutputsDoNotDependOnTheOthers) {
  REQUIRE_BF16_DOT();
  std::mt19937 rng(3);
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(&pool);
  auto w1 = make_weight(DType::BF16, 192, 1100, rng, pool);
  auto w2 = make_weight(DType::F32, 100, 768, rng, pool);
  for (int64_t count : {2, 7, 32, 70}) {
    const auto x1 = testing::randn(size_t(count * 1100), rng);
    const auto x2 = testing::randn(size_t(count * 768), rng);
    std::vector<float> y1(size_t(count * 192)), y2(size_t(count * 100));
    const std::vector<MatmulArgs> list{{w1->m, x1.data(), y1.data(), count},
                                       {w2->m, x2.data(), y2.data(), count}};
    cpu->matmul_many(list);
    for (int64_t t = 0; t < count; ++t) {
      std::vector<float> a1(192), a2(100);
      cpu->matmul({w1->m, x1.data() + t * 1100, a1.data(), 1});
      cpu->matmul({w2->m, x2.data() + t * 768, a2.data(), 1});
      ASSERT_EQ(std::memcmp(a1.data(), y1.data() + t * 192, a1.size() * 4), 0)
          << "position " << t << " of " << count << " (first product)";
      ASSERT_EQ(std::memcmp(a2.data(), y2.data() + t * 100, a2.size() * 4), 0)
          << "position " << t << " of " << count << " (second product)";
    }
  }
}

// A list mixing pair-panel products with others (a matrix without panels): each gets what it
// gets alone.
TEST(PairPanels, AListMixingPairPanelsAndOthersGivesEachItsOwnProduct) {
  REQUIRE_BF16_DOT();
  std::mt19937 rng(6);
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(&pool);
  auto paired = make_weight(DType::BF16, 128, 256, rng, pool);
  const auto plain_values = testing::randn(size_t(96 * 256), rng);
  const Matrix plain{DType::F32, 96, 256, plain_values.data()};  // no panels: the row kernels
  for (int64_t count : {1, 12}) {
    const auto x1 = testing::randn(size_t(count * 256), rng);
    const auto x2 = testing::randn(size_t(count * 256), rng);
    std::vector<float> y1(size_t(count * 128)), y2(size_t(count * 96));
    std::vector<float> a1(y1.size()), a2(y2.size());
    cpu->matmul_many(std::vector<MatmulArgs>{{plain, x2.data(), y2.data(), count},
                                             {paired->m, x1.data(), y1.data(), count}});
    cpu->matmul({paired->m, x1.data(), a1.data(), count});
    cpu->matmul({plain, x2.data(), a2.data(), count});
    EXPECT_EQ(y1, a1) << "pair panels, count " << count;
    EXPECT_EQ(y2, a2) << "no panels, count " << count;
  }
}

}  // namespace
}  // namespace rwkv7
