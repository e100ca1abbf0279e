// State files (SPEC §7 names) with metadata that ties them to a model; compressed forms are
// recorded in the file (rwkv7/state_compress.hpp) and decompressed on load.
#include <string>

#include "engine/state_file_internal.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/model.hpp"
#include "rwkv7/state_compress.hpp"

namespace rwkv7 {

void save_state(const std::string& path, const State& s, const Model& model,
                const CompressOptions& opts) {
  try {
    model.check_state(s);
  } catch (const Error& e) {
    throw Error(path + ": refusing to save: " + e.what());
  }
  CompressedState cs;
  try {
    cs = compress_state(s, opts);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  cs.model_shape = model.config().shape_string();
  cs.model_fingerprint = model.fingerprint();
  write_state_file(path, cs);
}

void save_state(const std::string& path, const State& s, const Model& model) {
  save_state(path, s, model, CompressOptions{});
}

State load_state(const std::string& path, const Model& model, std::string* warning) {
  const CompressedState cs = read_state_file(path);
  const ModelConfig& c = model.config();
  if (!cs.model_shape.empty() && cs.model_shape != c.shape_string()) {
    throw Error(path + ": state was made for a model of shape " + cs.model_shape +
                ", but this model is " + c.shape_string());
  }
  // Sizes before decompressing: a state of another shape is refused without allocating it.
  if (cs.n_layer != c.n_layer || cs.n_embd != c.n_embd || cs.n_head != c.n_head ||
      cs.head_size != c.head_size) {
    throw Error(path + ": state has L=" + std::to_string(cs.n_layer) +
                " C=" + std::to_string(cs.n_embd) + " H=" + std::to_string(cs.n_head) +
                " N=" + std::to_string(cs.head_size) + " but this model (" + c.shape_string() +
                ") needs L=" + std::to_string(c.n_layer) + " C=" + std::to_string(c.n_embd) +
                " H=" + std::to_string(c.n_head) + " N=" + std::to_string(c.head_size));
  }
  State s = decompress_state_file(cs, path);
  s.model_fingerprint = model.fingerprint();
  const std::string& fp = cs.model_fingerprint;
  if (warning && !fp.empty() && fp != model.fingerprint()) {
    *warning = path + ": state was made with different weights of the same shape (fingerprint " +
               fp + ", model " + model.fingerprint() + ")";
  }
  return s;
}

}  // namespace rwkv7
