#pragma once
// The arguments of the WKV-7 recurrence for training: a forward over one sequence that can
// keep its final state, and the exact backward. Shared by the scalar ops (float and double,
// ops/backward_ops.hpp) and the backends' fast backward (Backend::wkv7_backward).
#include <cstdint>

namespace rwkv7 {

class ThreadPool;

// WKV-7 over one sequence of S positions (SPEC §3), per head h (S[i][j], i value, j key):
//   S = S·diag(decay) + (S·a)·bᵀ + v·kᵀ ;  y = S·r
// Backward walks back through time from dS_final; the states it needs are recomputed from
// checkpoints saved every `checkpoint` steps, so memory is O((S/checkpoint + checkpoint)·N²)
// per head for any length. Gradients are ADDED to every non-null output.
template <class T>
struct Wkv7TrainArgs {
  int64_t S, H, N;
  const T *r, *decay, *k, *v, *a, *b;  // [S, H*N]
  const T* s0;                         // [H, N, N] initial state, null = zeros
  T* y = nullptr;                      // [S, H*N] (forward)
  T* s_final = nullptr;                // [H, N, N] (forward, optional)
  const T* dy = nullptr;               // [S, H*N]
  const T* ds_final = nullptr;         // [H, N, N], null = zeros
  T *dr = nullptr, *ddecay = nullptr, *dk = nullptr, *dv = nullptr, *da = nullptr, *db = nullptr,
    *ds0 = nullptr;
  int64_t checkpoint = 32;
  ThreadPool* pool = nullptr;  // heads in parallel (the scalar ops; backends use their own)
};

}  // namespace rwkv7
