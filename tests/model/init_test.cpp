// `rwkv7 init`: shapes, the official formulas, orthogonality, determinism, and that an
// initialised model saves, loads and runs.
#include "model/init.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/model.hpp"
#include "temp_dir.hpp"

namespace rwkv7 {
namespace {

InitSpec small_spec(uint64_t seed = 0) {
  InitSpec s;
  s.n_layer = 2;
  s.n_embd = 64;
  s.vocab_size = 100;
  s.head_size = 32;
  s.seed = seed;
  s.threads = 2;
  return s;
}

std::vector<float> values(const InitializedModel& m, const std::string& name) {
  return to_f32(m.get(name));
}

// Max |(A Aᵀ or AᵀA) - g² I| over the Gram matrix of the short side's vectors.
double gram_error(const std::vector<float>& w, int64_t rows, int64_t cols, double gain) {
  const bool tall = rows >= cols;
  const int64_t k = tall ? cols : rows, n = tall ? rows : cols;
  auto at = [&](int64_t vec, int64_t e) {
    return double(tall ? w[size_t(e * cols + vec)] : w[size_t(vec * cols + e)]);
  };
  double worst = 0;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double d = 0;
      for (int64_t e = 0; e < n; ++e) d += at(i, e) * at(j, e);
      const double want = i == j ? gain * gain : 0.0;
      worst = std::max(worst, std::abs(d - want));
    }
  return worst;
}

TEST(InitShapes, SmallConfigNamesAndShapes) {
  InitializedModel m = init_model(small_spec());
  const ModelConfig& c = m.config;
  EXPECT_EQ(c.n_head, 2);
  EXPECT_EQ(c.ffn_dim, 256);
  EXPECT_EQ(c.d_decay, 32);  // max(32, round(2.5*8/32)*32) = 32
  EXPECT_EQ(c.d_gate, 32);   // 5*8/32 = 1.25 → 32
  std::map<std::string, Shape> shapes;
  for (auto& [n, v] : m.tensors) {
    shapes[n] = v.shape;
    EXPECT_EQ(v.dtype, DType::F32) << n;
    EXPECT_NE(v.data, nullptr) << n;
  }
  EXPECT_EQ(shapes.size(), m.tensors.size()) << "duplicate names";
  EXPECT_EQ(shapes.at("emb.weight"), (Shape{100, 64}));
  EXPECT_EQ(shapes.at("head.weight"), (Shape{100, 64}));
  EXPECT_EQ(shapes.at("blocks.0.ln0.weight"), (Shape{64}));
  EXPECT_EQ(shapes.count("blocks.1.ln0.weight"), 0u);
  EXPECT_EQ(shapes.at("blocks.0.att.v2"), (Shape{32, 64}));  // layer 0 carries v0/v1/v2 too
  EXPECT_EQ(shapes.at("blocks.1.att.w0"), (Shape{1, 1, 64}));
  EXPECT_EQ(shapes.at("blocks.1.att.w1"), (Shape{64, 32}));
  EXPECT_EQ(shapes.at("blocks.1.att.r_k"), (Shape{2, 32}));
  EXPECT_EQ(shapes.at("blocks.1.att.ln_x.bias"), (Shape{64}));
  EXPECT_EQ(shapes.at("blocks.1.ffn.key.weight"), (Shape{256, 64}));
  EXPECT_EQ(shapes.at("blocks.1.ffn.value.weight"), (Shape{64, 256}));
  // 1 emb + per layer 33 (+2 for ln0 in layer 0) + ln_out 2 + head.
  EXPECT_EQ(m.tensors.size(), size_t(1 + 2 * 33 + 2 + 2 + 1));
  // The shape list without allocation agrees with what init_model made, in order.
  auto list = init_tensor_shapes(c);
  ASSERT_EQ(list.size(), m.tensors.size());
  for (size_t i = 0; i < list.size(); ++i) {
    EXPECT_EQ(list[i].first, m.tensors[i].first);
    EXPECT_EQ(list[i].second, m.tensors[i].second.shape);
  }
  EXPECT_EQ(m.tensors.front().first, "emb.weight");
  EXPECT_EQ(m.tensors.back().first, "head.weight");
}

TEST(InitShapes, PresetShapesWithoutAllocating) {
  ModelConfig c = resolve_init_config(init_preset("0.1b"));
  EXPECT_EQ(c.n_layer, 12);
  EXPECT_EQ(c.n_embd, 768);
  EXPECT_EQ(c.n_head, 12);
  EXPECT_EQ(c.ffn_dim, 3072);
  EXPECT_EQ(c.vocab_size, 65536);
  auto list = init_tensor_shapes(c);
  std::map<std::string, Shape> s(list.begin(), list.end());
  EXPECT_EQ(s.at("emb.weight"), (Shape{65536, 768}));
  EXPECT_EQ(s.at("blocks.11.att.w1"), (Shape{768, 64}));
  EXPECT_EQ(s.at("blocks.11.att.a2"), (Shape{64, 768}));
  EXPECT_EQ(s.at("blocks.11.att.v1"), (Shape{768, 32}));
  EXPECT_EQ(s.at("blocks.11.att.g1"), (Shape{768, 128}));
  EXPECT_EQ(s.at("blocks.11.att.r_k"), (Shape{12, 64}));
  EXPECT_EQ(s.at("blocks.11.ffn.key.weight"), (Shape{3072, 768}));
  EXPECT_EQ(s.count("blocks.12.ln1.weight"), 0u);
  int64_t params = 0;
  for (auto& [n, shape] : list) params += shape_numel(shape);
  EXPECT_GT(params, 180'000'000);  // the released 0.1B has ~191M parameters
  EXPECT_LT(params, 200'000'000);

  ModelConfig c4 = resolve_init_config(init_preset("0.4b"));
  EXPECT_EQ(c4.n_layer, 24);
  EXPECT_EQ(c4.n_embd, 1024);
  EXPECT_EQ(c4.d_value, 32);  // hard-coded: the formula would give 64
  EXPECT_EQ(c4.d_gate, 128);
  ModelConfig c15 = resolve_init_config(init_preset("1.5b"));
  EXPECT_EQ(c15.n_embd, 2048);
  EXPECT_EQ(c15.d_decay, official_lora_width(2.5, 2048));
}

TEST(InitShapes, OfficialLoraWidthFormula) {
  EXPECT_EQ(official_lora_width(2.5, 768), 64);
  EXPECT_EQ(official_lora_width(1.7, 768), 32);
  EXPECT_EQ(official_lora_width(5.0, 768), 128);
  EXPECT_EQ(official_lora_width(2.5, 1024), 64);  // 2.5 rounds half to even, as Python
  EXPECT_EQ(official_lora_width(2.5, 2048), 128);
  EXPECT_EQ(official_lora_width(5.0, 2048), 224);
  EXPECT_EQ(official_lora_width(2.5, 64), 32);
}

TEST(InitOrtho, LoraUpProjectionsAreOrthogonalTimesPointOne) {
  InitSpec s = small_spec();
  s.n_embd = 128;
  s.d_gate = 48;
  InitializedModel m = init_model(s);
  for (const char* name :
       {"blocks.0.att.w2", "blocks.1.att.a2", "blocks.1.att.v2", "blocks.1.att.g2"}) {
    const TensorView& v = m.get(name);
    ASSERT_LT(v.shape[0], v.shape[1]);
    // W Wᵀ = 0.1² I (wide: ortho_init's gain is 1 · scale 0.1).
    EXPECT_LT(gram_error(to_f32(v), v.shape[0], v.shape[1], 0.1), 1e-6) << name;
  }
  // Tall LoRA (D > C): ortho_init multiplies the gain by sqrt(D/C).
  InitSpec t = small_spec();
  t.d_decay = 128;  // [128, 64]
  InitializedModel mt = init_model(t);
  const TensorView& w2 = mt.get("blocks.1.att.w2");
  EXPECT_LT(gram_error(to_f32(w2), 128, 64, 0.1 * std::sqrt(2.0)), 1e-6);
}

TEST(InitOrtho, ProjectionsAndHeadFollowGenerateInitWeight) {
  InitSpec s = small_spec();
  s.vocab_size = 300;  // V > C: head gain 0.5 sqrt(V/C)
  InitializedModel m = init_model(s);
  EXPECT_LT(gram_error(values(m, "blocks.0.att.receptance.weight"), 64, 64, 1.0), 1e-5);
  EXPECT_LT(gram_error(values(m, "blocks.0.att.key.weight"), 64, 64, 0.1), 1e-6);
  EXPECT_LT(gram_error(values(m, "blocks.1.att.value.weight"), 64, 64, 1.0), 1e-5);
  EXPECT_LT(gram_error(values(m, "blocks.1.ffn.key.weight"), 256, 64, 1.0), 1e-5);
  const double g = 0.5 * std::sqrt(300.0 / 64.0);
  EXPECT_LT(gram_error(values(m, "head.weight"), 300, 64, g), 1e-5);
  for (const char* zero : {"blocks.0.att.output.weight", "blocks.1.ffn.value.weight",
                           "blocks.1.att.w1", "blocks.1.att.a1", "blocks.1.att.v1",
                           "blocks.1.att.g1", "blocks.0.att.ln_x.bias", "ln_out.bias"})
    for (float x : values(m, zero)) ASSERT_EQ(x, 0.0f) << zero;
  for (float x : values(m, "emb.weight")) {
    ASSERT_LE(std::abs(x), 1e-4f);
  }
}

TEST(InitOrtho, ApproximationForHugeMatricesHasUnitColumns) {
  // 30000 x 1000: 30000*1000² > 2e10 → the Gaussian approximation; check a few columns.
  const int64_t rows = 30000, cols = 1000;
  std::vector<float> w(size_t(rows * cols));
  orthogonal_init(w.data(), rows, cols, 2.0, 7);
  for (int64_t c : {0, 1, 500, 999}) {
    double nrm = 0, dot = 0;
    for (int64_t r = 0; r < rows; ++r) {
      nrm += double(w[r * cols + c]) * w[r * cols + c];
      dot += double(w[r * cols + c]) * w[r * cols + (c + 1) % cols];
    }
    EXPECT_NEAR(nrm, 4.0, 1e-4);
    EXPECT_LT(std::abs(dot), 4.0 * 6.0 / std::sqrt(double(rows)));  // ~N(0, 1/rows), 6 sigma
  }
}

TEST(InitFormulas, DecayBiasSpreadAndMixes) {
  InitSpec s = small_spec();
  s.n_layer = 4;
  s.n_embd = 128;
  InitializedModel m = init_model(s);
  const int64_t C = 128, N = 32, L = 4;
  for (int64_t layer = 0; layer < L; ++layer) {
    const std::string b = "blocks." + std::to_string(layer) + ".";
    auto w0 = values(m, b + "att.w0");
    const double r0 = double(layer) / double(L - 1), r1 = 1.0 - double(layer) / double(L);
    double wmin = 1e9, wmax = -1e9;
    for (int64_t n = 0; n < C; ++n) {
      const double z = (double(n % N) - 15.5) / 15.5, zig = z * std::abs(z);
      const double www = -6.0 + 6.0 * std::pow(double(n) / double(C - 1), 1.0 + std::pow(r0, 0.3));
      EXPECT_NEAR(w0[n], www + 0.5 + 2.5 * zig, 1e-5);
      const double base = w0[n] - 0.5 - 2.5 * zig;  // www: -6 (n = 0) up to 0 (n = C-1)
      wmin = std::min(wmin, base);
      wmax = std::max(wmax, base);
      EXPECT_GE(w0[n], -8.0 - 1e-5);
      EXPECT_LE(w0[n], 3.0 + 1e-5);
    }
    EXPECT_NEAR(wmin, -6.0, 1e-5);
    EXPECT_NEAR(wmax, 0.0, 1e-5);
    const double linear5 = 5.0 / 127.0 - 0.5;
    const double z5 = (5.0 - 15.5) / 15.5, zig5 = z5 * std::abs(z5);
    EXPECT_NEAR(values(m, b + "att.a0")[5], -0.19 + 0.3 * zig5 + 0.4 * linear5, 1e-6);
    EXPECT_NEAR(values(m, b + "att.v0")[5], 0.73 - 0.4 * linear5, 1e-6);
    EXPECT_NEAR(values(m, b + "att.k_k")[5], 0.71 - 0.1 * linear5, 1e-6);
    EXPECT_FLOAT_EQ(values(m, b + "att.k_a")[5], 1.02f);
    EXPECT_FLOAT_EQ(values(m, b + "att.r_k")[40], -0.04f);
    EXPECT_NEAR(values(m, b + "att.ln_x.weight")[3], std::pow((1.0 + layer) / L, 0.7), 1e-6);
    const double ddd = 37.0 / 128.0;
    EXPECT_NEAR(values(m, b + "att.x_r")[37], 1.0 - std::pow(ddd, 0.2 * r1), 1e-6);
    EXPECT_NEAR(values(m, b + "att.x_w")[37], 1.0 - std::pow(ddd, 0.9 * r1), 1e-6);
    EXPECT_NEAR(values(m, b + "att.x_k")[37], 1.0 - std::pow(ddd, 0.7 * r1), 1e-6);
    EXPECT_NEAR(values(m, b + "att.x_v")[37], 1.0 - std::pow(ddd, 0.7 * r1), 1e-6);
    EXPECT_NEAR(values(m, b + "att.x_a")[37], 1.0 - std::pow(ddd, 0.9 * r1), 1e-6);
    EXPECT_NEAR(values(m, b + "att.x_g")[37], 1.0 - std::pow(ddd, 0.2 * r1), 1e-6);
    EXPECT_NEAR(values(m, b + "ffn.x_k")[37], 1.0 - std::pow(ddd, std::pow(r1, 4)), 1e-6);
    EXPECT_FLOAT_EQ(values(m, b + "att.x_r")[0], 1.0f);  // ddd = 0
    EXPECT_FLOAT_EQ(values(m, b + "ln1.weight")[7], 1.0f);
  }
}

TEST(InitDeterminism, SameSeedSameBytesOtherSeedDiffers) {
  InitializedModel a = init_model(small_spec(42));
  InitSpec s1 = small_spec(42);
  s1.threads = 1;  // thread count must not matter
  InitializedModel b = init_model(s1);
  InitializedModel c = init_model(small_spec(43));
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  bool any_diff = false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const TensorView& va = a.tensors[i].second;
    EXPECT_EQ(std::memcmp(va.data, b.tensors[i].second.data, va.nbytes()), 0) << a.tensors[i].first;
    if (std::memcmp(va.data, c.tensors[i].second.data, va.nbytes()) != 0) any_diff = true;
  }
  EXPECT_TRUE(any_diff);
  const TensorView& ea = a.get("emb.weight");
  const TensorView& ec = c.get("emb.weight");
  EXPECT_NE(std::memcmp(ea.data, ec.data, ea.nbytes()), 0);
  // Moving keeps the views valid (buffers are separate heap blocks).
  InitializedModel moved = std::move(a);
  EXPECT_EQ(std::memcmp(moved.get("emb.weight").data, b.get("emb.weight").data, ea.nbytes()), 0);
}

