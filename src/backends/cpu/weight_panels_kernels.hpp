#pragma once
// Weights packed once, at load, into the panel layout of the packed product
// (gemm_packed_kernels.hpp), in their own dtype (bf16 / f16 bits, or fp32): a weight
// W [rows, cols] becomes ceil(rows / NR) panels of [cols][NR] values, panel p holding outputs
// [p·NR, p·NR + NR) (zero past rows), with NR = panel_width(). Products of several positions
// then widen contiguous lines into the L1 panel (fp32 panels are read in place) instead of
// transposing W's rows every call, and one position reads the same panels (no second copy).
#include <cstddef>
#include <cstdint>

#include "core/dtype.hpp"

namespace rwkv7::cpu {

// Values of the panels of a [rows, cols] weight.
size_t panels_size(size_t rows, size_t cols);

// out[p][i][j] = w[(p·NR + j) · cols + i], zero where p·NR + j ≥ rows; panels [p0, p1) only
// (threads split the panels). `t` BF16 or F16: the bits as they are (a signalling f16 NaN
// comes out quiet).
void pack_panels(DType t, const uint16_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                 uint16_t* out);
void pack_panels(const float* w, size_t rows, size_t cols, size_t p0, size_t p1, float* out);

// dst[i] = src[i] widened to fp32 (bf16 or f16 bits), for i < n (contiguous lines of a panel).
// `next`, when not null, is the block widened next (at least n values), prefetched here in
// one burst: right for a product of many positions (prefill: ~8% faster than spreading the
// prefetches, AVX2), but for a decode batch the burst stalls on the miss buffers and
// gemm_panel's PrefetchRange spreads them instead.
void widen_bf16(const uint16_t* src, size_t n, float* dst, const uint16_t* next = nullptr);
void widen_f16(const uint16_t* src, size_t n, float* dst, const uint16_t* next = nullptr);

// y[o] = Σ_i panels(o, i) · x[i] for the outputs of panels [p0, p1) below `rows`: one position
// (decode), reading each panel once, front to back. `t`: BF16, F16 (uint16_t panels) or F32.
void gemv_panels(DType t, const void* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                 const float* x, float* y);

}  // namespace rwkv7::cpu
