// The packed product kernels: panel packing (register transpose + edges, and the row copy of
// an input-major source), X packed in the kernel's tiles (every value in its place), and the
// broadcast micro-kernel, with X as rows, transposed or in tiles (packed from either), against
// the scalar twin on random shapes, both for a fresh and an accumulated output, with row
// strides wider than the rows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backends/cpu/gemm_packed_kernels.hpp"
#include "core/dtype.hpp"
#include "every_target.hpp"
#include "hwy/aligned_allocator.h"
#include "hwy/targets.h"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

// Output and input counts: the edges of both transposes and a whole panel.
const size_t kOutputs[] = {1, 7, 8, 9, 15, 16, 33};
const size_t kInputs[] = {1, 8, 16, 37, 128};

TEST(GemmPacked, PackPlacesEveryWeightAndZeroPadsTheEdge) {
  testing::on_every_target([] {
    std::mt19937 rng(5);
    const size_t nr = cpu::panel_width();
    for (size_t nn : kOutputs) {
      nn = std::min(nn, nr);
      for (size_t kc : kInputs) {
        const size_t ldr = kc + 5;
        const auto w = testing::randn(nn * ldr, rng);
        auto panel = hwy::AllocateAligned<float>(kc * nr);
        for (size_t i = 0; i < kc * nr; ++i) panel[i] = NAN;
        cpu::pack_panel(w.data(), ldr, nn, kc, w.data() + kc, panel.get());
        for (size_t i = 0; i < kc; ++i)
          for (size_t j = 0; j < nr; ++j)
            ASSERT_EQ(panel[i * nr + j], j < nn ? w[j * ldr + i] : 0.0f)
                << "nn " << nn << " kc " << kc << " i " << i << " j " << j;
      }
    }
  });
}

// bf16 and f16 rows are widened while packed: each panel value is exactly the fp32 the 16-bit
// value stands for (f16 against the scalar conversion, subnormals and infinities included).
TEST(GemmPacked, HalfPrecisionPacksWidenExactly) {
  testing::on_every_target([] {
    std::mt19937 rng(6);
    const size_t nr = cpu::panel_width();
    for (bool bf16 : {true, false}) {
      for (size_t nn : kOutputs) {
        nn = std::min(nn, nr);
        for (size_t kc : kInputs) {
          const size_t ldr = kc + 5;
          std::vector<uint16_t> w(nn * ldr);
          for (auto& v : w) v = uint16_t(rng());
          for (size_t i = 0; i < w.size(); i += 7) w[i] = bf16 ? 0x7f80 : 0x7c00;  // +inf
          for (size_t i = 3; i < w.size(); i += 11) w[i] = 0x0003;                 // subnormal
          auto panel = hwy::AllocateAligned<float>(kc * nr);
          for (size_t i = 0; i < kc * nr; ++i) panel[i] = NAN;
          (bf16 ? cpu::pack_panel_bf16 : cpu::pack_panel_f16)(w.data(), ldr, nn, kc, w.data() + kc,
                                                              panel.get());
          for (size_t i = 0; i < kc; ++i)
            for (size_t j = 0; j < nr; ++j) {
              float want = 0.0f;
              if (j < nn) want = bf16 ? bf16_to_f32(w[j * ldr + i]) : f16_to_f32(w[j * ldr + i]);
              const float got = panel[i * nr + j];
              if (std::isnan(want)) {
                ASSERT_TRUE(std::isnan(got));
              } else {
                ASSERT_EQ(got, want) << (bf16 ? "bf16" : "f16") << " nn " << nn << " kc " << kc
                                     << " i " << i << " j " << j;
              }
            }
        }
      }
    }
  });
}

