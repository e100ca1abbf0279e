#pragma once
// Q4_K weights repacked once, at load, into integer panels of W outputs (W = 16 on AVX-512 VNNI,
// 8 on AVX2 and AVX-512 without VNNI), the layout of the Q4_0 panels (q4_panels_kernels.hpp)
// with the K-quant scales beside it. Q4_K's levels are nibbles (0..15; the min is a separate
// term), so one vpdpbusd / vpmaddubsw multiplies W outputs' nibbles by 4 broadcast activation
// bytes. With vpmaddubsw a 32-block's int16 pair sums cannot overflow (16 products ≤ 15·127)
// and vpmaddwd by the outputs' 6-bit sub-block scales (instead of ones) gives exact int32
// sc·Σ q·x; with vpdpbusd the int32 Σ q·x is scaled in fp32 by d·sc (exact: f16 × 6 bits). Per
// panel and super-block of 256 inputs (W·148 bytes, 4.6 bits per weight against Q4_K's 4.5):
//   [W × f16 d][W × f16 dmin], then per 32-block b < 8: 4 groups g of [W outputs][4 bytes]
//   (output j's bytes 4g..4g+3: low nibbles = inputs 4g..4g+3 of the block, high nibbles =
//   inputs 16 + 4g..), then [W × sc_b][W × m_b] (bytes).
// Activations are quantised per position as for the other integer panels
// (quantize_q8_positions); the min term takes each block's x.d·Σq precomputed once per product
// (q8_block_dsums), not per panel.
//
// Q5_K panels (AVX2 and AVX-512 without VNNI, 8 outputs; with VNNI the vpdpbusd row kernels
// serve): the same, each 32-block followed by a plane of the levels' fifth bits, [W outputs]
// [4 bytes] (byte k of output j: bit g = input 4g + k, bit 4 + g = input 16 + 4g + k), W·180
// bytes per super-block (5.6 bits per weight against Q5_K's 5.5). Levels reach 31, so a block's
// 8 pair sums would overflow int16: each 16 inputs get their own vpmaddwd.
#include <cstddef>
#include <cstdint>

namespace rwkv7::cpu {

// Outputs per panel for the kernels in use (0: none on this target, below AVX2: the portable row
// kernels of kquant_kernels.hpp). Pack after any change of ISA cap.
size_t q4k_panel_width();
inline bool q4k_panels_supported() { return q4k_panel_width() != 0; }

// dsum[i] = d[i] · Σq of block i, from quantize_q8_positions' d and corr (= -128·Σq, exact).
inline void q8_block_dsums(const float* d, const int32_t* corr, size_t n, float* dsum) {
  for (size_t i = 0; i < n; ++i) dsum[i] = d[i] * float(-corr[i] / 128);
}

// Bytes of the panels of a Q4_K weight [rows, cols] (cols a multiple of 256).
size_t q4k_panels_bytes(size_t rows, size_t cols);

// Panels [p0, p1) of a Q4_K weight [rows, cols] (rows of cols / 256 super-blocks as stored).
void pack_q4k_panels(const uint8_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                     uint8_t* out);

// y[t · ldy + o] = Σ_b x.d[t, b] · (d_o·sc[o, b] · Σ_i level[o, b, i] · q[t, b, i]
//                                  - dmin_o·m[o, b] · Σ_i q[t, b, i])
// for the outputs of panels [p0, p1) below `rows`, t < T; q and d as quantize_q8_positions makes
// them, dsum[t, b] = x.d[t, b] · Σ_i q[t, b, i] (q8_block_dsums; the scalar twin ignores it).
void gemm_q4k_panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                     const int8_t* q, const float* d, const float* dsum, size_t T, float* y,
                     size_t ldy);

// The scalar twin of gemm_q4k_panels (the test oracle), in double from the same panels.
void gemm_q4k_panels_scalar(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                            const int8_t* q, const float* d, const float* dsum, size_t T, double* y,
                            size_t ldy);

// The Q5_K counterparts (same contracts; 0 outputs per panel where the row kernels serve).
size_t q5k_panel_width();
inline bool q5k_panels_supported() { return q5k_panel_width() != 0; }
size_t q5k_panels_bytes(size_t rows, size_t cols);
void pack_q5k_panels(const uint8_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                     uint8_t* out);
void gemm_q5k_panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                     const int8_t* q, const float* d, const float* dsum, size_t T, float* y,
                     size_t ldy);
void gemm_q5k_panels_scalar(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                            const int8_t* q, const float* d, const float* dsum, size_t T, double* y,
                            size_t ldy);

}  // namespace rwkv7::cpu
