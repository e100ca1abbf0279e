// The RWKV-7 forecaster's network: RevIN, patches, linear patch embedding, the language model's
// RWKV-7 blocks (model/backward.hpp), linear head; forward and exact backward.
#include "train/ts_net.hpp"

#include <cmath>
#include <random>

#include "model/init.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::ts {

int64_t patch_count(const ModelOptions& o) {
  if (o.patch < 1 || o.stride < 1 || o.patch > o.lookback || (o.lookback - o.patch) % o.stride)
    throw Error("time series: the patches must tile the lookback window: (lookback " +
                std::to_string(o.lookback) + " - patch " + std::to_string(o.patch) +
                ") must be >= 0 and divisible by stride " + std::to_string(o.stride));
  return (o.lookback - o.patch) / o.stride + 1;
}

void check_options(const ModelOptions& o) {
  auto positive = [](int64_t v, const char* what) {
    if (v < 1) throw Error(std::string("time series: ") + what + " must be at least 1");
  };
  positive(o.lookback, "lookback");
  positive(o.horizon, "horizon");
  positive(o.n_layer, "layers");
  positive(o.n_embd, "embd");
  positive(o.head_size, "head size");
  if (o.lookback > 1000000 || o.horizon > 100000 || o.n_embd > 4096 || o.n_layer > 64)
    throw Error("time series: lookback, horizon, embd or layers is unreasonably large");
  if (o.n_embd % o.head_size)
    throw Error("time series: embd " + std::to_string(o.n_embd) +
                " is not divisible by head size " + std::to_string(o.head_size));
  patch_count(o);
  if (o.base_season < 0 || o.base_season > o.lookback)
    throw Error("time series: the base season must be in [0, lookback " +
                std::to_string(o.lookback) + "], not " + std::to_string(o.base_season));
}

void base_forecast(const ModelOptions& o, std::span<const float> xn, std::span<float> out) {
  const int64_t L = int64_t(xn.size()), m = o.base_season;
  for (int64_t h = 0; h < int64_t(out.size()); ++h)
    out[size_t(h)] = m > 0 ? xn[size_t(L + h - m * (h / m + 1))] : 0.0f;  // seasonal naive
}

RevinStats revin_stats(std::span<const float> x) {
  double sum = 0, sq = 0;
  for (float v : x) sum += v;
  const double mean = sum / double(x.size());
  for (float v : x) sq += (v - mean) * (v - mean);
  return {float(mean), float(std::sqrt(sq / double(x.size()) + kRevinEps))};
}

void revin_normalise(std::span<const float> x, RevinStats s, std::span<float> out) {
  for (size_t i = 0; i < x.size(); ++i) out[i] = (x[i] - s.mean) / s.std;
}

void revin_denormalise(std::span<const float> xn, RevinStats s, std::span<float> out) {
  for (size_t i = 0; i < xn.size(); ++i) out[i] = xn[i] * s.std + s.mean;
}

void patchify(std::span<const float> xn, int64_t patch, int64_t stride, std::span<float> out) {
  const int64_t L = int64_t(xn.size()), N = (L - patch) / stride + 1;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < patch; ++j) out[size_t(n * patch + j)] = xn[size_t(n * stride + j)];
}

void linear_forward(const Backend& be, const float* x, const float* w, const float* b, int64_t R,
                    int64_t in, int64_t out, float* y) {
  // y [R, out] = x [R, in] · (W [out, in])ᵀ
  be.gemm({.M = R, .N = out, .K = in, .a = {x, in}, .b = {w, in, true}, .c = y, .ldc = out});
  for (int64_t r = 0; r < R; ++r)
    for (int64_t o = 0; o < out; ++o) y[r * out + o] += b[o];
}

