// Hostile and malformed input: every case must end in rwkv7::Error, never a crash, and no
// pickle is ever executed.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "../test_support.hpp"
#include "io/pickle.hpp"
#include "io/tensor_io.hpp"
#include "io/zip_reader.hpp"
#include "io/zip_writer.hpp"
#include "io_test_util.hpp"

namespace rwkv7 {
namespace {

using testing::expect_error;
using testing::TempDir;
using namespace std::string_literals;

std::string zip_with_pickle(const std::string& pkl) {
  std::ostringstream o;
  io::ZipWriter zip(o);
  zip.add("evil/data.pkl", pkl.data(), pkl.size());
  zip.add("evil/version", "3\n", 2);
  zip.finish();
  return o.str();
}

std::span<const unsigned char> bytes_of(const std::string& s) {
  return {reinterpret_cast<const unsigned char*>(s.data()), s.size()};
}

TEST(PickleHostile, OsSystemIsRefusedNotRun) {
  TempDir dir;
  const std::string marker = dir.file("pwned");
  const std::string cmd = "touch " + marker;
  std::string pkl =
      "\x80\x02"
      "cos\nsystem\nq\x00X"s;
  const uint32_t n = uint32_t(cmd.size());
  pkl += std::string(reinterpret_cast<const char*>(&n), 4) + cmd + "q\x01\x85q\x02Rq\x03."s;
  const std::string path = dir.file("evil.pth");
  testing::write_bytes(path, zip_with_pickle(pkl));
  expect_error([&] { read_pth(path); }, {path, "pickle refers to 'os.system', which is not allowed",
                                         "a pickle is code; only tensor checkpoints are accepted"});
  expect_error([&] { read_tensor_file(path); }, {"'os.system'"});
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(PickleHostile, OtherGlobalsAndCallsAreRefused) {
  // builtins.eval via protocol 4 STACK_GLOBAL.
  const std::string eval =
      "\x80\x04\x8c\x08"
      "builtins\x8c\x04"
      "eval\x93\x8c\x01"
      "1\x85R.";
  expect_error([&] { io::unpickle_state_dict(bytes_of(eval), "x.pth"); },
               {"x.pth: pickle refers to 'builtins.eval'"});
  // An allowed global called in a way it is not allowed to be (storage type constructor).
  const std::string call =
      "\x80\x02"
      "ctorch\nFloatStorage\n)R.";
  expect_error([&] { io::unpickle_state_dict(bytes_of(call), "x.pth"); }, {"not allowed"});
  // Not a dict of tensors.
  const std::string list =
      "\x80\x02]K\x01"
      "a.";
  expect_error([&] { io::unpickle_state_dict(bytes_of(list), "x.pth"); }, {"not a dict"});
  const std::string intval =
      "\x80\x02}X\x01\x00\x00\x00"
      "aK\x01s."s;
  expect_error([&] { io::unpickle_state_dict(bytes_of(intval), "x.pth"); }, {"'a' is a int"});
  // Memo slot never set, unknown opcode, stack underflow.
  expect_error([&] { io::unpickle_state_dict(bytes_of("\x80\x02h\x05."), "x"); }, {"memo"});
  expect_error([&] { io::unpickle_state_dict(bytes_of("\x80\x02\xff."), "x"); }, {"opcode 0xff"});
  expect_error([&] { io::unpickle_state_dict(bytes_of("\x80\x02R."), "x"); }, {"underflow"});
  expect_error([&] { io::unpickle_state_dict(bytes_of(""), "x"); }, {"truncated"});
}

TEST(PickleHostile, TruncatedAndMutatedPicklesNeverCrash) {
  std::vector<io::PickledTensor> ts(2);
  ts[0] = {"a", "torch.FloatStorage", "0", 6, 0, {2, 3}, {3, 1}};
  ts[1] = {"b", "torch.HalfStorage", "1", 4, 0, {4}, {1}};
  const std::string good = io::pickle_state_dict(ts);
  EXPECT_EQ(io::unpickle_state_dict(bytes_of(good), "x").size(), 2u);
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_THROW(io::unpickle_state_dict(bytes_of(good.substr(0, n)), "x"), Error) << n;
  }
  std::mt19937 rng(1);
  int rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bad = good;
    const int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) bad[rng() % bad.size()] = char(rng());
    try {
      // Accepted mutations must still describe tensors consistently.
      for (const io::PickledTensor& t : io::unpickle_state_dict(bytes_of(bad), "mutated.pkl"))
        EXPECT_EQ(t.shape.size(), t.stride.size()) << t.name << " (trial " << trial << ")";
    } catch (const Error& e) {
      ++rejected;
      EXPECT_NE(std::string(e.what()).find("mutated.pkl"), std::string::npos) << e.what();
    }
  }
  // Most random flips break the pickle: if none is refused, the unpickler checks nothing.
  EXPECT_GT(rejected, 300);
}

