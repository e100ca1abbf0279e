#include "train/state_tuning.hpp"

#include <algorithm>
#include <string>

namespace rwkv7::train {
namespace {

std::string time_state_name(int64_t layer) {
  return "blocks." + std::to_string(layer) + ".att.time_state";
}

}  // namespace

TensorMap zero_time_states(const ModelConfig& c) {
  TensorMap out;
  for (int64_t l = 0; l < c.n_layer; ++l)
    out.emplace(time_state_name(l), FloatTensor({c.n_head, c.head_size, c.head_size}));
  return out;
}

State state_from_time_states(const TensorMap& time_states, const ModelConfig& c) {
  std::vector<State> one;
  start_states(time_states, c, 1, one);
  return one[0];
}

void start_states(const TensorMap& time_states, const ModelConfig& c, int64_t rows,
                  std::vector<State>& out) {
  const int64_t HNN = c.n_head * c.head_size * c.head_size;
  out.resize(size_t(rows));
  for (State& s : out) {
    s.n_layer = c.n_layer;
    s.n_embd = c.n_embd;
    s.n_head = c.n_head;
    s.head_size = c.head_size;
    s.att_shift.assign(size_t(c.n_layer * c.n_embd), 0.0f);
    s.ffn_shift.assign(size_t(c.n_layer * c.n_embd), 0.0f);
    s.wkv.resize(size_t(c.n_layer * HNN));
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const std::vector<float>& t = time_states.at(time_state_name(l)).data;
      std::copy(t.begin(), t.end(), s.wkv.begin() + l * HNN);
    }
  }
}

void add_time_state_grads(const std::vector<State>& d_rows, const ModelConfig& c, bool reset,
                          TensorMap& grads) {
  const int64_t HNN = c.n_head * c.head_size * c.head_size;
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string name = time_state_name(l);
    auto it = grads.find(name);
    if (it == grads.end())
      it = grads.emplace(name, FloatTensor({c.n_head, c.head_size, c.head_size})).first;
    else if (reset)
      std::fill(it->second.data.begin(), it->second.data.end(), 0.0f);
    float* g = it->second.data.data();
    for (const State& d : d_rows)
      for (int64_t i = 0; i < HNN; ++i) g[i] += d.wkv[size_t(l * HNN + i)];
  }
}

int64_t time_state_count(const ModelConfig& c) {
  return c.n_layer * c.n_head * c.head_size * c.head_size;
}

}  // namespace rwkv7::train
