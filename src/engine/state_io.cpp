// State files (SPEC §7 names) with metadata that ties them to a model.
#include <cmath>
#include <string>

#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {
namespace {
constexpr const char* kFormatVersion = "1";
}

void save_state(const std::string& path, const State& s, const Model& model) {
  const ModelConfig& c = model.config();
  try {
    model.check_state(s);
  } catch (const Error& e) {
    throw Error(path + ": refusing to save: " + e.what());
  }
  NamedTensors tensors = {
      {"state.att_shift", TensorView{DType::F32, {s.n_layer, s.n_embd}, s.att_shift.data()}},
      {"state.ffn_shift", TensorView{DType::F32, {s.n_layer, s.n_embd}, s.ffn_shift.data()}},
      {"state.wkv",
       TensorView{DType::F32, {s.n_layer, s.n_head, s.head_size, s.head_size}, s.wkv.data()}},
  };
  Metadata meta = {{"format", "rwkv7-state"},
                   {"format_version", kFormatVersion},
                   {"model_shape", c.shape_string()},
                   {"model_fingerprint", model.fingerprint()},
                   {"tokens_consumed", std::to_string(s.tokens_consumed)}};
  write_safetensors(path, tensors, meta);
}

State load_state(const std::string& path, const Model& model, std::string* warning) {
  TensorFile f = read_safetensors(path);
  const ModelConfig& c = model.config();
  auto meta = [&](const std::string& key) {
    auto it = f.metadata.find(key);
    return it == f.metadata.end() ? std::string() : it->second;
  };
  const std::string shape = meta("model_shape");
  if (!shape.empty() && shape != c.shape_string()) {
    throw Error(path + ": state was made for a model of shape " + shape + ", but this model is " +
                c.shape_string());
  }
  State s = model.new_state();
  auto take = [&](const char* name, std::vector<float>& dst, const Shape& want) {
    const TensorView& v = f.get(name);
    if (v.dtype != DType::F32) throw Error(path + ": tensor '" + name + "' must be f32");
    if (v.shape != want) {
      throw Error(path + ": tensor '" + name + "' has shape " + shape_str(v.shape) +
                  " but this model (" + c.shape_string() + ") needs " + shape_str(want));
    }
    dst = to_f32(v);
    // A NaN or infinity would poison every later token without naming this file: refuse it.
    for (size_t i = 0; i < dst.size(); ++i) {
      if (!std::isfinite(dst[i])) {
        throw Error(path + ": tensor '" + name + "' element " + std::to_string(i) + " is " +
                    (std::isnan(dst[i]) ? "NaN" : "infinite") + "; not a usable state");
      }
    }
  };
  take("state.att_shift", s.att_shift, {c.n_layer, c.n_embd});
  take("state.ffn_shift", s.ffn_shift, {c.n_layer, c.n_embd});
  take("state.wkv", s.wkv, {c.n_layer, c.n_head, c.head_size, c.head_size});
  const std::string tokens = meta("tokens_consumed");
  if (!tokens.empty()) {
    try {
      s.tokens_consumed = std::stoll(tokens);
    } catch (const std::exception&) {
      throw Error(path + ": metadata tokens_consumed '" + tokens + "' is not a number");
    }
  }
  const std::string fp = meta("model_fingerprint");
  if (warning && !fp.empty() && fp != model.fingerprint()) {
    *warning = path + ": state was made with different weights of the same shape (fingerprint " +
               fp + ", model " + model.fingerprint() + ")";
  }
  return s;
}

}  // namespace rwkv7
