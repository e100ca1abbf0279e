#pragma once
// Q4_0 weights repacked once, at load, into panels of W outputs (W = 16 on AVX-512 VNNI, 8 on
// AVX2 and AVX-512 without VNNI: one vector of int32 lanes): per block of 32 inputs, 4 groups g
// of [W outputs][4 bytes] (output j's stored bytes 4g..4g+3: low nibbles = inputs 4g..4g+3,
// high nibbles = inputs 16 + 4g..), then the W outputs' f16 scales: W · 18 bytes, as many as
// the W rows had. One vpmaddubsw (or vpdpbusd) then multiplies the nibbles of W outputs by 4
// broadcast activation bytes; with vpmaddubsw a whole block's pair sums fit int16 (16 products
// ≤ 15·127), so a block costs 8 multiply-adds for W outputs instead of 8 per output.
// Activations are quantised per position as for the Q8_0 panels (quantize_q8_positions: the
// same exact integer block sums).
#include <cstddef>
#include <cstdint>

namespace rwkv7::cpu {

// Outputs per panel for the kernels in use (0: no panel product on this target). Panels are
// made and read with the same value: pack after any change of ISA cap.
size_t q4_panel_width();

// Whether the kernels in use have the Q4_0 panel product (AVX2 or AVX-512).
inline bool q4_panels_supported() { return q4_panel_width() != 0; }

size_t q4_panels_bytes(size_t rows, size_t cols);

// Panels [p0, p1) of a Q4_0 weight [rows, cols] (rows of cols / 32 blocks as stored).
void pack_q4_panels(const uint8_t* w, size_t rows, size_t cols, size_t p0, size_t p1, uint8_t* out);

// y[t · ldy + o] = Σ_b dw[o, b] · d[t, b] · Σ_i (nibble[o, b, i] - 8) · q[t, b, i] for the outputs
// of panels [p0, p1) below `rows`, t < T; q, d and corr (= -128 · Σ_i q[t, b, i]) as
// quantize_q8_positions makes them.
void gemm_q4_panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                    const int8_t* q, const float* d, const int32_t* corr, size_t T, float* y,
                    size_t ldy);

// The scalar twin of gemm_q4_panels (the test oracle), from the same panels.
void gemm_q4_panels_scalar(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                           const int8_t* q, const float* d, const int32_t* corr, size_t T,
                           double* y, size_t ldy);

}  // namespace rwkv7::cpu
