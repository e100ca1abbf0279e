#include <string>

#include "engine/context_impl.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
int checked_threads(int threads) {
  if (threads < 0 || threads > Context::kMaxThreads) {
    throw Error("threads must be between 1 and " + std::to_string(Context::kMaxThreads) +
                ", or 0 for every core (got " + std::to_string(threads) + ")");
  }
  return threads;
}

Context::Impl::Impl(int threads)
    : pool(checked_threads(threads)),
      cpu(make_cpu_backend(&pool)),
      reference(make_reference_backend()) {}

const Backend& Context::Impl::backend(BackendKind kind) const {
  return kind == BackendKind::Reference ? *reference : *cpu;
}

Context::Context(int threads) : impl_(std::make_unique<Impl>(threads)) {}
Context::~Context() = default;
int Context::threads() const { return impl_->pool.size(); }

}  // namespace rwkv7
