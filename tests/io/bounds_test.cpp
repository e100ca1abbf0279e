// Issue 14 regressions: sizes read from a file are bounded before anything is allocated, size
// arithmetic cannot overflow, and no recursion or loop depends on a declared size. Each test
// here failed (crash, sanitizer report, hang or a gigabyte allocation) before the fix.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/checked.hpp"
#include "core/tensor.hpp"
#include "io/gguf.hpp"
#include "io/jsonl.hpp"
#include "io/pickle.hpp"
#include "io/tensor_io.hpp"
#include "io/zip_writer.hpp"
#include "io_test_util.hpp"
#include "rwkv7/model.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7 {
namespace {

using testing::expect_error;
using testing::TempDir;
using testing::write_bytes;
using namespace std::string_literals;

// A .pth holding one tensor with the given view of a storage of `storage_bytes` bytes.
std::string pth_with_view(Shape shape, Shape stride, int64_t offset, size_t storage_bytes) {
  io::PickledTensor t;
  t.name = "w";
  t.storage_type = "torch.FloatStorage";
  t.storage_key = "0";
  t.storage_numel = int64_t(storage_bytes / 4);
  t.offset = offset;
  t.shape = std::move(shape);
  t.stride = std::move(stride);
  const std::string pkl = io::pickle_state_dict({t});
  const std::string storage(storage_bytes, '\x01');
  std::ostringstream o;
  io::ZipWriter zip(o);
  zip.add("m/data.pkl", pkl.data(), pkl.size());
  zip.add("m/data/0", storage.data(), storage.size());
  zip.finish();
  return o.str();
}

TEST(PthBounds, StrideZeroViewCannotOutgrowItsStorage) {
  TempDir dir;
  const std::string path = dir.file("expand.pth");
  // 2^28 elements viewed (stride 0) in a 4-byte storage: 1 GiB allocated before the fix.
  write_bytes(path, pth_with_view({int64_t(1) << 28}, {0}, 0, 4));
  expect_error([&] { read_pth(path); }, {path, "tensor 'w'", "more elements than its storage"});
  // numel * 4 wraps to 0 (2^62 elements): a write past a 4-byte buffer before the fix.
  write_bytes(path, pth_with_view({int64_t(1) << 62}, {0}, 0, 4));
  expect_error([&] { read_pth(path); }, {path, "tensor 'w'"});
  write_bytes(path, pth_with_view({2, int64_t(1) << 61}, {1, 0}, 0, 8));
  expect_error([&] { read_pth(path); }, {path, "tensor 'w'"});
  // A legitimate strided (transposed) view still loads.
  write_bytes(path, pth_with_view({3, 2}, {1, 3}, 0, 24));
  EXPECT_EQ(read_pth(path).get("w").shape, (Shape{3, 2}));
}

TEST(ShapeBounds, ZeroDimensionDoesNotHideAnOverflow) {
  const int64_t big = int64_t(1) << 40;
  EXPECT_THROW(shape_numel({0, big, big}), Error);  // signed overflow before the fix
  EXPECT_EQ(shape_numel({0, 5}), 0);
  EXPECT_EQ(shape_numel({3, 5}), 15);
  EXPECT_THROW(shape_numel({-1, 5}), Error);
  uint64_t n = 0;
  EXPECT_FALSE(checked::numel({0, big}, &n, 1 << 20));
  EXPECT_TRUE(checked::numel({0, 7}, &n, 1 << 20));
  EXPECT_EQ(n, 0u);
  TempDir dir;
  const std::string path = dir.file("zero.pth");
  write_bytes(path, pth_with_view({0, big, big}, {0, 1, 1}, 0, 4));
  expect_error([&] { read_pth(path); }, {path, "tensor 'w'"});
}

// GGUF bytes by hand: header, kvs and tensor infos as given, aligned data of `data_bytes`.
struct GgufBytes {
  std::string b = std::string("GGUF") + std::string("\x03\0\0\0", 4);
  std::string kv, infos;
  uint64_t n_kv = 0, n_tensors = 0;
  static std::string u32(uint32_t v) { return std::string(reinterpret_cast<char*>(&v), 4); }
  static std::string u64(uint64_t v) { return std::string(reinterpret_cast<char*>(&v), 8); }
  static std::string str(const std::string& s) { return u64(s.size()) + s; }
  void add_str(const std::string& k, const std::string& v) {
    kv += str(k) + u32(8) + str(v);
    ++n_kv;
  }
  void add_u32(const std::string& k, uint32_t v) {
    kv += str(k) + u32(4) + u32(v);
    ++n_kv;
  }
  void add_tensor(const std::string& name, std::vector<uint64_t> ne, uint64_t offset = 0) {
    infos += str(name) + u32(uint32_t(ne.size()));
    for (uint64_t d : ne) infos += u64(d);
    infos += u32(0) + u64(offset);
    ++n_tensors;
  }
  std::string finish(size_t data_bytes) const {
    std::string out = b + u64(n_tensors) + u64(n_kv) + kv + infos;
    out.append((32 - out.size() % 32) % 32, '\0');
    return out + std::string(data_bytes, '\0');
  }
};

TEST(GgufBounds, LoraWithAZeroDimensionAndAHugeOneDoesNotHang) {
  TempDir dir;
  const std::string path = dir.file("hang.gguf");
  GgufBytes g;
  g.add_str("general.architecture", "rwkv7");
  g.add_u32("rwkv7.wkv.head_size", 4);
  g.add_tensor("blk.1.time_mix_w1.weight", {0, uint64_t(1) << 59});  // a 2^59 loop before
  write_bytes(path, g.finish(32));
  const auto t0 = std::chrono::steady_clock::now();
  expect_error([&] { read_gguf(path); }, {path, "blk.1.time_mix_w1.weight", "implausible shape"});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  // An empty LoRA of a sane shape still maps (to an empty official tensor).
  GgufBytes ok;
  ok.add_str("general.architecture", "rwkv7");
  ok.add_u32("rwkv7.wkv.head_size", 4);
  ok.add_tensor("blk.1.time_mix_w1.weight", {0, 8});
  write_bytes(path, ok.finish(32));
  EXPECT_EQ(read_gguf(path).get("blocks.1.att.w1").shape, (Shape{0, 8}));
}

TEST(GgufBounds, ArrayLengthIsChargedAgainstTheFileSize) {
  TempDir dir;
  const std::string path = dir.file("array.gguf");
  // 4 MiB of u8 elements: each becomes a ~100-byte value in memory (400 MiB before the fix).
  const uint64_t n = uint64_t(4) << 20;
  std::string bytes = std::string("GGUF") + GgufBytes::u32(3) + GgufBytes::u64(0) +
                      GgufBytes::u64(1) + GgufBytes::str("big") + GgufBytes::u32(9) +
                      GgufBytes::u32(0) + GgufBytes::u64(n) + std::string(size_t(n), '\x07');
  write_bytes(path, bytes);
  expect_error([&] { read_gguf(path); }, {path, "key 'big'", "bytes per file byte"});
}

TEST(NameBounds, LongTensorNamesDoNotOverflowTheStack) {
  // std::regex recursed once per character: ~30 KB names crashed every loader.
  TempDir dir;
  const std::string name = "blocks.1." + std::string(200000, 'x');
  const std::string st = dir.file("long.safetensors");
  const float one = 1;
  write_safetensors(st, {{"emb.weight", TensorView{DType::F32, {1, 1}, &one}},
                         {name, TensorView{DType::F32, {1}, &one}}});
  expect_error([&] { Model::load(st); }, {st});
  GgufBytes g;
  g.add_str("general.architecture", "rwkv7");
  g.add_u32("rwkv7.wkv.head_size", 4);
  g.add_tensor("blk.1." + std::string(200000, 'y'), {1});
  const std::string gg = dir.file("long.gguf");
  write_bytes(gg, g.finish(32));
  EXPECT_EQ(read_gguf(gg).tensors.size(), 1u);
  EXPECT_THROW(Model::load(gg), Error);
}

TEST(PickleBounds, ArenaGrowsBoundedPerInputByte) {
  // One EMPTY_DICT per byte: ~300 bytes of memory per input byte before the fix.
  const std::string pkl = "\x80\x02" + std::string(size_t(1) << 20, '}') + ".";
  expect_error(
      [&] {
        io::unpickle_state_dict({reinterpret_cast<const unsigned char*>(pkl.data()), pkl.size()},
                                "bomb.pth");
      },
      {"bomb.pth: data.pkl", "more memory than a state dict of its size"});
  // Reusing one memoized list in many OrderedDict() calls is charged too.
  std::string reuse =
      "\x80\x02"
      "ccollections\nOrderedDict\nq\x00("s;
  for (int i = 0; i < 1000; ++i) reuse += "(K\x01K\x02t";
  reuse += "lq\x01";
  for (int i = 0; i < 40000; ++i) reuse += "h\x00h\x01\x85R0"s;
  reuse += "}.";
  expect_error(
      [&] {
        io::unpickle_state_dict(
            {reinterpret_cast<const unsigned char*>(reuse.data()), reuse.size()}, "reuse.pth");
      },
      {"reuse.pth: data.pkl", "more memory"});
}

TEST(SafetensorsBounds, DeepNestingDuplicateKeysAndOverlapsAreRefused) {
  TempDir dir;
  const std::string path = dir.file("h.safetensors");
  auto file = [&](const std::string& header, size_t data) {
    std::string h = header;
    const uint64_t n = h.size();
    write_bytes(path,
                std::string(reinterpret_cast<const char*>(&n), 8) + h + std::string(data, '\0'));
  };
  file("{\"__metadata__\": {\"a\": " + std::string(100000, '[') + std::string(100000, ']') + "}}",
       0);
  expect_error([&] { read_safetensors(path); }, {path, "nests deeper"});
  file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
           "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
       8);
  expect_error([&] { read_safetensors(path); }, {path, "key 'a' twice"});
  file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
       8);
  expect_error([&] { read_safetensors(path); }, {path, "'a' and 'b' overlap"});
  file(R"({"a": {"dtype": "F32", "shape": [0, 4611686018427387904], "data_offsets": [0, 0]}})", 0);
  expect_error([&] { read_safetensors(path); }, {path, "tensor 'a'"});
  file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
           "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
           "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
       8);
  EXPECT_EQ(read_safetensors(path).tensors.size(), 3u);
}

