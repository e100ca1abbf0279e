#pragma once
// State tuning (--tune state, the RWKV-PEFT method): the only trainable parameters are each
// layer's initial WKV state, `blocks.<l>.att.time_state` [H, N, N] (S[i][j]: i = value index,
// j = key index, as in State::wkv), zeros at the start; every training row starts from it
// (token shifts zero) and the model's weights stay as they are.
#include <cstdint>
#include <vector>

#include "core/tensor.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7::train {

// One zero [H, N, N] tensor per layer.
TensorMap zero_time_states(const ModelConfig& c);

// The state a row starts from: shifts zero, wkv layer l = time_states[l].
State state_from_time_states(const TensorMap& time_states, const ModelConfig& c);

// `rows` copies of state_from_time_states (reusing the vectors in `out`).
void start_states(const TensorMap& time_states, const ModelConfig& c, int64_t rows,
                  std::vector<State>& out);

// Adds the rows' d loss / d wkv (the initial-state gradients of loss_and_gradients) into
// `grads`, one [H, N, N] tensor per layer (made, zeroed, when `reset` or absent).
void add_time_state_grads(const std::vector<State>& d_rows, const ModelConfig& c, bool reset,
                          TensorMap& grads);

// Number of trainable values: L·H·N·N.
int64_t time_state_count(const ModelConfig& c);

}  // namespace rwkv7::train
