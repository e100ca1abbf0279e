#pragma once
// A learned projection of WKV states, the "learned" state compression methods (the article's
// StateCompressor): per layer and head an encoder E [r, N] and a decoder D [N, r]. A head's
// matrix S [N, N] (S[i][j]: i = value index, j = key index) is stored as its code Z = E·S
// [r, N] and restored as D·Z; on the key side the same is done to Sᵀ. One projection serves
// every state of a model: `rwkv7 state learn` fits it (fit_state_projection,
// rwkv7/state_learn.hpp) to keep the model's next-token distributions, starting from the
// principal subspace of sampled states (pca_state_projection). A compressed state file carries
// the decoder with it but its ratio counts only the code (docs/state-compression.md).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "rwkv7/model.hpp"

namespace rwkv7 {

struct StateProjection {
  int64_t n_layer = 0, n_head = 0, head_size = 0, rank = 0;
  bool key_side = false;          // project Sᵀ (the key index) instead of S (the value index)
  std::string model_fingerprint;  // Model::fingerprint() of the model it was fit on
  std::string model_shape;        // ModelConfig::shape_string()
  std::string detail;             // how it was made, e.g. "pca of 256 states; 300 steps, KL ..."
  std::vector<float> encoder;     // [L, H, r, N]
  std::vector<float> decoder;     // [L, H, N, r]
};

// Error (naming `origin`) unless the sizes are consistent (1 <= r <= N) and every value finite.
void check_state_projection(const StateProjection& p, const std::string& origin);

// The r leading eigenvectors U [N, r] of Σ S·Sᵀ (key side: Σ Sᵀ·S) over the samples, per layer
// and head: E = Uᵀ, D = U (the best rank-r subspace for the samples in squared error). The
// samples must share one shape; Error otherwise or when there are none.
StateProjection pca_state_projection(std::span<const State> samples, int64_t rank, bool key_side);

// S → D·(E·S) for every head (shifts unchanged): the state a learned compression restores,
// without the rounding of the stored code.
State project_state(const State& state, const StateProjection& p);

// safetensors ("encoder", "decoder"; metadata format rwkv7-state-projection), written
// atomically; the reader names the file in every error.
void save_state_projection(const std::string& path, const StateProjection& p);
StateProjection load_state_projection(const std::string& path);

}  // namespace rwkv7
