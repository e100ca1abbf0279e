#pragma once
// What a Context owns: its thread pool, the backends bound to that pool (they keep scratch
// buffers between calls) and the forward pass's scratch buffers.
#include <memory>

#include "core/thread_pool.hpp"
#include "model/forward.hpp"
#include "ops/ops.hpp"
#include "rwkv7/context.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {

// `threads` when it is 0 (every core) or 1 .. Context::kMaxThreads; Error otherwise.
int checked_threads(int threads);

struct Context::Impl {
  explicit Impl(int threads);
  ThreadPool pool;
  std::unique_ptr<Backend> cpu, reference;
  ForwardScratch scratch;

  const Backend& backend(BackendKind kind) const;
};

struct ContextAccess {
  static Context::Impl& impl(Context& c) { return *c.impl_; }
};

}  // namespace rwkv7
