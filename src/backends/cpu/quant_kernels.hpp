#pragma once
// Integer dot products for block-quantised weights (Q8_0/Q4_0 unpacked to int8 + per-block
// scales) against activations quantised to Q8_0, dispatched at run time like kernels.hpp.
#include <cstddef>
#include <cstdint>

namespace rwkv7::cpu {

// out[j*out_stride] = Σ_b wd[b]·xd[j][b]·Σ_{i<32} wq[32b+i]·xq[j][32b+i]  for j < rows,
// where xq[j] = xq + j*32*nb, xd[j] = xd + j*nb; nb = blocks per row.
void dot_rows_q8(const int8_t* wq, const float* wd, const int8_t* xq, const float* xd, size_t nb,
                 size_t rows, float* out, size_t out_stride);

// One row of Q8_0 blocks (34 bytes each, read in place) against one Q8_0-quantised
// activation row: Σ_b d_w[b]·xd[b]·Σ_i q_w[b][i]·xq[32b+i].
float dot_q8_0_blocks(const uint8_t* blocks, const int8_t* xq, const float* xd, size_t nb);

}  // namespace rwkv7::cpu
