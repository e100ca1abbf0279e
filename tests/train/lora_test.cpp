// LoRA (--lora-rank): the product added to a weight against a plain double loop, the adapters'
// gradients against finite differences of the loss, the merged checkpoint equal to the base
// with the adapters applied at load (and to base + s·B·A computed here), and a short
// fine-tuning run whose adapters lower held-out loss, merge, and load with --lora.
#include "rwkv7/lora.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "cli/cli_support.hpp"
#include "engine/lora_internal.hpp"
#include "io/tensor_io.hpp"
#include "model/backward.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/model.hpp"
#include "test_support.hpp"
#include "tiny_params.hpp"
#include "train/lora_tuning.hpp"

namespace rwkv7::train {
namespace {

using testing::quote;
using testing::random_rows;
using testing::run_cli;
using testing::TempDir;
using testing::tiny_random_params;

std::vector<float> noise(size_t n, uint64_t seed, float sd) {
  std::mt19937 rng{uint32_t(seed)};
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

TEST(Lora, ProductAddsScaledBTimesA) {
  const int64_t out = 5, in = 7, r = 3;
  const float scale = 1.5f;
  std::vector<float> W = noise(size_t(out * in), 1, 1), A = noise(size_t(r * in), 2, 1),
                     B = noise(size_t(out * r), 3, 1);
  const std::vector<float> W0 = W;
  add_lora_product(W.data(), A.data(), B.data(), out, in, r, scale);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double want = W0[size_t(o * in + i)];
      for (int64_t k = 0; k < r; ++k)
        want += scale * double(B[size_t(o * r + k)]) * A[size_t(k * in + i)];
      EXPECT_NEAR(W[size_t(o * in + i)], want, 1e-5) << o << "," << i;
    }
}

// Directional finite differences of the loss along random directions over all A and over all
// B, against <gradient, direction>.
TEST(Lora, AdapterGradientsMatchFiniteDifferences) {
  TrainParams p = tiny_random_params(2, 32, 16, 40, 6);
  LoraTuning lt(p, 3, 6.0, 11);
  uint64_t seed = 20;
  for (auto& [name, t] : lt.adapters()) t.data = noise(t.data.size(), seed++, 0.2f);
  lt.apply(p);
  const auto rows = random_rows(2, 20, 40, 5);
  auto be = make_reference_backend();
  auto loss = [&] {
    lt.apply(p);
    return loss_and_gradients(p, rows, *be).loss;
  };
  lt.apply(p);
  const GradResult g = loss_and_gradients(p, rows, *be);
  TensorMap grads;
  lt.gradients(g.grads, grads);
  ASSERT_EQ(grads.size(), lt.adapters().size());
  for (const char* which : {".lora_A", ".lora_B"}) {
    std::map<std::string, std::vector<float>> dir;
    double analytic = 0;
    for (auto& [name, t] : lt.adapters()) {
      if (name.find(which) == std::string::npos) continue;
      dir[name] = noise(t.data.size(), seed++, 1.0f);
      for (size_t i = 0; i < t.data.size(); ++i)
        analytic += double(dir[name][i]) * grads.at(name).data[i];
    }
    const double h = 1e-3;  // 1e-2 is already 7% off: the loss is curved along these directions
    auto shifted = [&](double sign) {
      std::map<std::string, std::vector<float>> keep;
      for (auto& [name, d] : dir) {
        auto& v = lt.adapters().at(name).data;
        keep[name] = v;
        for (size_t i = 0; i < v.size(); ++i) v[i] += float(sign * h) * d[i];
      }
      const double l = loss();
      for (auto& [name, v] : keep) lt.adapters().at(name).data = v;
      return l;
    };
    const double numeric = (shifted(1) - shifted(-1)) / (2 * h);
    std::printf("%s: backward %.6g, finite difference %.6g\n", which, analytic, numeric);
    EXPECT_GT(std::abs(numeric), 1e-3);
    EXPECT_NEAR(analytic, numeric, 1e-2 * std::abs(numeric) + 1e-5) << which;
  }
}

// Frozen weights skip their product gradients; the others are exactly what they were.
TEST(Lora, FrozenWeightsSkipTheirGradientsOnly) {
  const TrainParams p = tiny_random_params(2, 32, 16, 40, 6);
  const auto rows = random_rows(2, 20, 40, 5);
  auto be = make_reference_backend();
  const std::function<bool(std::string_view)> frozen = [](std::string_view n) {
    return !is_lora_target(std::string(n));
  };
  GradOptions o;
  o.frozen = &frozen;
  const GradResult all = loss_and_gradients(p, rows, *be),
                   some = loss_and_gradients(p, rows, *be, nullptr, o);
  EXPECT_EQ(all.loss, some.loss);
  for (const std::string& w : lora_target_names(2))
    EXPECT_EQ(all.grads.at(w).data, some.grads.at(w).data) << w;
  for (const char* n : {"head.weight", "blocks.1.att.w1", "blocks.0.att.g2"}) {
    const auto& g = some.grads.at(n).data;
    EXPECT_TRUE(std::all_of(g.begin(), g.end(), [](float x) { return x == 0; })) << n;
    const auto& full = all.grads.at(n).data;
    EXPECT_FALSE(std::all_of(full.begin(), full.end(), [](float x) { return x == 0; })) << n;
  }
}

// A tiny checkpoint and random adapters for it (B nonzero, so the merge changes the model).
struct TinyWithAdapters {
  TempDir dir;
  std::string base = dir.file("base.pth"), adapters = dir.file("lora.safetensors");
  LoraAdapters ad;
  TinyWithAdapters() {
    TrainParams p = tiny_random_params(2, 32, 16, 40, 8);
    NamedTensors views;
    for (const std::string& n : p.names()) views.emplace_back(n, p.tensors.at(n).view());
    write_pth(base, views);
    LoraTuning lt(p, 4, 8.0, 3);
    uint64_t seed = 40;
    for (auto& [name, t] : lt.adapters()) t.data = noise(t.data.size(), seed++, 0.3f);
    ad = lt.adapter_set();
    write_lora(adapters, ad);
  }
};

std::vector<float> logits_of(const std::shared_ptr<const Model>& m) {
  State st = m->new_state();
  const std::vector<int32_t> tokens = {1, 5, 9, 2, 33, 7, 0, 12};
  return m->forward(tokens, st, Logits::All);
}

TEST(Lora, MergedCheckpointEqualsAdaptersAppliedAtLoad) {
  TinyWithAdapters t;
  const std::string merged = t.dir.file("merged.pth");
  merge_lora_checkpoint(t.base, t.adapters, merged);
  // The merged matrices are base + (alpha / rank)·B·A, computed here in double.
  const TensorFile b = read_tensor_file(t.base), m = read_tensor_file(merged);
  const std::string w = "blocks.1.ffn.value.weight";
  const std::vector<float> W0 = to_f32(b.get(w)), W1 = to_f32(m.get(w));
  const FloatTensor &A = t.ad.tensors.at("blocks.1.ffn.value.lora_A"),
                    &B = t.ad.tensors.at("blocks.1.ffn.value.lora_B");
  const int64_t out = b.get(w).shape[0], in = b.get(w).shape[1], r = 4;
  double worst = 0;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double want = W0[size_t(o * in + i)];
      for (int64_t k = 0; k < r; ++k)
        want += 2.0 * double(B.data[size_t(o * r + k)]) * A.data[size_t(k * in + i)];
      worst = std::max(worst, std::abs(want - W1[size_t(o * in + i)]));
    }
  EXPECT_LE(worst, 1e-5);
  // Logits: merged file == base with --lora at load, and both differ from the base.
  LoadOptions with;
  with.threads = 1;
  LoadOptions plain = with;
  with.lora = t.adapters;
  const auto a = logits_of(Model::load(merged, plain)), c = logits_of(Model::load(t.base, with)),
             base = logits_of(Model::load(t.base, plain));
  ASSERT_EQ(a.size(), c.size());
  double diff = 0, change = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, double(std::abs(a[i] - c[i])));
    change = std::max(change, double(std::abs(a[i] - base[i])));
  }
  EXPECT_LE(diff, 1e-4);
  EXPECT_GT(change, 1e-2);
}

