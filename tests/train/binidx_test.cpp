// binidx training data: written by `rwkv7 data binidx` and by an independent Python writer
// (struct only, from the format's description), read back in place, damaged files refused
// with the file and the fault named, and training from binidx equal to training from text.
#include "io/binidx.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/cli_support.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/train.hpp"
#include "train/data.hpp"

namespace rwkv7 {
namespace {

using testing::quote;
using testing::run_cli;
using testing::run_command;
using testing::slurp;
using testing::TempDir;

std::vector<int32_t> bytes_of(const std::string& s) {
  std::vector<int32_t> v;
  for (unsigned char c : s) v.push_back(c);
  return v;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Binidx, JsonlRoundTripIsEachDocumentsBytesThenZero) {
  TempDir dir;
  std::ofstream(dir.file("in.jsonl"))
      << "{\"text\": \"Hello\"}\n{\"text\": \"\"}\n\n{\"text\": \"w\\u00f6rld\\n\"}\n";
  const auto sum =
      train::make_binidx(dir.file("in.jsonl"), dir.file("out.bin"), Tokenizer::bytes());
  EXPECT_EQ(sum.documents, 2);
  EXPECT_EQ(sum.bin_path, dir.file("out.bin"));
  std::vector<int32_t> expected = bytes_of("Hello");
  expected.push_back(0);
  for (int32_t t : bytes_of("w\xc3\xb6rld\n")) expected.push_back(t);
  expected.push_back(0);
  const BinidxData b = open_binidx(dir.file("out"));
  EXPECT_EQ(b.type, BinidxType::U16);
  EXPECT_EQ(b.sequences, 2);
  EXPECT_EQ(b.documents, 2);
  ASSERT_EQ(b.tokens, int64_t(expected.size()));
  // Through the training loader, given as the prefix, the .bin and the .idx.
  for (const std::string& given : {dir.file("out"), dir.file("out.bin"), dir.file("out.idx")}) {
    const train::TokenData d = train::load_token_data({given}, Tokenizer::bytes());
    EXPECT_EQ(d.tokens.to_vector(), expected) << given;
  }
  // The temporary files were renamed away.
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(Binidx, WorldVocabularyRoundTripThroughTheCli) {
  const std::string vocab =
      (std::filesystem::path(RWKV7_SOURCE_DIR) / ".." / "shared/vocab/rwkv_vocab_v20230424.txt")
          .string();
  if (!std::filesystem::exists(vocab)) GTEST_SKIP() << vocab << " is absent";
  TempDir dir;
  const std::string a = "The quick brown fox.", b = "Jumps over\n\nthe lazy dog?";
  std::ofstream(dir.file("in.jsonl")) << nlohmann::json{{"text", a}}.dump() << "\n"
                                      << nlohmann::json{{"text", b}}.dump() << "\n";
  auto r = run_cli("data binidx " + quote(dir.file("in.jsonl")) + " " + quote(dir.file("w")) +
                   " --vocab " + quote(vocab));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("2 documents"), std::string::npos) << r.out;
  const Tokenizer tok = Tokenizer::load_world(vocab);
  std::vector<int32_t> expected = tok.encode(a);
  expected.push_back(0);
  for (int32_t t : tok.encode(b)) expected.push_back(t);
  expected.push_back(0);
  EXPECT_EQ(train::load_token_data({dir.file("w")}, tok).tokens.to_vector(), expected);
}

// The writer below knows only the format's description (src/io/binidx.hpp), not our code.
constexpr const char* kPythonWriter = R"PY(
import struct, sys
prefix, fmt, code = sys.argv[1], sys.argv[2], int(sys.argv[3])
docs = [[5, 6, 7, 0], [200, 0], [1, 2, 3, 4, 0]]
width = struct.calcsize('<' + fmt)
with open(prefix + '.bin', 'wb') as f:
    for d in docs:
        f.write(struct.pack('<%d%s' % (len(d), fmt), *d))
sizes = [len(d) for d in docs]
pointers, at = [], 0
for s in sizes:
    pointers.append(at)
    at += s * width
with open(prefix + '.idx', 'wb') as f:
    f.write(b'MMIDIDX\x00\x00')
    f.write(struct.pack('<Q', 1))
    f.write(struct.pack('<B', code))
    f.write(struct.pack('<Q', len(sizes)))
    f.write(struct.pack('<Q', len(sizes) + 1))
    f.write(struct.pack('<%di' % len(sizes), *sizes))
    f.write(struct.pack('<%dq' % len(sizes), *pointers))
    f.write(struct.pack('<%dq' % (len(sizes) + 1), *range(len(sizes) + 1)))
)PY";

TEST(Binidx, ReadsFilesOfAnIndependentWriterInEveryTokenType) {
  TempDir dir;
  std::ofstream(dir.file("writer.py")) << kPythonWriter;
  const std::vector<int32_t> expected = {5, 6, 7, 0, 200, 0, 1, 2, 3, 4, 0};
  const std::pair<const char*, int> types[] = {{"H", 8}, {"B", 1}, {"i", 4}, {"q", 5}, {"h", 3}};
  for (auto [fmt, code] : types) {
    const std::string prefix = dir.file(std::string("ds-") + fmt);
    auto r = run_command("python3 " + quote(dir.file("writer.py")) + " " + quote(prefix) + " " +
                         fmt + " " + std::to_string(code));
    if (r.exit_code != 0 && r.err.find("python3: not found") != std::string::npos)
      GTEST_SKIP() << "python3 is absent";
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const BinidxData b = open_binidx(prefix);
    EXPECT_EQ(int(b.type), code);
    EXPECT_EQ(b.documents, 3);
    EXPECT_EQ(train::load_token_data({prefix}, Tokenizer::bytes()).tokens.to_vector(), expected)
        << fmt;
  }
}

class BinidxDamage : public ::testing::Test {
 protected:
  void SetUp() override {
    prefix = dir.file("d");
    write_binidx(prefix, BinidxType::U16, [](const BinidxSequenceSink& add) {
      add(std::vector<int32_t>{1, 2, 3, 0});
      add(std::vector<int32_t>{4, 5, 0});
    });
    idx = slurp(prefix + ".idx");
    bin = slurp(prefix + ".bin");
  }
  // open_binidx's message after the files were replaced by these bytes.
  std::string open_with(const std::string& idx_bytes, const std::string& bin_bytes) {
    std::ofstream(prefix + ".idx", std::ios::binary | std::ios::trunc) << idx_bytes;
    std::ofstream(prefix + ".bin", std::ios::binary | std::ios::trunc) << bin_bytes;
    return error_of([&] { open_binidx(prefix); });
  }
  static std::string patched(std::string s, size_t at, const std::string& bytes) {
    return s.replace(at, bytes.size(), bytes);
  }
  TempDir dir;
  std::string prefix, idx, bin;
};

// Offsets in a 2-sequence .idx: header 34 bytes, sizes at 34, pointers at 42, doc_idx at 58.
TEST_F(BinidxDamage, EachFaultIsNamedWithItsFile) {
  ASSERT_EQ(idx.size(), 34u + 2 * 4 + 2 * 8 + 3 * 8);
  ASSERT_EQ(open_with(idx, bin), "(no error)");
  const std::string in_idx = prefix + ".idx: ", in_bin = prefix + ".bin: ";
  auto expect = [](const std::string& msg, const std::string& start, const std::string& word) {
    EXPECT_EQ(msg.rfind(start, 0), 0u) << msg;
    EXPECT_NE(msg.find(word), std::string::npos) << msg;
  };
  expect(open_with(idx.substr(0, 20), bin), in_idx, "truncated");
  expect(open_with(idx.substr(0, idx.size() - 1), bin), in_idx, "truncated");
  expect(open_with(idx + "x", bin), in_idx, "inconsistent");
  expect(open_with(patched(idx, 0, "XX"), bin), in_idx, "magic");
  expect(open_with(patched(idx, 9, "\x02"), bin), in_idx, "version 2");
  expect(open_with(patched(idx, 17, "\x06"), bin), in_idx, "type code 6");
  expect(open_with(patched(idx, 18, "\xff\xff\xff\xff"), bin), in_idx, "inconsistent");
  expect(open_with(patched(idx, 34, std::string("\xff\xff\xff\xff", 4)), bin), in_idx, "negative");
  expect(open_with(patched(idx, 50, "\x07"), bin), in_idx, "back to back");
  expect(open_with(patched(idx, 58, "\x01"), bin), in_idx, "document index");
  expect(open_with(idx, bin.substr(0, bin.size() - 1)), in_bin, "truncated");
  expect(open_with(idx, bin + "zz"), in_bin, "trailing");
  std::filesystem::remove(prefix + ".bin");
  expect(error_of([&] { open_binidx(prefix); }), in_bin, "cannot open");
}

// Random damage to either file: every outcome is a clean open (and every token then readable)
// or an Error, never a crash or a read past the end of the mapping.
TEST_F(BinidxDamage, RandomCorruptionIsRefusedOrHarmless) {
  std::mt19937 rng{7};
  int refused = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string i = idx, b = bin;
    std::string& target = trial % 3 == 0 ? b : i;
    const int flips = 1 + int(rng() % 4);
    for (int f = 0; f < flips; ++f) target[rng() % target.size()] = char(rng());
    if (trial % 7 == 0) target.resize(rng() % target.size());
    std::ofstream(prefix + ".idx", std::ios::binary | std::ios::trunc) << i;
    std::ofstream(prefix + ".bin", std::ios::binary | std::ios::trunc) << b;
    try {
      const BinidxData d = open_binidx(prefix);
      int64_t sum = 0;
      for (int64_t t = 0; t < d.tokens; ++t) sum += d.at(t);
      EXPECT_LE(d.tokens * binidx_type_bytes(d.type), int64_t(d.bin->size()));
      (void)sum;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 100);  // most damage is caught
}

TEST(Binidx, TokensOutsideTheVocabularyAndMixedDataAreRefused) {
  TempDir dir;
  write_binidx(dir.file("big"), BinidxType::U16, [](const BinidxSequenceSink& add) {
    add(std::vector<int32_t>{1, 300, 2});
  });
  std::ofstream(dir.file("t.txt")) << "some text";
  std::string msg = error_of([&] {
    train::load_token_data({dir.file("big"), dir.file("t.txt")}, Tokenizer::bytes());
  });
  EXPECT_NE(msg.find("only --data"), std::string::npos) << msg;
  EXPECT_THROW(write_binidx(dir.file("u8"), BinidxType::U8,
                            [](const BinidxSequenceSink& add) { add(std::vector<int32_t>{256}); }),
               Error);
  auto r = run_cli("train --layers 1 --embd 16 --head-size 16 --data " + quote(dir.file("big")) +
                   " --steps 1 --batch 1 --ctx 1 --val-fraction 0 -t 1 -o " + quote(dir.file("o")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("token 300"), std::string::npos) << r.err;
}

// The same tokens from text and from binidx train to the same losses, step by step.
TEST(Binidx, TrainingFromBinidxEqualsTrainingFromTheSameTokensAsText) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 120; ++i)
    text += "Now is the winter of our discontent " + std::to_string(i) + "\n";
  std::ofstream(dir.file("t.txt")) << text;
  write_binidx(dir.file("t"), BinidxType::U16,
               [&](const BinidxSequenceSink& add) { add(bytes_of(text)); });
  auto run = [&](const std::string& data, const std::string& name) {
    auto r = run_cli("train --layers 2 --embd 32 --head-size 16 --data " + quote(data) +
                     " --steps 6 --batch 2 --ctx 24 --warmup 2 --seed 3 -t 1 --val-every 3 "
                     "-o " +
                     quote(dir.file(name)) + " --log-json " + quote(dir.file(name + ".jsonl")));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const size_t at = r.err.find("validation loss");
    return std::make_pair(slurp(dir.file(name + ".jsonl")),
                          at == std::string::npos ? std::string("?") : r.err.substr(at, 40));
  };
  const auto from_text = run(dir.file("t.txt"), "a"), from_binidx = run(dir.file("t.bin"), "b");
  EXPECT_FALSE(from_text.first.empty());
  EXPECT_EQ(from_text.first, from_binidx.first);  // every step's loss, lr and gradient norm
  EXPECT_NE(from_text.second, "?");
  EXPECT_EQ(from_text.second, from_binidx.second);
}

}  // namespace
}  // namespace rwkv7
