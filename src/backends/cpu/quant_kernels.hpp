#pragma once
// Integer dot products for block-quantised weights (Q8_0/Q4_0) against activations quantised
// to Q8_0, dispatched at run time like kernels.hpp: prefill on rows unpacked to int8 +
// per-block scales, decode on the blocks read in place.
#include <cstddef>
#include <cstdint>

namespace rwkv7::cpu {

// out[j*out_stride] = Σ_b wd[b]·xd[j][b]·Σ_{i<32} wq[32b+i]·xq[j][32b+i]  for j < rows,
// where xq[j] = xq + j*32*nb, xd[j] = xd + j*nb; nb = blocks per row.
void dot_rows_q8(const int8_t* wq, const float* wd, const int8_t* xq, const float* xd, size_t nb,
                 size_t rows, float* out, size_t out_stride);

// One activation row quantised to Q8_0 in the form the decode kernels read: q[32·nb] int8
// values, d[nb] fp32 scales, neg_s4[8·nb] = -(sum of each 4 consecutive q). The sums let
// VNNI multiply weights offset to unsigned (Q8_0: q+128, Q4_0: the raw nibble q+8) and
// subtract the offset exactly in int32.
// dsum[b] = d[b]·Σ_{i<32} q[32b+i] (the block's value sum), read by the kernels of types with
// an offset or min term (Q4_K, Q5_K, Q5_1: kquant_kernels.hpp); may be null for the others.
struct Q8Act {
  const int8_t* q;
  const float* d;
  const int32_t* neg_s4;
  size_t nb;
  const float* dsum = nullptr;
};

// neg_s4[i] = -(q[4i] + q[4i+1] + q[4i+2] + q[4i+3]) for i < 8·nb.
void q8_act_lane_sums(const int8_t* q, size_t nb, int32_t* neg_s4);

// dsum[b] = -d[b]·Σ_{k<8} neg_s4[8b + k] = d[b]·Σ_i q[32b + i], for b < nb.
void q8_act_block_sums(const float* d, const int32_t* neg_s4, size_t nb, float* dsum);

// x[32·nb] → the Q8Act arrays, bit for bit what quantize_row_q8_0 + unpack_row_i8 +
// q8_act_lane_sums give (the scalar twin).
void quantize_act_q8(const float* x, size_t nb, int8_t* q, float* d, int32_t* neg_s4);

// Decode (matrix × one vector) with Q8_0 / Q4_0 weights read in place: row r's x.nb blocks
// start at w + r·row_bytes. y[r] = Σ_b f16(d_w[r][b])·x.d[b]·Σ_i q_w[r][b][i]·x.q[32b+i]
// (Q4_0: q_w = nibble - 8), r < rows.
void matvec_q8_0(const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x, float* y);
void matvec_q4_0(const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x, float* y);

// Scalar reference twins: exact int32 sum per block, then fp32 scale and accumulation.
void matvec_q8_0_ref(const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x, float* y);
void matvec_q4_0_ref(const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x, float* y);

}  // namespace rwkv7::cpu