TEST(Lora, BadAdapterFilesAreNamedErrors) {
  TinyWithAdapters t;
  LoraAdapters wrong = t.ad;
  wrong.tensors.erase("blocks.0.att.key.lora_B");
  write_lora(t.dir.file("unpaired.safetensors"), wrong);
  LoraAdapters other = t.ad;
  other.tensors.emplace("blocks.9.att.key.lora_A", FloatTensor({4, 32}));
  other.tensors.emplace("blocks.9.att.key.lora_B", FloatTensor({32, 4}));
  write_lora(t.dir.file("unknown.safetensors"), other);
  LoraAdapters rank = t.ad;
  rank.rank = 5;
  write_lora(t.dir.file("rank.safetensors"), rank);
  for (const auto& [file, word] : std::vector<std::pair<std::string, std::string>>{
           {"unpaired.safetensors", "no 'blocks.0.att.key.lora_B'"},
           {"unknown.safetensors", "does not have"},
           {"rank.safetensors", "expected [5, 32]"}}) {
    try {
      merge_lora_checkpoint(t.base, t.dir.file(file), t.dir.file("out.pth"));
      ADD_FAILURE() << file << " was accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(t.dir.file(file), 0), 0u) << msg;
      EXPECT_NE(msg.find(word), std::string::npos) << msg;
    }
  }
  EXPECT_FALSE(std::filesystem::exists(t.dir.file("out.pth")));
}

