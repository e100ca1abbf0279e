#pragma once
// Q6_K weights repacked once, at load, into integer panels of 8 outputs for AVX2 (and AVX-512
// without VNNI; with VNNI the row kernels of kquant_kernels.hpp stay: `vpdpbusd` rows already
// reach the bandwidth there). Q6_K's levels q are 6 bits (0..63, the value d·sc·(q - 32) with an
// int8 scale per 16 inputs), so one vpmaddubsw multiplies 8 outputs' levels by 4 broadcast
// activation bytes into int16 pair sums; a 16-input sub-block's lanes start from -32·(their 8
// activations' sum) and add 4 of them: every partial sum is Σ(q - 32)·x over the inputs added
// plus -32·x over the rest, 8 terms within ±32·127, so no int16 lane overflows at any point.
// vpmaddwd by the sub-block's scales then gives exact int32 sc·Σ(q - 32)·x; one fp32 step per
// 32-block by d · x.d.
// Per panel and super-block of 256 inputs (8 · 210 bytes: Q6_K's 6.5625 bits per weight):
//   [8 × f16 d], then per 32-block b < 8: 4 groups g of [8 outputs][4 bytes] (output j's bytes
//   4g..4g+3: low nibbles = low 4 bits of inputs 4g..4g+3 of the block, high nibbles = of
//   inputs 16 + 4g..), 2 groups h of [8 outputs][4 bytes] of the levels' top 2 bits (byte k
//   of output j: bits 0-1 input 4h + k, 2-3 input 16 + 4h + k, 4-5 input 4(h + 2) + k, 6-7
//   input 16 + 4(h + 2) + k), then [8 × int8 sc of inputs 0..15][8 × int8 sc of 16..31].
// Activations are quantised per position as for the other integer panels
// (quantize_q8_positions).
#include <cstddef>
#include <cstdint>

namespace rwkv7::cpu {

// Outputs per panel for the kernels in use (0: none on this target: the row kernels serve).
// Pack after any change of ISA cap.
size_t q6k_panel_width();
inline bool q6k_panels_supported() { return q6k_panel_width() != 0; }

// Bytes of the panels of a Q6_K weight [rows, cols] (cols a multiple of 256).
size_t q6k_panels_bytes(size_t rows, size_t cols);

// Panels [p0, p1) of a Q6_K weight [rows, cols] (rows of cols / 256 super-blocks as stored).
void pack_q6k_panels(const uint8_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                     uint8_t* out);

// y[t · ldy + o] = Σ_b x.d[t, b] · d_o · Σ_{i < 32} sc[o, b, i / 16] · (level[o, b, i] - 32) ·
// q[t, b, i] for the outputs of panels [p0, p1) below `rows`, t < T; q and d as
// quantize_q8_positions makes them (corr is not needed: the offset comes from q itself).
void gemm_q6k_panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                     const int8_t* q, const float* d, const int32_t* corr, size_t T, float* y,
                     size_t ldy);

// The scalar twin of gemm_q6k_panels (the test oracle), in double from the same panels.
void gemm_q6k_panels_scalar(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                            const int8_t* q, const float* d, size_t T, double* y, size_t ldy);

}  // namespace rwkv7::cpu