void linear_backward(const Backend& be, const float* x, const float* w, const float* dy, int64_t R,
                     int64_t in, int64_t out, float* dx, float* dw, float* db) {
  if (dx)  // dx [R, in] += dy [R, out] · W [out, in]
    be.gemm({.M = R,
             .N = in,
             .K = out,
             .a = {dy, out},
             .b = {w, in},
             .c = dx,
             .ldc = in,
             .accumulate = true});
  // dW [out, in] += dyᵀ · x
  be.gemm({.M = out,
           .N = in,
           .K = R,
           .a = {dy, out, true},
           .b = {x, in},
           .c = dw,
           .ldc = in,
           .accumulate = true});
  for (int64_t r = 0; r < R; ++r)
    for (int64_t o = 0; o < out; ++o) db[o] += dy[r * out + o];
}

namespace {

// nn.Linear's default: U(-1/√in, 1/√in), from a generator of its own (same seed, same values).
FloatTensor uniform(Shape shape, double bound, uint64_t seed) {
  FloatTensor t(std::move(shape));
  std::mt19937_64 rng(seed);
  for (float& v : t.data) v = float((double(rng() >> 11) * 0x1.0p-53 * 2 - 1) * bound);
  return t;
}

}  // namespace

Net init_net(const ModelOptions& o) {
  check_options(o);
  Net net;
  net.opt = o;
  InitSpec spec;
  spec.n_layer = o.n_layer;
  spec.n_embd = o.n_embd;
  spec.head_size = o.head_size;
  spec.vocab_size = 1;  // no tokens: emb.weight and head.weight are unused placeholders
  spec.seed = o.seed;
  spec.threads = 1;
  InitializedModel init = init_model(spec);
  TensorFile f;
  f.path = "fresh time-series model";
  for (auto& [n, v] : init.tensors) f.add(n, v);
  net.blocks = train::params_from_file(f);
  const int64_t C = o.n_embd, P = o.patch, N = patch_count(o), H = o.horizon;
  const double be = 1 / std::sqrt(double(P)), bh = 1 / std::sqrt(double(N * C));
  net.io["ts.embed.weight"] = uniform({C, P}, be, o.seed * 4 + 1);
  net.io["ts.embed.bias"] = uniform({C}, be, o.seed * 4 + 2);
  // With a base forecast the head starts at 0: the untrained model is the base.
  net.io["ts.head.weight"] = uniform({H, N * C}, o.base_season > 0 ? 0.0 : bh, o.seed * 4 + 3);
  net.io["ts.head.bias"] = FloatTensor({H});
  return net;
}

