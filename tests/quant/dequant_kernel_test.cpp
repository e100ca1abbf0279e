// SIMD block decoding against core's scalar dequantize_row on every target: identical floats
// for random blocks covering every int8 / nibble / 5- and 6-bit value (K-quants: random scales
// and mins too) and several row lengths; wrong lengths are refused.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backends/cpu/dequant_kernels.hpp"
#include "core/quant.hpp"
#include "hwy/targets.h"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

TEST(DequantKernel, SimdEqualsScalarBitForBit) {
  std::mt19937 rng(21);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
      const bool k = is_k_quant(t);
      for (int64_t n :
           k ? std::vector<int64_t>{256, 512, 768} : std::vector<int64_t>{32, 64, 96, 768}) {
        std::vector<unsigned char> blocks(row_bytes(t, n));
        for (auto& b : blocks) b = static_cast<unsigned char>(byte(rng));
        // Finite f16 scales (random bytes could make a NaN/inf, which compares unequal): the
        // block's d (Q6_K: at byte 208) and, for Q4_K/Q5_K, dmin after it.
        const size_t bb = quant_block_bytes(t);
        for (size_t off = 0; off < blocks.size(); off += bb)
          for (size_t at : t == DType::Q6_K ? std::vector<size_t>{208}
                           : k              ? std::vector<size_t>{0, 2}
                                            : std::vector<size_t>{0})
            blocks[off + at + 1] = static_cast<unsigned char>(byte(rng) % 0x7c);
        std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n), -1.0f);
        dequantize_row(t, blocks.data(), want.data(), n);
        cpu::dequantize_row(t, blocks.data(), got.data(), n);
        EXPECT_EQ(got, want) << dtype_name(t) << " n " << n;
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  float out[32];
  unsigned char blocks[64] = {};
  EXPECT_THROW(cpu::dequantize_row(DType::Q8_0, blocks, out, 31), Error);
  EXPECT_THROW(cpu::dequantize_row(DType::F32, blocks, out, 32), Error);
  EXPECT_THROW(cpu::dequantize_row(DType::Q4_K, blocks, out, 32), Error);  // not a super-block
}

}  // namespace
}  // namespace rwkv7
