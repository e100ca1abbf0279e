// State files with every compression: written by save_state, read back by load_state (the one
// reader behind forward/generate/chat --state-in, chat --session and the prefix cache's disk
// tier), old files still load, and hostile files are refused naming the file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "cli/cli_support.hpp"
#include "io/io_test_util.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/model.hpp"
#include "rwkv7/state_compress.hpp"

namespace rwkv7 {
namespace {

using testing::TempDir;
const std::string kModel = std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";

State read_some(const Model& m, const std::string& text) {
  State s = m.new_state();
  std::vector<int32_t> ids;
  for (unsigned char c : text) ids.push_back(c);
  m.forward(ids, s, Logits::None);
  return s;
}

TEST(StateFile, EveryCompressionLoadsAsItsDecompressedState) {
  auto m = Model::load(kModel);
  State s = read_some(*m, "ROMEO:\nBut soft, what light through yonder window breaks?\n");
  TempDir dir;
  for (const std::string& method : state_compression_methods()) {
    CompressOptions o;
    o.method = method;
    if (method.rfind("lowrank", 0) == 0) o.rank = 6;
    if (method.rfind("adaptive", 0) == 0) o.ratio = 0.3;
    const std::string path = dir.file(method + ".state");
    save_state(path, s, *m, o);
    std::string warning;
    State back = load_state(path, *m, &warning);
    EXPECT_TRUE(warning.empty()) << warning;
    State want = decompress_state(compress_state(s, o));
    EXPECT_EQ(back.wkv, want.wkv) << method;
    EXPECT_EQ(back.att_shift, want.att_shift) << method;
    EXPECT_EQ(back.tokens_consumed, s.tokens_consumed);
    const CompressedState info = read_state_file(path);
    EXPECT_EQ(info.method, method);
    EXPECT_EQ(info.model_shape, m->config().shape_string());
    // The file is the compressed bytes plus a header of at most a few KB.
    const auto file_size = std::filesystem::file_size(path);
    EXPECT_LT(file_size, info.bytes() + 4096) << method;
    EXPECT_GE(file_size, info.bytes()) << method;
  }
}

TEST(StateFile, FilesWrittenBeforeCompressionStillLoad) {
  auto m = Model::load(kModel);
  State s = read_some(*m, "JULIET:\nO Romeo, Romeo!");
  TempDir dir;
  const ModelConfig& c = m->config();
  // The version 1 layout, written directly (as save_state wrote it before compression existed).
  const std::string path = dir.file("v1.state");
  write_safetensors(
      path,
      {{"state.att_shift", TensorView{DType::F32, {c.n_layer, c.n_embd}, s.att_shift.data()}},
       {"state.ffn_shift", TensorView{DType::F32, {c.n_layer, c.n_embd}, s.ffn_shift.data()}},
       {"state.wkv",
        TensorView{DType::F32, {c.n_layer, c.n_head, c.head_size, c.head_size}, s.wkv.data()}}},
      {{"format", "rwkv7-state"},
       {"format_version", "1"},
       {"model_shape", c.shape_string()},
       {"model_fingerprint", m->fingerprint()},
       {"tokens_consumed", std::to_string(s.tokens_consumed)}});
  State back = load_state(path, *m);
  EXPECT_EQ(back.wkv, s.wkv);
  EXPECT_EQ(back.tokens_consumed, s.tokens_consumed);
  // And an f32 save is still exactly that layout (version 1, no compression key).
  save_state(dir.file("new.state"), s, *m);
  const TensorFile f = read_safetensors(dir.file("new.state"));
  EXPECT_EQ(f.metadata.at("format_version"), "1");
  EXPECT_EQ(f.metadata.count("compression"), 0u);
}

TEST(StateFile, HostileCompressedFilesAreRefusedNamingTheFile) {
  auto m = Model::load(kModel);
  State s = read_some(*m, "KING RICHARD III:\nNow is the winter of our discontent");
  TempDir dir;
  CompressOptions o;
  o.method = "adaptive-int8", o.energy = 0.9;
  const std::string good = dir.file("good.state");
  save_state(good, s, *m, o);
  const std::string bytes = testing::slurp(good);
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(dir.file(name), std::ios::binary) << content;
    return dir.file(name);
  };
  // truncated at many points: always an Error naming the file
  for (size_t cut : {size_t(0), size_t(5), size_t(20), bytes.size() / 2, bytes.size() - 1}) {
    const std::string p = write("cut.state", bytes.substr(0, cut));
    testing::expect_error([&] { load_state(p, *m); }, {p});
  }
  // metadata edits: unknown method, future version
  auto edit = [&](const std::string& from, const std::string& to) {
    std::string b = bytes;
    const size_t at = b.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    b.replace(at, from.size(), to);
    return b;
  };
  const std::string p1 = write("m.state", edit("\"adaptive-int8\"", "\"adaptive-int9\""));
  testing::expect_error([&] { load_state(p1, *m); }, {p1, "adaptive-int9"});
  const std::string p2 =
      write("v.state", edit("\"format_version\":\"2\"", "\"format_version\":\"7\""));
  testing::expect_error([&] { load_state(p2, *m); }, {p2, "format_version 7"});
  // a state of another model shape is refused before decompressing
  State wrong = s;
  CompressedState cs = compress_state(wrong, o);
  cs.model_shape = "L9-C128-N32-V256-F512";
  const std::string p3 = dir.file("shape.state");
  write_state_file(p3, cs);
  testing::expect_error([&] { load_state(p3, *m); }, {p3, "L9-C128"});
}

// Random byte changes anywhere in compressed files: a load either succeeds (a changed value
// that is still a valid state) or throws an Error naming the file; never a crash (the
// sanitizer stage runs this too).
TEST(StateFile, RandomByteChangesLoadOrFailCleanly) {
  auto m = Model::load(kModel);
  State s = read_some(*m, "Friends, Romans, countrymen, lend me your ears;");
  TempDir dir;
  std::mt19937 rng(5);
  int refused = 0, loaded = 0;
  for (const char* method : {"int8", "lowrank-int8", "adaptive-bf16"}) {
    CompressOptions o;
    o.method = method;
    if (o.method != "int8") o.ratio = 0.2;
    const std::string good = dir.file(std::string(method) + ".state");
    save_state(good, s, *m, o);
    const std::string bytes = testing::slurp(good);
    const std::string path = dir.file("mutant.state");
    for (int i = 0; i < 150; ++i) {
      std::string b = bytes;
      const int flips = 1 + int(rng() % 4);
      for (int f = 0; f < flips; ++f) {
        // Mostly the header (where the structure is), sometimes the data.
        const size_t at = rng() % 3 ? rng() % std::min<size_t>(b.size(), 600) : rng() % b.size();
        b[at] = char(rng() % 256);
      }
      std::ofstream(path, std::ios::binary | std::ios::trunc) << b;
      try {
        State back = load_state(path, *m);
        for (float x : back.wkv) ASSERT_TRUE(std::isfinite(x));
        ++loaded;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
        ++refused;
      }
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(loaded, 0);
}

TEST(StateFile, CliGenerateContinuesFromACompressedState) {
  auto m = Model::load(kModel);
  State s = read_some(*m, "HAMLET:\nTo be, or not to be, that is the question:\n");
  TempDir dir;
  CompressOptions o;
  o.method = "lowrank-int8", o.ratio = 0.3;
  save_state(dir.file("c.state"), s, *m, o);
  const auto r =
      testing::run_cli("generate -m " + testing::quote(kModel) + " --state-in " +
                       testing::quote(dir.file("c.state")) + " -n 8 --seed 1 -p 'Whether'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
}

}  // namespace
}  // namespace rwkv7
