// The one parameter table (io/rwkv7_parameters) against the official checkpoints: the same
// names, in the same state_dict order, with the same shapes.
#include "io/rwkv7_parameters.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "../test_support.hpp"
#include "io/tensor_io.hpp"

namespace rwkv7 {
namespace {

// The sizes of an official file, read from the tensors the config comes from.
ParamDims dims_of(const TensorFile& f, int64_t n_layer) {
  ParamDims d;
  d.V = f.get("emb.weight").shape[0];
  d.C = f.get("emb.weight").shape[1];
  d.H = f.get("blocks.0.att.r_k").shape[0];
  d.N = f.get("blocks.0.att.r_k").shape[1];
  d.F = f.get("blocks.0.ffn.key.weight").shape[0];
  d.d_decay = f.get("blocks.0.att.w1").shape[1];
  d.d_aaa = f.get("blocks.0.att.a1").shape[1];
  d.d_gate = f.get("blocks.0.att.g1").shape[1];
  d.d_value = f.get(n_layer > 1 ? "blocks.1.att.v1" : "blocks.0.att.v1").shape[1];
  return d;
}

int64_t layers_of(const TensorFile& f) {
  int64_t n = 0;
  while (f.has("blocks." + std::to_string(n) + ".ln1.weight")) ++n;
  return n;
}

class OfficialFile : public ::testing::TestWithParam<const char*> {};

TEST_P(OfficialFile, TableGivesItsNamesOrderAndShapes) {
  RWKV7_REQUIRE_SHARED(path, GetParam());
  const TensorFile f = read_tensor_file(path);
  const int64_t L = layers_of(f);
  ASSERT_GT(L, 0);
  // Released files differ only in whether layer 0 carries its unused v0/v1/v2.
  const UnusedCopies unused = f.has("blocks.0.att.v0") ? UnusedCopies::Include : UnusedCopies::Skip;
  const ParamDims d = dims_of(f, L);
  std::vector<std::string> names;
  for_each_parameter(L, unused, [&](const ParamSpec& s, int64_t layer) {
    const std::string name(ParamName(s, layer).view());
    names.push_back(name);
    ASSERT_TRUE(f.has(name)) << name;
    EXPECT_EQ(f.get(name).shape, param_shape(s, d)) << name;
  });
  // Every tensor of the file and nothing else.
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()),
            std::set<std::string>(f.order.begin(), f.order.end()));
  // The trainer's state_dict order is the table's (the golden files' writer used another).
  if (std::string(GetParam()).starts_with("models/")) {
    EXPECT_EQ(names, f.order);
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, OfficialFile,
                         ::testing::Values("models/tiny-rwkv7-834K.pth", "golden/rand-L2-D128.pth",
                                           "golden/rand-L3-D256-bf16.pth",
                                           "golden/rand-L2-D96-hs32-fp16.pth"));

TEST(ParamTable, EveryIdOnceAndConsistentKinds) {
  std::set<std::string_view> names;
  int lerps = 0;
  for (const ParamSpec& s : rwkv7_parameters()) {
    EXPECT_TRUE(names.insert(s.name).second) << s.name;
    EXPECT_EQ(&param_spec(s.id), &s);
    // Matrices and LoRA factors are 2-D; vectors are [C] or [1, 1, C].
    if (s.kind == ParamKind::Matrix || s.kind == ParamKind::Lora) {
      EXPECT_EQ(s.rank, 2) << s.name;
    }
    if (s.kind == ParamKind::Vector) {
      EXPECT_EQ(s.dims[size_t(s.rank - 1)], Dim::C) << s.name;
    }
    if (s.gguf_form == GgufForm::LerpFused) {
      EXPECT_EQ(s.lerp_index, lerps++) << s.name;
    }
    if (s.gguf_form == GgufForm::TransposedLora) {
      EXPECT_EQ(s.kind, ParamKind::Lora) << s.name;
    }
  }
  EXPECT_EQ(lerps, 6);
}

TEST(ParamTable, NamesOfBlockAndModelScope) {
  EXPECT_EQ(ParamName(param_spec(ParamId::W1), 11).view(), "blocks.11.att.w1");
  EXPECT_EQ(ParamName(param_spec(ParamId::Ln0W), 0).view(), "blocks.0.ln0.weight");
  EXPECT_EQ(ParamName(param_spec(ParamId::Head), -1).view(), "head.weight");
}

}  // namespace
}  // namespace rwkv7
