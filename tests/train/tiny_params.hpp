#pragma once
// A tiny RWKV-7 model for training tests: the official initialisation (so every shape and name
// is real) with every parameter then perturbed by seeded noise, so that no gradient is zero by
// construction (the official init zeroes several matrices).
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "io/tensor_io.hpp"
#include "model/backward.hpp"
#include "rwkv7/init.hpp"
#include "temp_dir.hpp"

namespace rwkv7::testing {

inline train::TrainParams tiny_random_params(int64_t n_layer, int64_t n_embd, int64_t head_size,
                                             int64_t vocab, uint64_t seed, float noise = 0.05f) {
  TempDir dir;
  InitOptions o;
  o.n_layer = n_layer;
  o.n_embd = n_embd;
  o.head_size = head_size;
  o.vocab_size = vocab;
  o.seed = seed;
  o.threads = 1;
  const std::string path = dir.file("tiny.safetensors");
  write_initialized_model(path, o);
  train::TrainParams p = train::params_from_file(read_tensor_file(path));
  std::mt19937 rng{uint32_t(seed * 7919 + 1)};
  std::normal_distribution<float> nd(0.0f, noise);
  for (auto& [name, t] : p.tensors)
    for (float& x : t.data) x += nd(rng);
  return p;
}

// `rows` rows of `len` tokens below `vocab`, seeded.
inline std::vector<std::vector<int32_t>> random_rows(int64_t rows, int64_t len, int64_t vocab,
                                                     uint64_t seed) {
  std::mt19937 rng{uint32_t(seed)};
  std::uniform_int_distribution<int32_t> d(0, int32_t(vocab - 1));
  std::vector<std::vector<int32_t>> out(size_t(rows), std::vector<int32_t>(size_t(len), 0));
  for (auto& row : out)
    for (int32_t& t : row) t = d(rng);
  return out;
}

// Worst over tensors of max |a - b| / max |a| (SPEC §7's measure; a is the reference).
inline double worst_relative_difference(const train::Gradients& a, const train::Gradients& b,
                                        std::string* worst_name = nullptr) {
  double worst = 0;
  for (const auto& [name, ta] : a) {
    auto it = b.find(name);
    if (it == b.end() || it->second.data.size() != ta.data.size()) {
      if (worst_name) *worst_name = name + " (missing or another shape)";
      return 1e30;
    }
    double mx = 0, err = 0;
    for (size_t i = 0; i < ta.data.size(); ++i) {
      mx = std::max(mx, double(std::abs(ta.data[i])));
      err = std::max(err, double(std::abs(ta.data[i] - it->second.data[i])));
    }
    const double rel = err / std::max(mx, 1e-30);
    if (rel > worst) {
      worst = rel;
      if (worst_name) *worst_name = name;
    }
  }
  return worst;
}

// One state per row of seeded noise N(0, 0.5) in every value (so no part of a state gradient
// is zero by construction).
inline std::vector<State> noisy_states(const ModelConfig& c, int64_t rows, uint64_t seed) {
  std::vector<State> out(static_cast<size_t>(rows));
  std::mt19937 rng{uint32_t(seed)};
  std::normal_distribution<float> nd(0.0f, 0.5f);
  for (State& s : out) {
    s.n_layer = c.n_layer, s.n_embd = c.n_embd, s.n_head = c.n_head, s.head_size = c.head_size;
    s.att_shift.resize(size_t(c.n_layer * c.n_embd));
    s.ffn_shift.resize(size_t(c.n_layer * c.n_embd));
    s.wkv.resize(size_t(c.n_layer * c.n_head * c.head_size * c.head_size));
    for (std::vector<float>* v : {&s.att_shift, &s.ffn_shift, &s.wkv})
      for (float& x : *v) x = nd(rng);
  }
  return out;
}

}  // namespace rwkv7::testing
