#pragma once
// Register-blocked fp32 accumulate-products for training: C[m, n] += Σ_k A(m, k) · B[k, n],
// A(m, k) = a[m·a_m + k·a_k] (any strides, so Aᵀ costs no copy), B and C row-major. Vectors
// run along n: each step broadcasts 4 values of A and FMAs them into 4×NV vector accumulators
// against NV vectors of one B row. This is the shape of every backward product
// (dX = dY·W, dW = dYᵀ·X) and of the LoRA forward (y = x·m, m [in, out]).
#include <cstddef>
#include <cstdint>

namespace rwkv7::cpu {

// Rows [m0, m1) and columns [n0, n1) of C, all of K. Single-threaded; the caller tiles.
void gemm_acc_tile(const float* a, int64_t a_m, int64_t a_k, const float* b, int64_t ldb, float* c,
                   int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K);

// The scalar twin (fp32, k in order): the oracle for the test of gemm_acc_tile.
void gemm_acc_tile_scalar(const float* a, int64_t a_m, int64_t a_k, const float* b, int64_t ldb,
                          float* c, int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                          int64_t K);

// Lanes of the dispatched float vector: callers size column panels in multiples of it.
size_t gemm_acc_lanes();

}  // namespace rwkv7::cpu