namespace {

// Normalised windows → patches → embeddings → blocks; leaves the head output (normalised
// units) in ws.out and returns the hidden rows [B·N, C].
const std::vector<float>& forward(const Net& net, std::span<const float> windows, int64_t B,
                                  const Backend& be, NetWorkspace& ws) {
  const ModelOptions& o = net.opt;
  const int64_t L = o.lookback, P = o.patch, N = patch_count(o), C = o.n_embd, H = o.horizon;
  if (B < 1 || windows.size() != size_t(B * L))
    throw Error("time series: " + std::to_string(windows.size()) + " input values for " +
                std::to_string(B) + " windows of " + std::to_string(L));
  ws.stats.resize(size_t(B));
  ws.patches.resize(size_t(B * N * P));
  ws.base.resize(size_t(B * H));
  std::vector<float> xn(static_cast<size_t>(L));
  for (int64_t b = 0; b < B; ++b) {
    std::span<const float> x = windows.subspan(size_t(b * L), size_t(L));
    ws.stats[size_t(b)] = o.revin ? revin_stats(x) : RevinStats{};
    revin_normalise(x, ws.stats[size_t(b)], xn);
    base_forecast(o, xn, std::span(ws.base).subspan(size_t(b * H), size_t(H)));
    patchify(xn, P, o.stride, std::span(ws.patches).subspan(size_t(b * N * P), size_t(N * P)));
  }
  ws.emb.resize(size_t(B * N * C));
  linear_forward(be, ws.patches.data(), net.io.at("ts.embed.weight").data.data(),
                 net.io.at("ts.embed.bias").data.data(), B * N, P, C, ws.emb.data());
  const std::vector<float>& hidden = train::blocks_forward(net.blocks, ws.emb, B, N, be, ws.blocks);
  ws.out.resize(size_t(B * H));
  // The head reads each window's N hidden rows as one [N·C] vector.
  linear_forward(be, hidden.data(), net.io.at("ts.head.weight").data.data(),
                 net.io.at("ts.head.bias").data.data(), B, N * C, H, ws.out.data());
  for (size_t i = 0; i < ws.out.size(); ++i) ws.out[i] += ws.base[i];
  return hidden;
}

void denormalise(const Net& net, const NetWorkspace& ws, int64_t B, std::vector<float>& pred) {
  const int64_t H = net.opt.horizon;
  pred.resize(size_t(B * H));
  for (int64_t b = 0; b < B; ++b)
    revin_denormalise(std::span(ws.out).subspan(size_t(b * H), size_t(H)), ws.stats[size_t(b)],
                      std::span(pred).subspan(size_t(b * H), size_t(H)));
}

void zero_like(const TensorMap& params, TensorMap& grads) {
  bool same = grads.size() == params.size();
  for (const auto& [n, p] : params) {
    auto it = grads.find(n);
    same = same && it != grads.end() && it->second.shape == p.shape;
  }
  if (!same) {
    grads.clear();
    for (const auto& [n, p] : params) grads.emplace(n, FloatTensor(p.shape));
  }
  for (auto& [n, g] : grads) std::fill(g.data.begin(), g.data.end(), 0.0f);
}

}  // namespace

void net_predict(const Net& net, std::span<const float> windows, int64_t B, const Backend& be,
                 NetWorkspace& ws, std::vector<float>& pred) {
  forward(net, windows, B, be, ws);
  denormalise(net, ws, B, pred);
}

double net_loss_and_grads(const Net& net, std::span<const float> windows,
                          std::span<const float> targets, int64_t B, const Backend& be,
                          ThreadPool* pool, NetWorkspace& ws, NetGrads& grads) {
  const ModelOptions& o = net.opt;
  const int64_t P = o.patch, N = patch_count(o), C = o.n_embd, H = o.horizon;
  if (targets.size() != size_t(B * H))
    throw Error("time series: " + std::to_string(targets.size()) + " target values for " +
                std::to_string(B) + " windows of horizon " + std::to_string(H));
  const std::vector<float>& hidden = forward(net, windows, B, be, ws);
  std::vector<float> pred;
  denormalise(net, ws, B, pred);
  // loss = mean (pred - y)²; pred = out·std + mean → d out = 2 (pred - y) std / (B·H)
  double loss = 0;
  ws.dout.resize(size_t(B * H));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const size_t i = size_t(b * H + h);
      const double e = double(pred[i]) - targets[i];
      loss += e * e;
      ws.dout[i] = float(2 * e * ws.stats[size_t(b)].std / double(B * H));
    }
  zero_like(net.io, grads.io);
  ws.dhidden.assign(size_t(B * N * C), 0.0f);
  linear_backward(be, hidden.data(), net.io.at("ts.head.weight").data.data(), ws.dout.data(), B,
                  N * C, H, ws.dhidden.data(), grads.io.at("ts.head.weight").data.data(),
                  grads.io.at("ts.head.bias").data.data());
  train::blocks_backward(net.blocks, ws.dhidden, be, pool, {}, ws.blocks, grads.blocks, ws.demb);
  linear_backward(be, ws.patches.data(), net.io.at("ts.embed.weight").data.data(), ws.demb.data(),
                  B * N, P, C, nullptr, grads.io.at("ts.embed.weight").data.data(),
                  grads.io.at("ts.embed.bias").data.data());
  return loss / double(B * H);
}

}  // namespace rwkv7::ts
