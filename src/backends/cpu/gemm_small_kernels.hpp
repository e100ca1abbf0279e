#pragma once
// Products for decode batches (a few to 64 positions): Y[t, o] = Σ_i X[t, i] · W[o, i].
// Here the positions, not the weights, are packed: X once per call, input-major
// (xp[i * MP + t], MP = the positions rounded up to whole vectors, zero-padded), and each
// weight row is used as it is (widened to fp32 into a small buffer for bf16/f16/quantised),
// one weight value broadcast against all positions. A block of rows × all positions of
// accumulators stays in registers over the whole input, so each weight is read once, from
// memory, in order: no transpose of the weights, whose trip through memory is most of a
// decode step.
#include <cstddef>
#include <cstdint>

namespace rwkv7::cpu {

// Positions one call takes at most (4 vectors).
size_t small_gemm_max_positions();
// Packed width for T positions (whole vectors) and the weight rows one kernel call takes.
size_t small_gemm_width(size_t T);
size_t small_gemm_rows(size_t T);

// xp[i * small_gemm_width(T) + t] = x[t * ldx + i] for i < K, zero for t ≥ T.
void small_gemm_pack_x(const float* x, size_t ldx, size_t T, size_t K, float* xp);

// For r < rows (≤ small_gemm_rows(T)), t < T: y[r * ldr + t] = Σ_i w[r * ldw + i] · xp[i·MP + t]
// (outputs row by row: the caller transposes a run of rows into Y at once, since writing Y's
// columns directly would touch T far-apart lines per row).
void small_gemm(const float* w, size_t ldw, size_t rows, const float* xp, size_t K, size_t T,
                float* y, size_t ldr);

}  // namespace rwkv7::cpu
