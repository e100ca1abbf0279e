// WKV-7 forward and exact backward for training over one sequence, heads in parallel: the
// scalar per-head recurrence of backends/reference/wkv7_train_scalar.hpp (its math is there).
#include "backends/reference/wkv7_train_scalar.hpp"
#include "core/thread_pool.hpp"
#include "ops/backward_ops.hpp"

namespace rwkv7::train {
namespace {

template <class T>
void for_heads(const Wkv7TrainArgs<T>& p, void (*fn)(const Wkv7TrainArgs<T>&, int64_t)) {
  if (p.pool) {
    p.pool->parallel_for(p.H, 1, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h) fn(p, h);
    });
  } else {
    for (int64_t h = 0; h < p.H; ++h) fn(p, h);
  }
}

}  // namespace

template <class T>
void wkv7_train_forward(const Wkv7TrainArgs<T>& a) {
  for_heads(a, &wkv7_scalar::head_forward<T>);
}

template <class T>
void wkv7_train_backward(const Wkv7TrainArgs<T>& a) {
  for_heads(a, &wkv7_scalar::head_backward<T>);
}

template void wkv7_train_forward<float>(const Wkv7TrainArgs<float>&);
template void wkv7_train_forward<double>(const Wkv7TrainArgs<double>&);
template void wkv7_train_backward<float>(const Wkv7TrainArgs<float>&);
template void wkv7_train_backward<double>(const Wkv7TrainArgs<double>&);

}  // namespace rwkv7::train