TEST(InitDtype, Bf16AndF16AreRoundedF32) {
  InitializedModel f = init_model(small_spec(3));
  for (DType d : {DType::BF16, DType::F16}) {
    InitSpec s = small_spec(3);
    s.dtype = d;
    InitializedModel h = init_model(s);
    const TensorView& v = h.get("blocks.1.att.receptance.weight");
    EXPECT_EQ(v.dtype, d);
    auto lo = to_f32(v);
    auto hi = values(f, "blocks.1.att.receptance.weight");
    ASSERT_EQ(lo.size(), hi.size());
    for (size_t i = 0; i < lo.size(); ++i) ASSERT_NEAR(lo[i], hi[i], 1e-2 * std::abs(hi[i]) + 1e-6);
  }
}

TEST(InitValidation, BadSpecsThrow) {
  InitSpec s = small_spec();
  s.n_embd = 100;  // not divisible by 32
  EXPECT_THROW(resolve_init_config(s), Error);
  EXPECT_THROW(init_model(s), Error);
  s = small_spec();
  s.n_layer = 0;
  EXPECT_THROW(resolve_init_config(s), Error);
  s = small_spec();
  s.vocab_size = -5;
  EXPECT_THROW(resolve_init_config(s), Error);
  s = small_spec();
  s.d_gate = -1;
  EXPECT_THROW(resolve_init_config(s), Error);
  s = small_spec();
  s.head_size = 1;
  EXPECT_THROW(resolve_init_config(s), Error);
  s = small_spec();
  s.dtype = DType::I32;
  EXPECT_THROW(resolve_init_config(s), Error);
  EXPECT_THROW(init_preset("7b"), Error);
  s = small_spec();
  s.n_layer = 1;  // ratio_0_to_1 would divide by zero in Python; must still work
  EXPECT_NO_THROW(init_model(s));
  try {
    s = small_spec();
    s.n_embd = 100;
    resolve_init_config(s);
    ADD_FAILURE() << "n_embd 100 (not a multiple of the head size) was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("divisible"), std::string::npos) << e.what();
  }
}

