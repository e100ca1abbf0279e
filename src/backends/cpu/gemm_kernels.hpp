#pragma once
// Register-blocked fp32 products for prefill: Y[t, o] = Σ_i X[t, i] · W[o, i] for a group of
// up to 3 weight rows (already fp32) against every position, 4 positions at a time. Vectors
// run along i, so W rows are used as stored (no packing); 12 accumulators stay in registers.
#include <cstddef>

namespace rwkv7::cpu {

// w: `nw` (1..3) rows of n floats, `ldw` apart; x: T rows of n floats, `ldx` apart;
// y[t * ldy + j] for t < T, j < nw.
void gemm_rows(const float* w, size_t ldw, size_t nw, const float* x, size_t ldx, size_t T,
               size_t n, float* y, size_t ldy);

}  // namespace rwkv7::cpu
