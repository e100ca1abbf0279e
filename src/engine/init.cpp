// rwkv7/init.hpp over the model layer's official initialisation (model/init.hpp).
#include "rwkv7/init.hpp"

#include <chrono>

#include "engine/init_internal.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

InitSpec init_spec_from(const InitOptions& o) {
  InitSpec spec;
  if (!o.preset.empty()) {
    if (o.n_layer != 0 || o.n_embd != 0)
      throw Error("init: give either a preset or the layers and width, not both");
    spec = init_preset(o.preset);
  } else {
    if (o.n_layer == 0 || o.n_embd == 0)
      throw Error("init: give a preset (0.1b, 0.4b, 1.5b), or both the layers and the width");
    spec.n_layer = o.n_layer;
    spec.n_embd = o.n_embd;
  }
  spec.vocab_size = o.vocab_size;
  spec.head_size = o.head_size;
  spec.ffn_dim = o.ffn_dim;
  if (o.d_decay) spec.d_decay = o.d_decay;
  if (o.d_aaa) spec.d_aaa = o.d_aaa;
  if (o.d_value) spec.d_value = o.d_value;
  if (o.d_gate) spec.d_gate = o.d_gate;
  if (o.dtype == "f32") {
    spec.dtype = DType::F32;
  } else if (o.dtype == "bf16") {
    spec.dtype = DType::BF16;
  } else if (o.dtype == "f16") {
    spec.dtype = DType::F16;
  } else {
    throw Error("init: dtype must be f32, bf16 or f16 (got '" + o.dtype + "')");
  }
  spec.seed = o.seed;
  spec.threads = o.threads;
  return spec;
}

ModelConfig check_init_options(const InitOptions& opts) {
  return resolve_init_config(init_spec_from(opts));
}

InitResult write_initialized_model(const std::string& path, const InitOptions& opts) {
  if (path.empty()) throw Error("init: no output file given");
  const InitSpec spec = init_spec_from(opts);
  InitResult r;
  r.config = resolve_init_config(spec);  // validates before any allocation
  const auto t0 = std::chrono::steady_clock::now();
  InitializedModel model = init_model(spec);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.parameters = model.parameter_count();
  if (ends_with(path, ".safetensors")) {
    const Metadata meta{
        {"format", "pt"},
        {"rwkv7.init", "official x070 initialisation"},
        {"rwkv7.init.seed", std::to_string(spec.seed)},
        {"rwkv7.init.config",
         "L" + std::to_string(r.config.n_layer) + "-C" + std::to_string(r.config.n_embd) + "-N" +
             std::to_string(r.config.head_size) + "-V" + std::to_string(r.config.vocab_size) +
             "-F" + std::to_string(r.config.ffn_dim)}};
    write_safetensors(path, model.tensors, meta);
  } else {
    write_pth(path, model.tensors);
  }
  return r;
}

}  // namespace rwkv7
