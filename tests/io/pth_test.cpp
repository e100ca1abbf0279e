// .pth reading (torch 1.x and 2.x files), writing and round trips.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "../test_support.hpp"
#include "io/io_internal.hpp"
#include "io/pickle.hpp"
#include "io/tensor_io.hpp"
#include "io/zip_reader.hpp"
#include "io/zip_writer.hpp"
#include "io_test_util.hpp"

namespace rwkv7 {
namespace {

using testing::TempDir;

bool same_tensor(const TensorView& a, const TensorView& b) {
  return a.dtype == b.dtype && a.shape == b.shape &&
         (a.nbytes() == 0 || std::memcmp(a.data, b.data, a.nbytes()) == 0);
}

void expect_same_files(const TensorFile& a, const TensorFile& b) {
  ASSERT_EQ(a.order, b.order);
  for (const auto& name : a.order) {
    EXPECT_TRUE(same_tensor(a.get(name), b.get(name))) << name;
  }
}

DType dtype_from_torch(const std::string& s) {
  if (s == "float32") return DType::F32;
  if (s == "float16") return DType::F16;
  if (s == "bfloat16") return DType::BF16;
  if (s == "int64") return DType::I64;
  if (s == "int32") return DType::I32;
  ADD_FAILURE() << "dtype " << s;
  return DType::F32;
}

TEST(PthGolden, Torch2FormatSample) {
  RWKV7_REQUIRE_SHARED(pth, "golden/torch2-format-sample.pth");
  RWKV7_REQUIRE_SHARED(json_path, "golden/torch2-format-sample.json");
  const TensorFile f = read_pth(pth);
  const auto j = nlohmann::json::parse(testing::read_bytes(json_path));
  const auto& expected = j.at("tensors");
  ASSERT_FALSE(expected.empty()) << json_path << " lists no tensors: nothing would be checked";
  EXPECT_EQ(f.tensors.size(), expected.size());
  for (const auto& [name, e] : expected.items()) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(f.has(name));
    const TensorView& t = f.get(name);
    EXPECT_EQ(t.dtype, dtype_from_torch(e.at("dtype").get<std::string>()));
    EXPECT_EQ(t.shape, e.at("shape").get<Shape>());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype), 0u);
    const auto v = to_f32(t);
    double sum = 0;
    for (float x : v) sum += x;
    const double want = e.at("sum").get<double>();
    EXPECT_NEAR(sum, want, 1e-4 * std::max(1.0, std::fabs(want)));
    const auto first = e.at("first").get<std::vector<double>>();
    for (size_t i = 0; i < first.size() && i < v.size(); ++i) EXPECT_EQ(v[i], float(first[i])) << i;
  }
}

TEST(PthGolden, Torch1Files) {
  RWKV7_REQUIRE_SHARED(fp32, "golden/rand-L2-D128.pth");
  const TensorFile a = read_pth(fp32);
  EXPECT_EQ(a.get("emb.weight").dtype, DType::F32);
  EXPECT_EQ(a.get("emb.weight").shape, (Shape{1000, 128}));
  EXPECT_EQ(a.get("blocks.0.att.x_r").shape, (Shape{1, 1, 128}));
  EXPECT_EQ(a.get("blocks.1.att.r_k").shape, (Shape{2, 64}));
  EXPECT_EQ(a.order.front(), "emb.weight");

  RWKV7_REQUIRE_SHARED(fp16, "golden/rand-L2-D96-hs32-fp16.pth");
  const TensorFile b = read_pth(fp16);
  EXPECT_EQ(b.get("emb.weight").dtype, DType::F16);
  EXPECT_EQ(b.get("blocks.0.att.r_k").shape, (Shape{3, 32}));

  RWKV7_REQUIRE_SHARED(tiny, "models/tiny-rwkv7-834K.pth");
  const TensorFile c = read_tensor_file(tiny);
  EXPECT_EQ(c.get("emb.weight").shape[0], 256);
  EXPECT_EQ(c.get("emb.weight").shape[1], 64);
  EXPECT_TRUE(c.has("blocks.11.ffn.value.weight"));
}

TEST(PthGolden, Bf16MatchesSafetensorsBitForBit) {
  RWKV7_REQUIRE_SHARED(pth, "golden/rand-L3-D256-bf16.pth");
  RWKV7_REQUIRE_SHARED(st, "golden/rand-L3-D256-bf16.safetensors");
  const TensorFile a = read_pth(pth);
  const TensorFile b = read_tensor_file(st);
  EXPECT_EQ(a.get("emb.weight").dtype, DType::BF16);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, t] : a.tensors) {
    ASSERT_TRUE(b.has(name)) << name;
    EXPECT_TRUE(same_tensor(t, b.get(name))) << name;
  }
}

