#pragma once
// What the public Model (rwkv7/model.hpp) does not show: building one from tensors already in
// memory, for the trainer (validation on the model being trained). Not for apps: they cannot
// include it (docs/architecture.md).
#include <memory>

#include "core/tensor.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {

struct ModelFactory {
  // As Model::load, from tensors already in memory; `file.path` names them in messages. The
  // TensorFile's owners keep the data alive.
  static std::shared_ptr<const Model> from_tensors(TensorFile file, const LoadOptions& opts = {});
};

}  // namespace rwkv7
