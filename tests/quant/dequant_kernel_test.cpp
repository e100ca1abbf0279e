// SIMD block decoding against core's scalar dequantize_row: identical floats for random blocks
// covering every int8 / nibble value and several row lengths; wrong lengths are refused.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backends/cpu/dequant_kernels.hpp"
#include "core/quant.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

TEST(DequantKernel, SimdEqualsScalarBitForBit) {
  std::mt19937 rng(21);
  std::uniform_int_distribution<int> byte(0, 255);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    for (int64_t n : {32, 64, 96, 768}) {
      std::vector<unsigned char> blocks(row_bytes(t, n));
      for (auto& b : blocks) b = static_cast<unsigned char>(byte(rng));
      // Finite scales (random bytes could make an f16 NaN/inf, which compares unequal).
      const size_t bb = quant_block_bytes(t);
      for (size_t off = 0; off < blocks.size(); off += bb) {
        blocks[off] = static_cast<unsigned char>(byte(rng));
        blocks[off + 1] = static_cast<unsigned char>(byte(rng) % 0x7c);
      }
      std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n), -1.0f);
      dequantize_row(t, blocks.data(), want.data(), n);
      cpu::dequantize_row(t, blocks.data(), got.data(), n);
      EXPECT_EQ(got, want) << dtype_name(t) << " n " << n;
    }
  }
  float out[32];
  unsigned char blocks[64] = {};
  EXPECT_THROW(cpu::dequantize_row(DType::Q8_0, blocks, out, 31), Error);
  EXPECT_THROW(cpu::dequantize_row(DType::F32, blocks, out, 32), Error);
}

}  // namespace
}  // namespace rwkv7
