// LoRA factors are kept in bf16 exactly when every value is a bf16 number (official bf16
// checkpoints, and fp32 GGUF files made from them), else in fp32; either way each stored value
// equals the file's value at the transposed position.
#include <gtest/gtest.h>

#include "core/dtype.hpp"
#include "io/tensor_io.hpp"
#include "model/weights.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

float stored(const Matrix& m, int64_t r, int64_t c) {
  const size_t i = size_t(r * m.cols + c);
  if (m.dtype == DType::BF16) return bf16_to_f32(static_cast<const uint16_t*>(m.data)[i]);
  return static_cast<const float*>(m.data)[i];
}

void expect_lora(const std::string& path, DType want) {
  TensorFile f = read_tensor_file(path);
  const TensorView w1 = f.get("blocks.1.att.w1");  // [C, Dw] in the file
  const ModelWeights w = build_weights(read_tensor_file(path));
  const Matrix& m = w.layers[1].w1.m;  // [Dw, C]
  ASSERT_EQ(m.dtype, want) << path;
  ASSERT_EQ(m.rows, w1.shape[1]);
  ASSERT_EQ(m.cols, w1.shape[0]);
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t c = 0; c < m.cols; ++c)
      ASSERT_EQ(stored(m, r, c), load_as_f32(w1.dtype, w1.data, size_t(c * m.rows + r)))
          << path << " at " << r << "," << c;
}

TEST(LoraStorage, Bf16WhenEveryValueIsBf16Exact) {
  RWKV7_REQUIRE_SHARED(bf16, "golden/rand-L3-D256-bf16.pth");
  RWKV7_REQUIRE_SHARED(f32, "golden/rand-L2-D128.pth");
  expect_lora(bf16, DType::BF16);
  expect_lora(f32, DType::F32);  // random fp32 values: not bf16 numbers
}

}  // namespace
}  // namespace rwkv7