TEST(GemmPacked, InputMajorPackCopiesRowsAndZeroPadsTheEdge) {
  std::mt19937 rng(8);
  const size_t nr = cpu::panel_width();
  for (size_t nn : {size_t(1), size_t(15), size_t(16), size_t(33), nr}) {
    if (nn > nr) continue;
    for (size_t kc : {size_t(1), size_t(16), size_t(37), size_t(128)}) {
      const size_t lds = nn + 3;
      const auto src = testing::randn(kc * lds, rng);
      auto panel = hwy::AllocateAligned<float>(kc * nr);
      for (size_t i = 0; i < kc * nr; ++i) panel[i] = NAN;
      cpu::pack_panel_input_major(src.data(), lds, nn, kc, panel.get());
      for (size_t i = 0; i < kc; ++i)
        for (size_t j = 0; j < nr; ++j)
          ASSERT_EQ(panel[i * nr + j], j < nn ? src[i * lds + j] : 0.0f)
              << "nn " << nn << " kc " << kc << " i " << i << " j " << j;
    }
  }
}

// The same from bf16 values (a weight's kept copy), widened exactly, on every target.
TEST(GemmPacked, InputMajorPackFromBf16WidensRowsAndZeroPadsTheEdge) {
  testing::on_every_target([] {
    std::mt19937 rng(9);
    const size_t nr = cpu::panel_width();
    for (size_t nn : {size_t(1), size_t(15), size_t(16), size_t(33), nr}) {
      if (nn > nr) continue;
      for (size_t kc : {size_t(1), size_t(16), size_t(37), size_t(128)}) {
        const size_t lds = nn + 3;
        const auto values = testing::randn(kc * lds, rng);
        std::vector<uint16_t> src(values.size());
        for (size_t i = 0; i < src.size(); ++i) src[i] = f32_to_bf16(values[i]);
        auto panel = hwy::AllocateAligned<float>(kc * nr);
        for (size_t i = 0; i < kc * nr; ++i) panel[i] = NAN;
        cpu::pack_panel_input_major(src.data(), lds, nn, kc, panel.get());
        for (size_t i = 0; i < kc; ++i)
          for (size_t j = 0; j < nr; ++j)
            ASSERT_EQ(panel[i * nr + j], j < nn ? bf16_to_f32(src[i * lds + j]) : 0.0f)
                << "nn " << nn << " kc " << kc << " i " << i << " j " << j;
      }
    }
  });
}

// round_to_bf16 (the fallback's operands) is f32_to_bf16 on every value, on every target:
// ties to even, carries into the exponent, infinities, NaNs kept quiet, denormals, signed zero,
// and random bit patterns, over lengths that leave a scalar tail.
TEST(GemmPacked, RoundToBf16IsTheScalarRoundingOnEveryValue) {
  std::vector<uint32_t> bits = {0x00000000u, 0x80000000u, 0x3F808000u, 0x3F818000u, 0x3F80FFFFu,
                                0x7F7FFFFFu, 0xFF7FFFFFu, 0x7F800000u, 0xFF800000u, 0x7FC00000u,
                                0x7F800001u, 0xFF810000u, 0x7FFFFFFFu, 0x00000001u, 0x007F8000u,
                                0x807FFFFFu, 0x3F7FFFFFu, 0x00018000u, 0x00028000u};
  std::mt19937 rng(10);
  for (int i = 0; i < 4000; ++i) bits.push_back(uint32_t(rng()));
  testing::on_every_target([&] {
    for (size_t n : {bits.size(), size_t(1), size_t(7), size_t(23)}) {
      std::vector<float> x(n);
      std::memcpy(x.data(), bits.data(), n * 4);
      cpu::round_to_bf16(x.data(), n);
      for (size_t i = 0; i < n; ++i) {
        float value;
        std::memcpy(&value, &bits[i], 4);
        const uint32_t want = uint32_t(f32_to_bf16(value)) << 16;
        uint32_t got;
        std::memcpy(&got, &x[i], 4);
        ASSERT_EQ(got, want) << std::hex << "bits 0x" << bits[i] << " n " << std::dec << n;
      }
    }
  });
}