TEST(Lora, ShortRunLowersHeldOutLossMergesAndLoads) {
  RWKV7_REQUIRE_SHARED(play, "data/tinyshakespeare.txt");
  const std::string model =
      (std::filesystem::path(RWKV7_SOURCE_DIR) / "models/rwkv7-shakespeare-L4-C128.pth").string();
  TempDir dir;
  std::ifstream in(play);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text = text.substr(0, 40000);
  for (char& ch : text) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  std::ofstream(dir.file("train.txt")) << text.substr(0, 32000);
  std::ofstream(dir.file("val.txt")) << text.substr(32000);
  auto r = run_cli("train --init " + quote(model) + " --lora-rank 4 --lora-alpha 8 --data " +
                   quote(dir.file("train.txt")) +
                   " --val-fraction 0 --steps 30 --batch 4 --ctx 64 --lr-init 1e-2 --lr-final "
                   "1e-2 --warmup 3 -t 1 -o " +
                   quote(dir.file("out")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // 4 layers x (4 attention matrices 128x128 + ffn key 512x128 + ffn value 128x512), rank 4:
  // 4 · (4·(4·128 + 128·4) + 2·(4·128 + 512·4)) = 36864
  EXPECT_NE(r.err.find("training 36864 values"), std::string::npos) << r.err;
  const std::string lora = dir.file("out/lora.safetensors");
  ASSERT_TRUE(std::filesystem::exists(lora));
  auto eval = [&](const std::string& m, const std::string& extra) {
    auto e = run_cli("eval -m " + quote(m) + " --text-file " + quote(dir.file("val.txt")) +
                     " --rows 64 --json -t 1 " + extra);
    EXPECT_EQ(e.exit_code, 0) << e.err;
    const size_t at = e.out.find("\"loss\":");
    return at == std::string::npos ? 1e9 : std::stod(e.out.substr(at + 7));
  };
  const double before = eval(model, ""), after = eval(model, "--lora " + quote(lora));
  std::printf("held-out loss: base %.4f, with adapters %.4f\n", before, after);
  EXPECT_LT(after, before - 0.5);
  auto m = run_cli("lora merge -m " + quote(model) + " --lora " + quote(lora) + " -o " +
                   quote(dir.file("merged.pth")));
  ASSERT_EQ(m.exit_code, 0) << m.err;
  EXPECT_NEAR(eval(dir.file("merged.pth"), ""), after, 1e-5);
}

}  // namespace
}  // namespace rwkv7::train
