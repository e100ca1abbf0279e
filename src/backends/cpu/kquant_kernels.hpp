#pragma once
// Decode (matrix × one vector) for the K-quants (Q4_K, Q5_K, Q6_K) and the other ggml block
// types beyond Q8_0/Q4_0 (Q5_0, Q5_1, IQ4_NL), weights read in place (core/quant.hpp
// layouts), activations quantised to Q8_0 blocks of 32 once per product (Q8Act, with dsum).
//
// Why Q8_0 activations and not ggml's Q8_K (one scale per 256): every sub-block of these
// types is 32 values (Q6_K: two 16-value halves), so a Q8_0 block lines up with one weight
// sub-block, the integer sum per 32 values is exact, the activation quantiser and its
// lane sums are shared with Q8_0/Q4_0, and the finer activation scale is more accurate. The
// price is one fp32 multiply-add per 32 values instead of one per 256.
//
// Each 32-block b of a weight row contributes
//   ws_b·x.d[b]·Σ_i w_b[i]·x.q[32b+i] + wm_b·x.dsum[b]
// with integer levels w and (per type):
//   Q4_K/Q5_K: w = q (0..15 / 0..31), ws = d·sc_j, wm = -dmin·m_j   (sub-block j = b mod 8)
//   Q6_K:      w = sc_s·(q - 32) per 16-value half s, ws = d, wm = 0
//   Q5_0:      w = q - 16, ws = d, wm = 0;   Q5_1: w = q, ws = d, wm = m
//   IQ4_NL:    w = kIq4nlValues[nibble], ws = d, wm = 0
#include <cstddef>
#include <cstdint>

#include "backends/cpu/quant_kernels.hpp"
#include "core/dtype.hpp"

namespace rwkv7::cpu {

// True for the types below.
bool matvec_kquant_supports(DType t);

// y[r] = row r · x for r < rows; row r's x.nb / (block / 32) blocks start at w + r·row_bytes.
// x.dsum must be set. AVX-512 VNNI and AVX2 paths for Q4_K, Q5_K and Q6_K; the rest (and
// other targets) decode each 32-block to int16 levels and take Highway dot products.
void matvec_kquant(DType t, const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x,
                   float* y);

// Scalar reference twin: exact int32 sum per 32-block, then the fp32 terms above.
void matvec_kquant_ref(DType t, const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x,
                       float* y);

// 32-block b of a row of type t as its integer levels w[32] and the two coefficients above.
void decode_block32(DType t, const uint8_t* row, size_t b, int16_t* w, float* ws, float* wm);

}  // namespace rwkv7::cpu
