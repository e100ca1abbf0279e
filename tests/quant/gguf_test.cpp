// GGUF v3: raw round trip (every metadata type, all five tensor types), the llama.cpp rwkv7
// mapping both ways, and hostile files (truncations, huge counts, bad type ids, bit flips).
#include "io/gguf.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "core/quant.hpp"
#include "io/io_test_util.hpp"
#include "io/tensor_io.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

// A numeric value of the given type (integers in i, floating point in f).
GgufValue typed(GgufType type, int64_t i, double f = 0) {
  GgufValue v;
  v.type = type;
  v.i = i;
  v.f = f;
  return v;
}

using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

struct Sample {
  GgufFile g;
  std::vector<std::vector<unsigned char>> buffers;
};

Sample make_sample(uint32_t alignment = 0) {
  Sample s;
  GgufFile& g = s.g;
  g.kv.emplace_back("general.architecture", GgufValue::str("test"));
  if (alignment) g.kv.emplace_back("general.alignment", GgufValue::u32(alignment));
  g.kv.emplace_back("a.u8", typed(GgufType::U8, 200));
  g.kv.emplace_back("a.i8", typed(GgufType::I8, -100));
  g.kv.emplace_back("a.u16", typed(GgufType::U16, 60000));
  g.kv.emplace_back("a.i16", typed(GgufType::I16, -30000));
  g.kv.emplace_back("a.u32", GgufValue::u32(4000000000u));
  g.kv.emplace_back("a.i32", typed(GgufType::I32, -2000000000));
  g.kv.emplace_back("a.f32", GgufValue::f32(0.1f));
  g.kv.emplace_back("a.bool", typed(GgufType::BOOL, 1));
  g.kv.emplace_back("a.u64", typed(GgufType::U64, int64_t(0xfedcba9876543210ull)));
  g.kv.emplace_back("a.i64", typed(GgufType::I64, -5));
  g.kv.emplace_back("a.f64", typed(GgufType::F64, 0, 1e300));
  g.kv.emplace_back("a.str", GgufValue::str(std::string("h\0llo", 5)));
  g.kv.emplace_back("a.strs",
                    GgufValue::array(GgufType::STRING, {GgufValue::str("x"), GgufValue::str("")}));
  g.kv.emplace_back("a.ints", GgufValue::array(GgufType::I32, {typed(GgufType::I32, 7),
                                                               typed(GgufType::I32, -7)}));
  g.kv.emplace_back("a.empty", GgufValue::array(GgufType::F32, {}));
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  const DType types[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0};
  for (int k = 0; k < 5; ++k) {
    GgufTensor t{"t" + std::to_string(k), types[k], {64, 3}, nullptr};
    if (k == 1) t.ne = {5};
    if (k == 2) t.ne = {3, 2, 2, 1};
    std::vector<float> f(size_t(shape_numel(t.ne)));
    for (float& x : f) x = dist(rng);
    std::vector<unsigned char> b(t.nbytes());
    for (size_t i = 0; i < f.size(); ++i) {
      if (t.dtype == DType::F32) std::memcpy(&b[4 * i], &f[i], 4);
      if (t.dtype == DType::F16 || t.dtype == DType::BF16) {
        uint16_t h = t.dtype == DType::F16 ? f32_to_f16(f[i]) : f32_to_bf16(f[i]);
        std::memcpy(&b[2 * i], &h, 2);
      }
    }
    if (is_quantized(t.dtype)) quantize_row(t.dtype, f.data(), b.data(), int64_t(f.size()));
    s.buffers.push_back(std::move(b));
    t.data = s.buffers.back().data();
    g.tensors.push_back(t);
  }
  return s;
}

void expect_same(const GgufFile& a, const GgufFile& b) {
  ASSERT_EQ(a.kv.size(), b.kv.size());
  for (size_t i = 0; i < a.kv.size(); ++i) {
    EXPECT_EQ(a.kv[i].first, b.kv[i].first);
    EXPECT_TRUE(a.kv[i].second == b.kv[i].second) << a.kv[i].first;
  }
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const GgufTensor &x = a.tensors[i], &y = b.tensors[i];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.dtype, y.dtype);
    EXPECT_EQ(x.ne, y.ne);
    ASSERT_EQ(x.nbytes(), y.nbytes());
    EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes()), 0) << x.name;
  }
}