TEST(VocabBounds, HugeIdIsRefusedBeforeSizingTables) {
  TempDir dir;
  const std::string path = dir.file("vocab.txt");
  std::string text;
  for (int b = 0; b < 256; ++b) {
    char lit[16];
    std::snprintf(lit, sizeof lit, "b'\\x%02x'", b);
    text += std::to_string(b + 1) + " " + lit + " 1\n";
  }
  text += "99999999 'ab' 2\n";  // 3 GB of tables before the fix
  write_bytes(path, text);
  expect_error([&] { Tokenizer::load_world(path); },
               {path + ":257", "token id 99999999 is larger than a file of"});
}

TEST(JsonlBounds, LongLinesAndDeepNestingAreRefused) {
  TempDir dir;
  const std::string path = dir.file("d.jsonl");
  write_bytes(path, "{\"text\": \"a\"}\n{\"text\": \"b\", \"x\": " + std::string(100000, '[') +
                        std::string(100000, ']') + "}\n");
  std::vector<std::string> got;
  expect_error(
      [&] { for_each_jsonl_text(path, [&](std::string&& t, int64_t) { got.push_back(t); }); },
      {path + ":2", "nests deeper"});
  EXPECT_EQ(got, std::vector<std::string>{"a"});
  // Other keys are discarded as they are parsed; the text survives.
  write_bytes(path, "{\"meta\": [1, 2, {\"k\": \"v\"}], \"text\": \"hi\", \"n\": 3}\n\n  \n[1]\n");
  got.clear();
  expect_error(
      [&] { for_each_jsonl_text(path, [&](std::string&& t, int64_t) { got.push_back(t); }); },
      {path + ":4", "expected a JSON object"});
  EXPECT_EQ(got, std::vector<std::string>{"hi"});
  // A line over the limit is refused before it is held whole.
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << "{\"text\": \"a\"}\n{\"text\": \"";
    const std::string chunk(1 << 20, 'z');
    for (size_t k = 0; k <= kMaxJsonlLineBytes >> 20; ++k) out << chunk;
    out << "\"}\n";
  }
  expect_error([&] { for_each_jsonl_text(path, [](std::string&&, int64_t) {}); },
               {path + ":2", "line is longer than 64 MiB"});
}

}  // namespace
}  // namespace rwkv7