TEST(GemmPacked, XTilesHoldEveryValueInItsPlace) {
  testing::on_every_target([] {
    std::mt19937 rng(6);
    const size_t mr_full = cpu::gemm_tile_rows();
    for (size_t T : {1, 3, 4, 5, 6, 7, 9, 13, 64}) {
      for (size_t kc : {1, 7, 8, 16, 37, 128}) {
        for (bool transposed : {false, true}) {
          const size_t ldx = transposed ? T + 1 : kc + 5;
          const auto x = testing::randn((transposed ? kc : T) * ldx, rng);
          std::vector<float> out(T * kc + 1, NAN);
          out.back() = 42.0f;
          cpu::pack_x_tiles(x.data(), ldx, transposed, T, kc, out.data());
          ASSERT_EQ(out.back(), 42.0f) << "wrote past the tiles";
          for (size_t t0 = 0; t0 < T; t0 += mr_full) {
            const size_t mr = std::min(mr_full, T - t0);
            for (size_t i = 0; i < kc; ++i)
              for (size_t r = 0; r < mr; ++r)
                ASSERT_EQ(out[t0 * kc + i * mr + r],
                          transposed ? x[i * ldx + t0 + r] : x[(t0 + r) * ldx + i])
                    << "T " << T << " kc " << kc << " transposed " << transposed << " t " << t0 + r
                    << " i " << i;
          }
        }
      }
    }
  });
}

TEST(GemmPacked, PanelProductEqualsScalarTwin) {
  testing::on_every_target([] {
    std::mt19937 rng(7);
    const size_t nr = cpu::panel_width();
    // With a prefetch hint a remainder of 1-2 rows joins the last full tile, split in two:
    // AVX-512 (tiles of 6) T 7, 8, 14, 32 → 4 + 3, 4 + 4, 6 + 4 + 4, 4 × 6 + 4 + 4; AVX2 (tiles
    // of 4) T 5, 6, 9, 10 → 3 + 2, 3 + 3, 4 + 3 + 2, 4 + 3 + 3.
    const size_t shapes[][3] = {{1, 1, 1},    {5, 3, 16},    {6, 64, 128}, {7, 64, 5},
                                {8, 20, 128}, {9, 24, 33},   {10, 64, 7},  {13, 17, 37},
                                {14, 64, 9},  {32, 64, 128}, {40, 64, 1}};
    for (auto [T, nn_want, kc] : shapes) {
      const size_t nn = std::min(nn_want, nr);
      const auto w = testing::randn(nn * kc, rng);
      auto panel = hwy::AllocateAligned<float>(kc * nr);
      cpu::pack_panel(w.data(), kc, nn, kc, nullptr, panel.get());
      for (int layout = 0; layout < 4; ++layout) {  // rows, transposed, tiles of either
        const bool x_transposed = layout % 2 == 1, tiles = layout >= 2;
        // X [T, kc] rows ldx apart, or Xᵀ [kc, T] rows ldx apart.
        const size_t ldx = x_transposed ? T + 2 : kc + 3, ldy = nn + 7;
        const auto x = testing::randn((x_transposed ? kc : T) * ldx, rng);
        for (int mode = 0; mode < 4; ++mode) {
          const bool accumulate = mode & 1, prefetching = mode & 2;
          const auto y0 = testing::randn(T * ldy, rng);
          auto want = y0, got = y0;
          cpu::gemm_panel_scalar(x.data(), ldx, x_transposed, T, panel.get(), nr, kc, want.data(),
                                 ldy, nn, accumulate);
          std::vector<float> xp(T * kc);
          if (tiles) cpu::pack_x_tiles(x.data(), ldx, x_transposed, T, kc, xp.data());
          // With a prefetch hint the kernel takes its other form (split tiles, lines spread over
          // the loops); the hint (here: the weights again, more lines than inputs or fewer) must
          // change nothing.
          const cpu::PrefetchRange prefetch =
              prefetching ? cpu::PrefetchRange{w.data(), accumulate ? w.size() * sizeof(float) : 64}
                          : cpu::PrefetchRange{};
          if (tiles)
            cpu::gemm_panel_tiles(xp.data(), T, panel.get(), kc, got.data(), ldy, nn, accumulate,
                                  prefetch);
          else
            (x_transposed ? cpu::gemm_panel_xt : cpu::gemm_panel)(
                x.data(), ldx, T, panel.get(), kc, got.data(), ldy, nn, accumulate, prefetch);
          // fp32 sums of kc unit-variance products in another order: error ~ sqrt(kc) · 2^-24.
          const double tol = 1e-6 * std::sqrt(double(kc)) * 16 + 1e-5;
          for (size_t t = 0; t < T; ++t) {
            for (size_t j = 0; j < ldy; ++j) {
              const size_t e = t * ldy + j;
              if (j >= nn) {
                ASSERT_EQ(got[e], y0[e]) << "wrote outside the panel: t " << t << " j " << j;
              } else {
                ASSERT_NEAR(got[e], want[e], tol)
                    << "T " << T << " nn " << nn << " kc " << kc << " layout " << layout
                    << " prefetching " << prefetching;
              }
            }
          }
        }
      }
    }
  });
}

