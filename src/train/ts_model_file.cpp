// The forecaster's file: safetensors (written atomically by the project's writer) holding the
// RWKV-7 block parameters under their official names, the ts.* input/output layers, the
// dlinear.* baseline, and the options, channels and scaler as JSON metadata.
#include <map>
#include <nlohmann/json.hpp>

#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "train/ts_baselines.hpp"
#include "train/ts_internal.hpp"

namespace rwkv7::ts {

namespace {
constexpr const char* kMetaKey = "rwkv7.timeseries";
constexpr int kFormat = 1;
}  // namespace

void check_columns(const Forecaster::Impl& m, const Series& s) {
  if (s.names != m.columns) {
    std::string want, have;
    for (const auto& n : m.columns) want += (want.empty() ? "" : ",") + n;
    for (const auto& n : s.names) have += (have.empty() ? "" : ",") + n;
    throw Error(s.source + ": the model was trained on columns " + want + ", the data has " + have +
                " (choose them with --columns)");
  }
}

void Forecaster::save(const std::string& path) const {
  const Impl& m = *impl_;
  const ModelOptions& o = m.net.opt;
  nlohmann::json meta = {{"format", kFormat},
                         {"lookback", o.lookback},
                         {"horizon", o.horizon},
                         {"patch", o.patch},
                         {"stride", o.stride},
                         {"n_layer", o.n_layer},
                         {"n_embd", o.n_embd},
                         {"head_size", o.head_size},
                         {"revin", o.revin},
                         {"base_season", o.base_season},
                         {"seed", o.seed},
                         {"season", m.season},
                         {"dlinear_kernel", m.dlinear_kernel},
                         {"columns", m.columns},
                         {"scaler_mean", m.scaler.mean},
                         {"scaler_scale", m.scaler.scale}};
  NamedTensors views;
  for (const TensorMap* t : {&m.net.blocks.tensors, &m.net.io, &m.dlinear})
    for (const auto& [n, v] : *t) views.emplace_back(n, v.view());
  write_safetensors(path, views, {{kMetaKey, meta.dump()}});
}

Forecaster Forecaster::load(const std::string& path) {
  TensorFile file = read_tensor_file(path);
  auto it = file.metadata.find(kMetaKey);
  if (it == file.metadata.end())
    throw Error(path + ": not a time-series model (no '" + std::string(kMetaKey) + "' metadata)");
  Forecaster f;
  Impl& m = *f.impl_;
  try {
    const nlohmann::json j = nlohmann::json::parse(it->second);
    if (j.at("format").get<int>() != kFormat)
      throw Error("format " + std::to_string(j.at("format").get<int>()) + " is not " +
                  std::to_string(kFormat));
    ModelOptions& o = m.net.opt;
    o.lookback = j.at("lookback");
    o.horizon = j.at("horizon");
    o.patch = j.at("patch");
    o.stride = j.at("stride");
    o.n_layer = j.at("n_layer");
    o.n_embd = j.at("n_embd");
    o.head_size = j.at("head_size");
    o.revin = j.at("revin");
    o.base_season = j.value("base_season", int64_t(0));
    o.seed = j.at("seed");
    m.season = j.at("season");
    m.dlinear_kernel = j.at("dlinear_kernel");
    m.columns = j.at("columns").get<std::vector<std::string>>();
    m.scaler.mean = j.at("scaler_mean").get<std::vector<double>>();
    m.scaler.scale = j.at("scaler_scale").get<std::vector<double>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": bad time-series metadata: " + e.what());
  } catch (const Error& e) {
    throw Error(path + ": bad time-series metadata: " + e.what());
  }
  check_options(m.net.opt);
  if (m.columns.empty() || m.scaler.mean.size() != m.columns.size() ||
      m.scaler.scale.size() != m.columns.size() || m.season < 1 || m.season > m.net.opt.lookback)
    throw Error(path + ": inconsistent columns, scaler or season in the metadata");
  for (double s : m.scaler.scale)
    if (!(s > 0)) throw Error(path + ": a scaler's scale is not positive");
  // Shapes the file must have, from the options.
  const ModelOptions& o = m.net.opt;
  const int64_t C = o.n_embd, P = o.patch, N = patch_count(o), H = o.horizon, L = o.lookback;
  // Shapes are compared before anything is allocated: the metadata's sizes are the file's
  // claim, and only the file's own tensors (once they match) are read into memory.
  const std::map<std::string, Shape> io_shapes{{"ts.embed.weight", {C, P}},
                                               {"ts.embed.bias", {C}},
                                               {"ts.head.weight", {H, N * C}},
                                               {"ts.head.bias", {H}}};
  const std::map<std::string, Shape> dlinear_shapes{{"dlinear.seasonal.weight", {H, L}},
                                                    {"dlinear.seasonal.bias", {H}},
                                                    {"dlinear.trend.weight", {H, L}},
                                                    {"dlinear.trend.bias", {H}}};
  auto take = [&](const std::map<std::string, Shape>& want, TensorMap& into) {
    for (const auto& [n, shape] : want) {
      const TensorView& v = file.get(n);
      if (v.shape != shape) throw Error(path + ": tensor '" + n + "' has the wrong shape");
      FloatTensor out;
      out.shape = shape;
      out.data = to_f32(v);
      into.emplace(n, std::move(out));
    }
  };
  take(io_shapes, m.net.io);
  take(dlinear_shapes, m.dlinear);
  TensorFile blocks;
  blocks.path = path;
  for (const auto& [n, v] : file.tensors)
    if (n.rfind("ts.", 0) != 0 && n.rfind("dlinear.", 0) != 0) blocks.add(n, v);
  blocks.owners = file.owners;
  m.net.blocks = train::params_from_file(blocks);
  const ModelConfig& c = m.net.blocks.config;
  if (c.n_layer != o.n_layer || c.n_embd != C || c.head_size != o.head_size)
    throw Error(path + ": the block tensors do not match the metadata's layers/embd/head size");
  return f;
}

}  // namespace rwkv7::ts
