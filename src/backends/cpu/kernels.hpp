#pragma once
// SIMD kernels of the CPU backend, dispatched at run time to the best ISA of the machine
// (Highway: SSE4/AVX2/AVX-512/...). Each has a scalar twin in the reference backend.
#include <cstddef>
#include <cstdint>

namespace rwkv7::cpu {

// out[j] = dot(w, x + j*n) for j < rows; w and x rows are n floats.
void dot_rows(const float* w, const float* x, size_t n, size_t rows, float* out, size_t out_stride);
// dot(w, x) for one row of n bf16 / f16 weights, widened in registers.
float dot_bf16(const uint16_t* w, const float* x, size_t n);
float dot_f16(const uint16_t* w, const float* x, size_t n);
// Widen n bf16 / f16 values to f32.
void bf16_to_f32_row(const uint16_t* in, float* out, size_t n);
void f16_to_f32_row(const uint16_t* in, float* out, size_t n);
// T WKV-7 steps of one head (inputs of step t at offset t·stride), state S [N, N] updated in
// place; false when N is too large for the register-blocked form (then use wkv7_head_step).
bool wkv7_head_seq(float* S, const float* r, const float* decay, const float* k, const float* v,
                   const float* a, const float* b, size_t N, size_t T, size_t stride, float* y);
// One WKV-7 step of one head: S [N, N] updated in place, y [N] written.
void wkv7_head_step(float* S, const float* r, const float* decay, const float* k, const float* v,
                    const float* a, const float* b, size_t N, float* y);

// Runs `iters` rounds of 12 independent FMA chains a_j <- a_j * kFmaPeakScale + kFmaPeakShift,
// a_j starting at fma_peak_start(j); returns the FLOPs done (for the machine's limit) and adds
// the chains' final values to *sink (so a test can check that every chain ran).
inline constexpr float kFmaPeakScale = 0.999f, kFmaPeakShift = 1e-4f;
constexpr float fma_peak_start(int chain) { return 1.0f + 0.125f * float(chain); }
double fma_peak(int64_t iters, float* sink);

}  // namespace rwkv7::cpu