// bf16 panels as made at load, multiplied in place (decode batches): the same sums as the fp32
// panel they widen to, in the same order, so equal to the last bit; for every tile split, a
// partial last panel, fresh and accumulated outputs, with and without the prefetch hint.
TEST(GemmPacked, Bf16PanelProductEqualsItsWidenedPanelExactly) {
  testing::on_every_target([] {
    if (!cpu::bf16_panel_product_available()) return;
    std::mt19937 rng(11);
    const size_t nr = cpu::panel_width();
    const size_t shapes[][3] = {{2, 64, 128},  {5, 3, 16},   {7, 64, 5},    {8, 20, 128},
                                {10, 64, 7},   {13, 17, 37}, {32, 64, 128}, {33, 9, 128},
                                {63, 64, 128}, {1, 64, 64}};
    for (auto [T, nn_want, kc] : shapes) {
      const size_t nn = std::min(nn_want, nr);
      auto w = testing::randn(nn * kc, rng);
      for (float& v : w) v = bf16_to_f32(f32_to_bf16(v));
      auto panel = hwy::AllocateAligned<float>(kc * nr);
      cpu::pack_panel(w.data(), kc, nn, kc, nullptr, panel.get());
      std::vector<uint16_t> half(kc * nr);
      for (size_t i = 0; i < half.size(); ++i) half[i] = f32_to_bf16(panel[i]);
      const size_t ldx = kc + 3, ldy = nn + 7;
      const auto x = testing::randn(T * ldx, rng);
      for (int mode = 0; mode < 4; ++mode) {
        const bool accumulate = mode & 1, prefetching = mode & 2;
        const auto y0 = testing::randn(T * ldy, rng);
        auto want = y0, got = y0;
        const cpu::PrefetchRange prefetch =
            prefetching ? cpu::PrefetchRange{half.data(), half.size() * 2} : cpu::PrefetchRange{};
        cpu::gemm_panel(x.data(), ldx, T, panel.get(), kc, want.data(), ldy, nn, accumulate,
                        prefetch);
        cpu::gemm_panel_bf16(x.data(), ldx, T, half.data(), kc, got.data(), ldy, nn, accumulate,
                             prefetch);
        for (size_t e = 0; e < got.size(); ++e)
          ASSERT_EQ(got[e], want[e]) << "T " << T << " nn " << nn << " kc " << kc << " mode "
                                     << mode << " t " << e / ldy << " j " << e % ldy;
      }
    }
  });
}

}  // namespace
}  // namespace rwkv7
