// safetensors reading, writing and malformed headers.
#include <gtest/gtest.h>

#include <cstring>

#include "io/tensor_io.hpp"
#include "io_test_util.hpp"
#include "../test_support.hpp"

namespace rwkv7 {
namespace {

using testing::expect_error;
using testing::TempDir;

std::string make_st(const std::string& header, const std::string& data) {
  const uint64_t n = header.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + header + data;
}

TEST(SafetensorsIo, RoundTripWithMetadata) {
  TempDir dir;
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> b = {0x3f80, 0x4000, 0xc040};
  std::vector<int32_t> c = {7};
  NamedTensors named = {{"z.first", {DType::F32, {2, 3}, a.data()}},
                        {"a.second", {DType::BF16, {3}, b.data()}},
                        {"scalar", {DType::I32, {}, c.data()}},
                        {"empty", {DType::F16, {0}, nullptr}}};
  const std::string path = dir.file("x.safetensors");
  write_safetensors(path, named, {{"format", "pt"}, {"tokens", "12"}});
  const std::string raw = testing::read_bytes(path);
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const TensorFile f = read_tensor_file(path);
  EXPECT_EQ(f.order, (std::vector<std::string>{"z.first", "a.second", "scalar", "empty"}));
  EXPECT_EQ(f.metadata.at("tokens"), "12");
  EXPECT_EQ(to_f32(f.get("z.first")), a);
  EXPECT_EQ(to_f32(f.get("a.second")), (std::vector<float>{1, 2, -3}));
  EXPECT_EQ(f.get("scalar").shape, Shape{});
  EXPECT_EQ(*static_cast<const int32_t*>(f.get("scalar").data), 7);
  EXPECT_EQ(f.get("empty").numel(), 0);
}

TEST(SafetensorsIo, MisalignedDataIsCopied) {
  TempDir dir;
  // Header of odd length: the f32 data starts at an address that is not 4-aligned.
  const std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} )";
  ASSERT_NE((8 + header.size()) % 4, 0u);
  const float v[2] = {1.5f, -2.0f};
  const std::string path = dir.file("m.safetensors");
  testing::write_bytes(path, make_st(header, std::string(reinterpret_cast<const char*>(v), 8)));
  const TensorFile f = read_safetensors(path);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.get("w").data) % 4, 0u);
  EXPECT_EQ(to_f32(f.get("w")), (std::vector<float>{1.5f, -2.0f}));
}

TEST(SafetensorsGolden, ReadsGoldenFile) {
  RWKV7_REQUIRE_SHARED(path, "golden/rand-L2-D128.golden.safetensors");
  const TensorFile f = read_safetensors(path);
  EXPECT_EQ(f.get("tokens").dtype, DType::I32);
  EXPECT_EQ(f.get("state.wkv").shape.size(), 4u);
  EXPECT_FALSE(f.metadata.empty());
}

TEST(SafetensorsHostile, MalformedHeaders) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  auto expect_bad = [&](const std::string& bytes, std::initializer_list<std::string> frags) {
    testing::write_bytes(path, bytes);
    expect_error([&] { read_safetensors(path); }, frags);
    expect_error([&] { read_tensor_file(path); }, frags);
  };
  const std::string data(16, '\0');
  // Header length past EOF.
  std::string past = make_st("{}", "");
  past[0] = 100;
  expect_bad(past, {path, "header length 100 runs past the end"});
  uint64_t huge = ~uint64_t(0);
  expect_bad(std::string(reinterpret_cast<const char*>(&huge), 8) + "{", {"runs past the end"});
  expect_bad(make_st("{\"a\": [1, 2", ""), {"not valid JSON"});
  expect_bad(make_st("{\"a\": nul}", ""), {"not valid JSON"});
  testing::write_bytes(path, make_st("[1,2,3]", ""));
  expect_error([&] { read_safetensors(path); }, {"not a JSON object"});
  expect_bad(make_st(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,80]}})", data),
             {"tensor 'w'", "outside the data section"});
  expect_bad(make_st(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", data),
             {"tensor 'w'", "outside"});
  expect_bad(make_st(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data),
             {"tensor 'w'", "needs 12"});
  expect_bad(make_st(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", data),
             {"tensor 'w'", "dtype 'Q4' is not supported"});
  expect_bad(make_st(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data),
             {"tensor 'w'", "non-negative"});
  expect_bad(make_st(R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", data),
             {"tensor 'w'"});
  expect_bad(
      make_st(
          R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})",
          data),
      {"tensor 'w'", "too large"});
  expect_bad(make_st(R"({"w":{"dtype":"F32","shape":[2]}})", data), {"data_offsets"});
  expect_bad(make_st(R"({"w":7})", data), {"tensor 'w'"});
  expect_bad(make_st(R"({"__metadata__":{"a":1}})", data), {"__metadata__"});
}

}  // namespace
}  // namespace rwkv7
