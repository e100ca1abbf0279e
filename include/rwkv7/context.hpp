#pragma once
// An execution context: the threads and scratch memory that one caller uses to run models.
// Weights (Model) are immutable and shared by every thread; a Context is not: create one per
// worker thread that runs models at the same time (a server keeps one per scheduler loop, a
// tool one for the whole run). Buffers grow to the largest batch seen and are then reused, so
// a decode loop on a warm Context allocates nothing.
#include <memory>

namespace rwkv7 {

struct ContextAccess;  // internal

class Context {
 public:
  static constexpr int kMaxThreads = 1024;
  // threads: 1 .. kMaxThreads, or 0 for every core of this machine. Error otherwise.
  explicit Context(int threads = 0);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int threads() const;

  struct Impl;  // internal

 private:
  friend struct ContextAccess;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rwkv7
