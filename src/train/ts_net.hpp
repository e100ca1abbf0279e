#pragma once
// The RWKV-7 forecaster's network (rwkv7/timeseries.hpp): per-window instance normalisation
// (RevIN), patches, a linear patch embedding, the RWKV-7 blocks of the language model (same
// graph, ops and backward: model/backward.hpp blocks_forward/blocks_backward), a linear head
// from the last N patch outputs to the horizon; MSE against the target window.
#include <cstdint>
#include <span>
#include <vector>

#include "backends/backend.hpp"
#include "core/tensor.hpp"
#include "model/backward.hpp"
#include "rwkv7/timeseries.hpp"

namespace rwkv7::ts {

inline constexpr float kRevinEps = 1e-5f;

// Number of patches of a window: (L - P) / S + 1; Error unless P <= L and S divides L - P.
int64_t patch_count(const ModelOptions& o);
// Validates sizes (positive, C divisible by the head size, patches fit); Error names the field.
void check_options(const ModelOptions& o);

// Mean and std (population, + eps inside the root) of x [L].
struct RevinStats {
  float mean = 0, std = 1;
};
RevinStats revin_stats(std::span<const float> x);
// xn [L] = (x - mean) / std, and back.
void revin_normalise(std::span<const float> x, RevinStats s, std::span<float> out);
void revin_denormalise(std::span<const float> xn, RevinStats s, std::span<float> out);

// The N patches of xn [L], the last one ending at L: out [N, P], patch n = xn[n·S, n·S + P).
void patchify(std::span<const float> xn, int64_t patch, int64_t stride, std::span<float> out);

// The base forecast out [H] of the normalised window xn [L] (o.base_season > 0), else zeros.
void base_forecast(const ModelOptions& o, std::span<const float> xn, std::span<float> out);

// y [R, out] = x [R, in] · Wᵀ + b (W [out, in]) on the backend.
void linear_forward(const Backend& be, const float* x, const float* w, const float* b, int64_t R,
                    int64_t in, int64_t out, float* y);
// dx [R, in] += dy·W (when dx), dW += dyᵀ·x, db += Σ rows dy.
void linear_backward(const Backend& be, const float* x, const float* w, const float* dy, int64_t R,
                     int64_t in, int64_t out, float* dx, float* dw, float* db);

// Parameters: the blocks (official names, vocabulary 1: emb.weight and head.weight are unused
// [1, C] placeholders the weights builder requires) and the ts.* input/output layers.
struct Net {
  ModelOptions opt;
  train::TrainParams blocks;
  TensorMap
      io;  // ts.embed.weight [C, P], ts.embed.bias [C], ts.head.weight [H, N·C], ts.head.bias [H]
};
Net init_net(const ModelOptions& o);

struct NetGrads {
  train::Gradients blocks;
  TensorMap io;
};

// Buffers reused from call to call.
struct NetWorkspace {
  train::TrainWorkspace blocks;
  std::vector<RevinStats> stats;           // [B]
  std::vector<float> base;                 // [B, H] the base forecast (normalised; 0 without)
  std::vector<float> patches, emb, out;    // [B·N, P], [B·N, C], [B, H] head output (normalised)
  std::vector<float> dout, dhidden, demb;  // backward
};

// Forecasts [B, H] of B windows [B, L] (values on the normalised series).
void net_predict(const Net& net, std::span<const float> windows, int64_t B, const Backend& be,
                 NetWorkspace& ws, std::vector<float>& pred);
// Mean squared error over [B, H] against `targets`, and the gradient of every parameter.
double net_loss_and_grads(const Net& net, std::span<const float> windows,
                          std::span<const float> targets, int64_t B, const Backend& be,
                          ThreadPool* pool, NetWorkspace& ws, NetGrads& grads);

}  // namespace rwkv7::ts
