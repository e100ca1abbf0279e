#pragma once
// The SIMD backward of the WKV-7 recurrence (training), one head of one sequence, dispatched at
// run time to the best ISA (Highway). Its scalar twin: wkv7_scalar::head_backward
// (backends/reference/wkv7_train_scalar.hpp), same math, same checkpointing.
#include <cstdint>

#include "backends/wkv7_train_args.hpp"

namespace rwkv7::cpu {

// Adds head h's gradients to p's non-null outputs; false (nothing done) when a row of N values
// needs more vectors than the kernel holds (then use the scalar twin).
bool wkv7_head_backward(const Wkv7TrainArgs<float>& p, int64_t h);

}  // namespace rwkv7::cpu