TEST(GgufRaw, RoundTripEveryType) {
  TempDir dir;
  for (uint32_t alignment : {0u, 64u, 1u}) {
    Sample s = make_sample(alignment);
    const std::string path = dir.file("a.gguf");
    write_gguf_raw(path, s.g);
    GgufFile back = read_gguf_raw(MappedFile::open(path));
    expect_same(s.g, back);
    EXPECT_EQ(back.alignment, alignment ? alignment : 32u);
    // Through read_tensor_file: not rwkv7, so GGUF names and PyTorch-order shapes.
    TensorFile f = read_tensor_file(path);
    EXPECT_EQ(f.get("t2").shape, (Shape{1, 2, 2, 3}));
    EXPECT_EQ(f.get("t3").dtype, DType::Q8_0);
    EXPECT_EQ(f.metadata.at("a.u32"), "4000000000");
    EXPECT_EQ(f.metadata.at("a.strs"), "[2 x string]");
  }
}

// Offsets of the header fields of the sample, for patching.
std::string sample_bytes(TempDir& dir) {
  Sample s = make_sample();
  write_gguf_raw(dir.file("s.gguf"), s.g);
  return read_bytes(dir.file("s.gguf"));
}

void expect_error(TempDir& dir, const std::string& bytes, const std::string& needle) {
  write_bytes(dir.file("bad.gguf"), bytes);
  try {
    read_tensor_file(dir.file("bad.gguf"));
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void put64(std::string& b, size_t at, uint64_t v) { std::memcpy(&b[at], &v, 8); }
void put32(std::string& b, size_t at, uint32_t v) { std::memcpy(&b[at], &v, 4); }

TEST(GgufHostile, TruncatedAtEveryLength) {
  TempDir dir;
  const std::string full = sample_bytes(dir);
  const size_t header = full.find("t4") + 64;  // every length in the header, a sample after
  for (size_t n = 0; n < full.size(); n += n < header ? 1 : 7) {
    write_bytes(dir.file("t.gguf"), full.substr(0, n));
    EXPECT_THROW(read_tensor_file(dir.file("t.gguf")), Error) << "length " << n;
  }
}

TEST(GgufHostile, HugeCountsAndBadIds) {
  TempDir dir;
  const std::string full = sample_bytes(dir);
  std::string b = full;
  put64(b, 8, ~0ull);
  expect_error(dir, b, "tensor count");
  b = full;
  put64(b, 16, 1ull << 62);
  expect_error(dir, b, "metadata count");
  b = full;
  put32(b, 4, 99);
  expect_error(dir, b, "version 99");
  // First kv: key length (u64) + "general.architecture" + type (u32) + string length (u64).
  b = full;
  put64(b, 24, 1ull << 40);
  expect_error(dir, b, "implausible");
  b = full;
  put32(b, 24 + 8 + 20, 77);
  expect_error(dir, b, "unknown value type 77");
  b = full;
  put64(b, 24 + 8 + 20 + 4, 1ull << 50);
  expect_error(dir, b, "implausible");
  // Array length of "a.strs": find the key and patch the count after its element type.
  b = full;
  size_t at = b.find("a.strs") + 6 + 4 + 4;
  put64(b, at, 1ull << 60);
  expect_error(dir, b, "exceeds the file");
  // Tensor infos: "t3" (Q8_0): name, n_dims, ne[2], type, offset.
  at = b.find(std::string("t3", 2) + std::string("\x02\0\0\0", 4)) + 2;
  b = full;
  put32(b, at + 4 + 16, 11);  // Q3_K
  expect_error(dir, b, "'t3': ggml type id 11 is not supported");
  b = full;
  put32(b, at, 5);
  expect_error(dir, b, "5 dimensions");
  b = full;
  put64(b, at + 4, 48);  // Q8_0 row of 48
  expect_error(dir, b, "multiple of 32");
  b = full;
  put64(b, at + 4 + 8, 1ull << 50);
  expect_error(dir, b, "runs past the end");
  b = full;
  put64(b, at + 4, ~0ull);
  expect_error(dir, b, "implausible shape");
  b = full;
  put64(b, at + 4 + 16 + 4, 1ull << 63);
  expect_error(dir, b, "runs past the end");
  b = full;
  put64(b, at + 4 + 16 + 4, 8);
  expect_error(dir, b, "not a multiple of the alignment");
}

TEST(GgufHostile, RandomByteFlipsNeverCrash) {
  TempDir dir;
  const std::string full = sample_bytes(dir);
  std::mt19937 rng(11);
  const size_t header = full.find("t4") + 64;  // flips in the header and tensor infos
  const std::string path = dir.file("f.gguf");
  int rejected = 0, accepted = 0;
  for (int k = 0; k < 1000; ++k) {
    std::string b = full;
    for (int f = 0; f < 1 + k % 3; ++f) b[rng() % header] = char(rng());
    write_bytes(path, b);
    try {
      TensorFile t = read_tensor_file(path);
      // Whatever was accepted must lie inside the file: read every byte of every tensor (an
      // out-of-bounds view crashes here, or fails under ASan).
      for (const auto& [name, v] : t.tensors) {
        ASSERT_LE(v.nbytes(), b.size()) << name << " after flip set " << k;
        const auto* p = static_cast<const unsigned char*>(v.data);
        unsigned sum = 0;
        for (size_t i = 0; i < v.nbytes(); ++i) sum += p[i];
        (void)sum;
      }
      ++accepted;
    } catch (const Error& e) {
      ++rejected;
      // The error names the file it is about.
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  // Flips in the header must be caught some of the time; if none is, the reader checks nothing.
  EXPECT_GT(rejected, 100) << accepted << " accepted";
}

// Official checkpoint → llama.cpp names → back: every tensor identical (values and shapes).
TEST(GgufRwkv7, MappingRoundTripGolden) {
  RWKV7_REQUIRE_SHARED(pth, "golden/rand-L2-D128.pth");
  TempDir dir;
  const TensorFile src = read_tensor_file(pth);
  const GgufFile g = rwkv7_to_gguf(src, {});
  auto has = [&](const std::string& n) {
    for (const GgufTensor& t : g.tensors)
      if (t.name == n) return &t;
    return static_cast<const GgufTensor*>(nullptr);
  };
  ASSERT_TRUE(has("blk.1.time_mix_lerp_fused.weight"));
  EXPECT_EQ(has("blk.1.time_mix_lerp_fused.weight")->ne, (std::vector<int64_t>{128, 1, 1, 6}));
  EXPECT_EQ(has("token_embd.weight")->ne,
            (std::vector<int64_t>{128, src.get("emb.weight").shape[0]}));
  EXPECT_EQ(has("blk.0.time_mix_w1.weight")->ne[0], 128);
  EXPECT_EQ(has("blk.0.time_mix_r_k.weight")->ne, (std::vector<int64_t>{128}));
  ASSERT_TRUE(has("blk.0.time_mix_v2.weight"));  // llama.cpp's dummy copy of a2
  ASSERT_TRUE(has("token_embd_norm.bias") && has("output.weight") && has("blk.1.attn_norm_2.bias"));
  write_gguf_raw(dir.file("m.gguf"), g);
  const TensorFile back = read_tensor_file(dir.file("m.gguf"));
  EXPECT_EQ(back.metadata.at("general.architecture"), "rwkv7");
  EXPECT_EQ(back.metadata.at("rwkv7.wkv.head_size"), "64");
  for (const auto& [name, v] : src.tensors) {
    if (name == "blocks.0.att.v0" || name == "blocks.0.att.v1" || name == "blocks.0.att.v2") {
      EXPECT_FALSE(back.has(name)) << name;
      continue;
    }
    ASSERT_TRUE(back.has(name)) << name;
    const TensorView& w = back.get(name);
    EXPECT_EQ(w.shape, v.shape) << name;
    EXPECT_EQ(to_f32(w), to_f32(v)) << name;
  }
  for (const auto& [name, v] : back.tensors) EXPECT_TRUE(src.has(name)) << name;
}

TEST(GgufRwkv7, WorldTokenText) {
  EXPECT_EQ(rwkv_world_token_text("abc"), "abc");
  EXPECT_EQ(rwkv_world_token_text("\t\n\\"), "\\t\\n\\\\");
  EXPECT_EQ(rwkv_world_token_text("it's"), "it's");  // repr picks "..." quotes
  EXPECT_EQ(rwkv_world_token_text("'\""), "\\'\"");  // both: '...' with \' escaped
  EXPECT_EQ(rwkv_world_token_text("\xe4\xb8\x80"), "\\xe4\\xb8\\x80");
  EXPECT_EQ(rwkv_world_token_text(std::string("\0\x7f", 2)), "\\x00\\x7f");
}

}  // namespace
}  // namespace rwkv7
