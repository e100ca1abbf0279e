// Which matrices the cpu backend packs into panels at load (prepare_for_cpu): fp32 ones only
// where they are views of the checkpoint's mapping (the panels then replace file pages), never
// a buffer made while reading or merging (the panels would be a second copy in memory).
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "core/thread_pool.hpp"
#include "io/tensor_io.hpp"
#include "model/weights.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

TEST(TensorFileMapping, InMappingOnlyForRangesInsideIt) {
  std::vector<unsigned char> bytes(100);
  TensorFile f;
  EXPECT_FALSE(f.in_mapping(bytes.data(), 1));  // no mapping
  f.mapping = bytes.data();
  f.mapping_size = bytes.size();
  EXPECT_TRUE(f.in_mapping(bytes.data(), 100));
  EXPECT_TRUE(f.in_mapping(bytes.data() + 40, 60));
  EXPECT_FALSE(f.in_mapping(bytes.data() + 40, 61));  // runs past the end
  EXPECT_FALSE(f.in_mapping(bytes.data() + 100, 1));
  const std::vector<unsigned char> other(10);
  EXPECT_FALSE(f.in_mapping(other.data(), 1));
}

TEST(CpuPanels, Fp32MatricesOfTheMappingGetPanelsBuffersDoNot) {
  RWKV7_REQUIRE_SHARED(path, "golden/rand-L2-D128.pth");  // an fp32 checkpoint
  TensorFile file = read_tensor_file(path);
  ASSERT_NE(file.mapping, nullptr);
  // One matrix replaced by a buffer, as a LoRA merge does.
  const std::string merged = "blocks.1.ffn.key.weight";
  const TensorView v = file.get(merged);
  ASSERT_EQ(v.dtype, DType::F32);
  auto copy = std::make_shared<std::vector<float>>(static_cast<const float*>(v.data),
                                                   static_cast<const float*>(v.data) + v.numel());
  file.tensors[merged] = TensorView{DType::F32, v.shape, copy->data()};
  file.owners.push_back(copy);

  ModelWeights w = build_weights(std::move(file));
  ThreadPool pool(2);
  prepare_for_cpu(w, pool);
  EXPECT_NE(w.head.cpu_panels, nullptr);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    SCOPED_TRACE("layer " + std::to_string(l));
    for (const Matrix* m : {&L.receptance, &L.key, &L.value, &L.output, &L.ffn_value})
      EXPECT_NE(m->cpu_panels, nullptr);
    if (l == 1)
      EXPECT_EQ(L.ffn_key.cpu_panels, nullptr);
    else
      EXPECT_NE(L.ffn_key.cpu_panels, nullptr);
    // fp32 LoRA factors (small) get panels as a second copy; their values stay.
    EXPECT_EQ(L.w1.m.dtype, DType::F32);
    EXPECT_NE(L.w1.m.cpu_panels, nullptr);
    EXPECT_EQ(L.w1.m.data, L.w1.values.data());
  }
}

}  // namespace
}  // namespace rwkv7
