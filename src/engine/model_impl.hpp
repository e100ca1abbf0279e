#pragma once
// Model::Impl: the immutable weights, and a Context of the model's own for callers that pass
// none (those calls take turns on it; callers that want parallelism bring their Contexts).
#include <memory>
#include <mutex>
#include <string>

#include "model/weights.hpp"
#include "rwkv7/context.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {

struct Model::Impl {
  ModelWeights w;
  std::string path;
  int64_t chunk = 256;
  BackendKind backend = BackendKind::Cpu;
  int threads = 0;             // of the model's own Context
  bool bf16_products = false;  // the large matrices have pair panels (LoadOptions::precision)
  std::mutex own_mutex;
  std::unique_ptr<Context> own_context;  // made on first use
};

}  // namespace rwkv7