TEST(PickleStateDict, NestedUnderStateDictAndUnsupportedStorage) {
  std::vector<io::PickledTensor> ts(1);
  ts[0] = {"w", "torch.FloatStorage", "0", 6, 0, {2, 3}, {3, 1}};
  const std::string inner = io::pickle_state_dict(ts);
  // {'epoch': 3, 'state_dict': <inner>} (inner without its PROTO and STOP)
  const std::string outer =
      "\x80\x02}(X\x05\x00\x00\x00"
      "epochK\x03X\x0a\x00\x00\x00"
      "state_dict"s +
      inner.substr(2, inner.size() - 3) + "u.";
  const auto got = io::unpickle_state_dict(bytes_of(outer), "x");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].name, "w");
  EXPECT_EQ(got[0].shape, (std::vector<int64_t>{2, 3}));

  TempDir dir;
  ts[0].storage_type = "torch.DoubleStorage";
  const std::string pkl = io::pickle_state_dict(ts);
  std::ostringstream o;
  io::ZipWriter zip(o);
  zip.add("d/data.pkl", pkl.data(), pkl.size());
  const std::string data(48, '\0');
  zip.add("d/data/0", data.data(), data.size());
  zip.finish();
  const std::string path = dir.file("d.pth");
  testing::write_bytes(path, o.str());
  expect_error([&] { read_pth(path); },
               {path, "tensor 'w'", "torch.DoubleStorage", "not supported"});
}

TEST(ZipHostile, TruncatedPthAtManyLengths) {
  RWKV7_REQUIRE_SHARED(src, "golden/rand-L2-D128.pth");
  TempDir dir;
  const std::string bytes = testing::read_bytes(src);
  const std::string path = dir.file("cut.pth");
  std::vector<size_t> lengths = {1,
                                 3,
                                 4,
                                 22,
                                 30,
                                 100,
                                 6000,
                                 bytes.size() / 2,
                                 bytes.size() - 200,
                                 bytes.size() - 23,
                                 bytes.size() - 22,
                                 bytes.size() - 1};
  for (size_t n = 0; n < bytes.size(); n += bytes.size() / 17) lengths.push_back(n);
  for (size_t n : lengths) {
    testing::write_bytes(path, bytes.substr(0, n));
    EXPECT_THROW(read_pth(path), Error) << n;
    EXPECT_THROW(read_tensor_file(path), Error) << n;
  }
}

TEST(ZipHostile, EntrySizesAndOffsetsPastTheEnd) {
  RWKV7_REQUIRE_SHARED(src, "golden/rand-L2-D128.pth");
  TempDir dir;
  const std::string bytes = testing::read_bytes(src);
  const std::string path = dir.file("bad.pth");
  const size_t cd = bytes.find("PK\x01\x02");
  ASSERT_NE(cd, std::string::npos);
  const size_t second = bytes.find("PK\x01\x02", cd + 4);  // data/0, the big storage
  auto patch32 = [&](size_t at, uint32_t v) {
    std::string b = bytes;
    std::memcpy(&b[at], &v, 4);
    return b;
  };
  testing::write_bytes(path, patch32(second + 20, 0x7ffffff0u));
  expect_error([&] { read_pth(path); }, {path, "runs past the end"});
  testing::write_bytes(path, patch32(second + 42, 0x7ffffff0u));  // local header offset
  expect_error([&] { read_pth(path); }, {"local header"});
  testing::write_bytes(path, patch32(second + 42, 0xffffffffu));  // zip64 marker, no extra
  EXPECT_THROW(read_pth(path), Error);
  // EOCD central-directory offset out of range.
  const size_t eocd = bytes.rfind("PK\x05\x06");
  const size_t loc = bytes.rfind("PK\x06\x07");
  ASSERT_NE(loc, std::string::npos);
  std::string b = bytes;
  const uint64_t huge = 0x7fffffffffffull;
  std::memcpy(&b[loc + 8], &huge, 8);
  testing::write_bytes(path, b);
  expect_error([&] { read_pth(path); }, {"zip64"});
  b = bytes;
  b[eocd - 20] = 'X';  // break the locator: the 32-bit fields are used
  const uint32_t far = 0x7ffffff0u;
  std::memcpy(&b[eocd + 16], &far, 4);
  testing::write_bytes(path, b);
  expect_error([&] { read_pth(path); }, {"central directory"});
  // Compressed entries are refused clearly.
  b = bytes;
  b[second + 10] = 8;
  testing::write_bytes(path, b);
  expect_error([&] { read_pth(path); }, {"compressed", "method 8"});
}

TEST(IoHostile, EmptyWrongMagicAndGguf) {
  TempDir dir;
  const std::string empty = dir.file("empty.bin");
  testing::write_bytes(empty, "");
  expect_error([&] { read_tensor_file(empty); }, {empty, "is empty"});
  expect_error([&] { read_pth(empty); }, {"is empty"});
  expect_error([&] { read_safetensors(empty); }, {"is empty"});
  const std::string junk = dir.file("junk.bin");
  testing::write_bytes(junk, "hello, this is not a checkpoint at all");
  expect_error([&] { read_tensor_file(junk); }, {junk, "unknown"});
  EXPECT_THROW(read_pth(junk), Error);
  EXPECT_THROW(read_safetensors(junk), Error);
  const std::string gguf = dir.file("m.gguf");
  testing::write_bytes(gguf, std::string("GGUF\x03\x00\x00\x00", 8) + std::string(64, '\0'));
  EXPECT_TRUE(read_tensor_file(gguf).tensors.empty());  // a valid GGUF with nothing in it
  testing::write_bytes(gguf, std::string("GGUF\x03\x00\x00\x00", 8) + std::string(8, '\xff'));
  expect_error([&] { read_tensor_file(gguf); }, {gguf, "GGUF"});  // more tests: tests/quant
  expect_error([&] { read_tensor_file(dir.file("missing.pth")); }, {"missing.pth", "cannot open"});
}

}  // namespace
}  // namespace rwkv7
