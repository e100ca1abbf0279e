#pragma once
// The cpu backend's product in bf16 with fp32 accumulation (mixed-precision training): both
// operands rounded to bf16 (nearest even), every product of two bf16 values exact in fp32,
// sums in fp32. On CPUs with AVX512_BF16 the kernel is VDPBF16PS (two products per fp32 lane
// per instruction: twice the FMA rate); elsewhere the callers round the operands and run the
// fp32 kernel (gemm_packed_kernels.hpp, with round_to_bf16) on them, the same sums in another
// order.
//
// Layouts (AVX512_BF16 path). K is taken in pairs: a pair of bf16 values is one 32-bit lane.
//   X packed: xb[m * ldxb + k] = bf16(op(X)(m, k)), rows of an even number of values (zero
//     after K when K is odd).
//   B panel: kBf16PanelWidth outputs × kn inputs, pair-interleaved: panel[(p * NR + j) * 2 + e]
//     = bf16(B(2p + e, j)), zero past nn outputs and past kn inputs.
// The micro-kernel broadcasts one pair of X against NR outputs × 2 inputs, 6 rows × 64 outputs
// of fp32 accumulators in registers.
#include <cstddef>
#include <cstdint>

namespace rwkv7::cpu {

constexpr size_t kBf16PanelWidth = 64;  // outputs per panel: 4 vectors of 16 fp32 lanes

// VDPBF16PS can be used: the CPU has AVX512_BF16 and the kernels in use are AVX-512 ones (so
// `--isa avx2` measures the fallback).
bool bf16_dot_available();

// xb[m * ldxb + k] = bf16(op(X)(m, k)) for m < rows, k < K; xb[m * ldxb + K] = 0 when K is
// odd. op(X)(m, k) = x[m * ldx + k], or x[k * ldx + m] when `transposed`. ldxb ≥ K rounded up
// to even. Needs bf16_dot_available().
void pack_x_bf16(const float* x, size_t ldx, bool transposed, size_t rows, size_t K, uint16_t* xb,
                 size_t ldxb);

// The same for rows of X (not transposed) as two terms: hi = bf16(x) as pack_x_bf16 writes it,
// lo = bf16(x - hi) (x to 16 significant bits as hi + lo). Needs bf16_dot_available().
void pack_x_bf16_split(const float* x, size_t ldx, size_t rows, size_t K, uint16_t* hi,
                       uint16_t* lo, size_t ldxb);

// One panel block of B, rounded to bf16 and pair-interleaved (layout above), B(k, n) =
// b[k * ldb + n] or, when `transposed`, b[n * ldb + k] (a weight [out, in] as stored), for
// n < nn ≤ kBf16PanelWidth, k < kn. The panel holds (kn rounded up to even) / 2 pair lines.
// `next` (or nullptr): where the block packed after this one starts, of the same nn and kn
// and ldb; its lines are prefetched meanwhile (weights stream from memory). Needs
// bf16_dot_available().
void pack_panel_bf16_pairs(const float* b, size_t ldb, bool transposed, size_t nn, size_t kn,
                           const float* next, uint16_t* panel);

// The same from B's values already rounded to bf16 (bits; same layout and ldb): copied into
// pairs, no rounding (a weight's bf16 copy kept by mixed-precision training).
void pack_panel_bf16_pairs(const uint16_t* b, size_t ldb, bool transposed, size_t nn, size_t kn,
                           const uint16_t* next, uint16_t* panel);

// y[t * ldy + j] = (accumulate ? y : 0) + Σ_k bf16 X(t, k) · panel B(k, j), t < T, j < nn, over
// kn inputs (the panel's pair lines; X's rows start at this block's first input). panel 64-byte
// aligned. Needs bf16_dot_available().
void gemm_panel_bf16(const uint16_t* xb, size_t ldxb, size_t T, const uint16_t* panel, size_t kn,
                     float* y, size_t ldy, size_t nn, bool accumulate);

}  // namespace rwkv7::cpu