TEST(PthWriter, RewriteGoldenIsIdenticalAndPickleMatchesTorch) {
  RWKV7_REQUIRE_SHARED(src, "golden/rand-L2-D128.pth");
  TempDir dir;
  const TensorFile a = read_pth(src);
  NamedTensors named;
  for (const auto& n : a.order) named.emplace_back(n, a.get(n));
  const std::string out = dir.file("rand-L2-D128.pth");
  write_pth(out, named);
  const TensorFile b = read_tensor_file(out);
  expect_same_files(a, b);

  // The pickle is byte for byte what torch 1.x wrote.
  io::ZipReader za(MappedFile::open(src)), zb(MappedFile::open(out));
  auto pa = za.data(*za.find("rand-L2-D128/data.pkl"));
  auto pb = zb.data(*zb.find("rand-L2-D128/data.pkl"));
  EXPECT_EQ(std::string(pa.begin(), pa.end()), std::string(pb.begin(), pb.end()));
  for (const auto& e : zb.entries()) {
    EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
    auto d = zb.data(e);
    EXPECT_EQ(io::crc32_update(0, d.data(), d.size()), e.crc32) << e.name;
  }
  const auto* version = zb.find("rand-L2-D128/version");
  ASSERT_NE(version, nullptr);
  auto v = zb.data(*version);
  EXPECT_EQ(std::string(v.begin(), v.end()), "3\n");
}

NamedTensors random_tensors(std::vector<std::vector<unsigned char>>& storage) {
  std::mt19937 rng(7);
  const std::vector<std::pair<DType, Shape>> specs = {
      {DType::F32, {3, 5}},    {DType::BF16, {7}},
      {DType::F16, {2, 3, 4}}, {DType::F32, {}},
      {DType::I64, {4}},       {DType::U8, {0, 3}},
      {DType::I8, {5}},        {DType::I32, {1, 1, 1, 1, 2}},
      {DType::F32, {300, 2}}};
  NamedTensors out;
  storage.resize(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    TensorView v{specs[i].first, specs[i].second, nullptr};
    storage[i].resize(v.nbytes() + 1);
    for (auto& c : storage[i]) c = static_cast<unsigned char>(rng());
    v.data = storage[i].data();
    out.emplace_back("t." + std::to_string(i), v);
  }
  return out;
}

TEST(PthWriter, RoundTripAllDtypes) {
  TempDir dir;
  std::vector<std::vector<unsigned char>> storage;
  const NamedTensors named = random_tensors(storage);
  for (bool z64 : {false, true}) {
    const std::string path = dir.file(z64 ? "z64.pth" : "plain.pth");
    io::write_pth_impl(path, named, z64);
    const TensorFile f = read_pth(path);
    ASSERT_EQ(f.order.size(), named.size());
    for (size_t i = 0; i < named.size(); ++i) {
      EXPECT_EQ(f.order[i], named[i].first);
      EXPECT_TRUE(same_tensor(f.get(named[i].first), named[i].second)) << named[i].first;
    }
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(::getpid())));
  }
}

// A zip built by hand: strided views and two tensors sharing one storage.
TEST(PthReader, SharedAndStridedStorages) {
  TempDir dir;
  std::vector<float> storage(12);
  for (int i = 0; i < 12; ++i) storage[size_t(i)] = float(i);
  std::vector<io::PickledTensor> ts(3);
  ts[0] = {"whole", "torch.FloatStorage", "0", 12, 0, {3, 4}, {4, 1}};
  ts[1] = {"row2", "torch.FloatStorage", "0", 12, 8, {4}, {1}};
  ts[2] = {"transposed", "torch.FloatStorage", "0", 12, 0, {4, 3}, {1, 4}};
  const std::string pkl = io::pickle_state_dict(ts);
  const std::string path = dir.file("m.pth");
  {
    std::ofstream o(path, std::ios::binary);
    io::ZipWriter zip(o);
    zip.add("m/data.pkl", pkl.data(), pkl.size());
    zip.add("m/data/0", storage.data(), storage.size() * 4);
    zip.finish();
  }
  const TensorFile f = read_pth(path);
  EXPECT_EQ(to_f32(f.get("row2")), (std::vector<float>{8, 9, 10, 11}));
  EXPECT_EQ(to_f32(f.get("transposed")),
            (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  EXPECT_EQ(f.get("whole").data,
            f.get("row2").data ? static_cast<const float*>(f.get("row2").data) - 8 : nullptr);
}

}  // namespace
}  // namespace rwkv7
