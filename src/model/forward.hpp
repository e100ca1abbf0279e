#pragma once
// Model::Impl: the weights plus the backend that runs them.
#include <memory>
#include <string>

#include "core/thread_pool.hpp"
#include "model/weights.hpp"
#include "ops/ops.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {

struct Model::Impl {
  ModelWeights w;
  std::string path;
  int64_t chunk = 128;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Backend> backend;
};

}  // namespace rwkv7
