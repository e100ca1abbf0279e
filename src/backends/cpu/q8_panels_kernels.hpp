#pragma once
// Q8_0 weights packed once, at load, so that one load of weight bytes serves several outputs
// (decode) and several positions (prefill). Two layouts, after the kernels in use:
// - AVX-512 VNNI: panels of 32 outputs; per block of 32 inputs, 8 groups of [32 outputs][4
//   inputs] bytes (q + 128, so that vpdpbusd multiplies them unsigned by the signed activation
//   bytes), then the 32 block scales in fp32.
// - AVX2 (and AVX-512 without VNNI): panels of 8 outputs; per block, 8 groups of [8 outputs][4
//   inputs] bytes (q as stored, signed: vpmaddubsw takes |q| and the activations carry q's
//   sign), then the 8 scales in f16 as stored: 8 · 34 bytes, as many as the rows had.
// Activations are quantised to Q8_0 per position, as the one-position row product does, so a
// position's result does not depend on its batch: the block sums are exact integers, only the
// fp32 accumulation of scaled block sums differs in order.
#include <cstddef>
#include <cstdint>

namespace rwkv7::cpu {

// Outputs per panel of the kernels in use (32 with VNNI, 8 with AVX2; 0: no panel product on
// this target). Panels are made and read with the same value: pack after any change of ISA cap.
size_t q8_panel_width();

inline bool q8_panels_supported() { return q8_panel_width() != 0; }

size_t q8_panels_bytes(size_t rows, size_t cols);

// Panels [p0, p1) of a Q8_0 weight [rows, cols] (rows of cols / 32 blocks as stored).
void pack_q8_panels(const uint8_t* w, size_t rows, size_t cols, size_t p0, size_t p1, uint8_t* out);

// Positions quantised for the panel product: q [T][cols] int8, d [T][cols / 32] scales,
// corr [T][cols / 32] = -128 · Σ q over the block (the unsigned weights' offset).
void quantize_q8_positions(const float* x, size_t T, size_t cols, int8_t* q, float* d,
                           int32_t* corr);

// y[t · ldy + o] = Σ_b dw[o, b] · d[t, b] · Σ_i qw[o, b, i] · q[t, b, i] for the outputs of
// panels [p0, p1) below `rows`, t < T.
void gemm_q8_panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                    const int8_t* q, const float* d, const int32_t* corr, size_t T, float* y,
                    size_t ldy);

// The scalar twin of gemm_q8_panels (the test oracle), from the same panels.
void gemm_q8_panels_scalar(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                           const int8_t* q, const float* d, const int32_t* corr, size_t T,
                           double* y, size_t ldy);

}  // namespace rwkv7::cpu