void expect_loads_and_runs(const std::string& path, int64_t vocab) {
  auto model = Model::load(path);
  ASSERT_TRUE(model);
  EXPECT_EQ(model->config().n_layer, 2);
  EXPECT_EQ(model->config().n_embd, 64);
  EXPECT_EQ(model->config().vocab_size, vocab);
  State state = model->new_state();
  std::vector<int32_t> tokens = {0, 5, 17, 99, 3, 42};
  std::vector<float> logits = model->forward(tokens, state);
  ASSERT_EQ(logits.size(), size_t(vocab));
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
  for (float x : state.wkv) ASSERT_TRUE(std::isfinite(x));
}

TEST(InitRoundTrip, PthAndSafetensorsLoadAndGiveFiniteLogits) {
  testing::TempDir dir;
  InitializedModel m = init_model(small_spec(1));
  const std::string pth = dir.file("init.pth"), st = dir.file("init.safetensors");
  write_pth(pth, m.tensors);
  write_safetensors(st, m.tensors, {{"format", "pt"}});
  expect_loads_and_runs(pth, 100);
  expect_loads_and_runs(st, 100);
  // The file holds exactly what init_model made.
  TensorFile f = read_tensor_file(pth);
  ASSERT_EQ(f.order.size(), m.tensors.size());
  for (auto& [name, v] : m.tensors) {
    const TensorView& r = f.get(name);
    ASSERT_EQ(r.shape, v.shape) << name;
    ASSERT_EQ(std::memcmp(r.data, v.data, v.nbytes()), 0) << name;
  }
  InitSpec s = small_spec(1);
  s.dtype = DType::BF16;
  InitializedModel h = init_model(s);
  const std::string pth16 = dir.file("init-bf16.pth");
  write_pth(pth16, h.tensors);
  expect_loads_and_runs(pth16, 100);
}

#ifdef RWKV7_CLI_PATH
TEST(InitCli, WritesFileAndRejectsBadFlags) {
  testing::TempDir dir;
  const std::string cli = RWKV7_CLI_PATH;
  const std::string out = dir.file("cli.safetensors");
  const std::string ok =
      cli + " init --layers 2 --embd 64 --head-size 32 --vocab-size 100 -o " + out + " 2>/dev/null";
  ASSERT_EQ(std::system(ok.c_str()), 0);
  expect_loads_and_runs(out, 100);
  for (const std::string& bad :
       {" init --layers 2 --embd 100 -o " + dir.file("x.pth"),                 // 100 % 64
        " init --preset 0.1b --layers 2 -o " + dir.file("x.pth"),              // both
        " init --embd 64 -o " + dir.file("x.pth"),                             // no layers
        " init --layers 2 --embd 64 --dtype int8 -o " + dir.file("x.pth")}) {  // dtype
    EXPECT_NE(std::system((cli + bad + " 2>/dev/null").c_str()), 0) << bad;
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.pth")));
}
#endif

}  // namespace
}  // namespace rwkv7
