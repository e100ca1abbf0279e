#pragma once
// The cpu backend's product kernels for prefill (8 positions and more) and for every training
// product: Y[t, o] = Σ_i X(t, i) · B(i, o), with B packed into panels. A panel holds
// panel_width() consecutive outputs for a block of kc inputs, stored input-major:
// panel[i * NR + j] = B(i0 + i, o0 + j); for a weight W [out, in] as stored, B(i, o) = W[o, i].
// The kernel broadcasts one activation value against NR outputs in vectors, 6 positions × NR
// outputs of accumulators in registers, so each weight value loaded from L1 serves 6 positions and
// each activation value serves NR outputs; no horizontal sums.
#include <cstddef>
#include <cstdint>

namespace rwkv7::cpu {

// Outputs per panel on the running ISA (4 vectors of floats: 64 on AVX-512, 16 on AVX2).
size_t panel_width();

// The Highway target (a HWY_* bit) the kernels dispatch to now: follows the ISA cap and
// Highway's test mock, and (unlike hwy::SupportedTargets() in Highway 1.0) changes nothing.
int64_t dispatched_target();

// panel[i * NR + j] = rows[j * ldr + i] for j < nn, i < kc; columns j in [nn, NR) are zero.
// Rows stream from memory: the block the caller packs next (same ldr; nullptr = none) is
// prefetched meanwhile, so its lines arrive while this block is multiplied; it must hold at
// least nn rows of kc values (this block's footprint is what gets prefetched).
void pack_panel(const float* rows, size_t ldr, size_t nn, size_t kc, const float* next,
                float* panel);

// The same from bf16 rows, widened to fp32 on the way (no separate widening pass: decode
// batches multiply each weight once per step, so the weights' trip through memory is the cost).
void pack_panel_bf16(const uint16_t* rows, size_t ldr, size_t nn, size_t kc, const uint16_t* next,
                     float* panel);

// The same from f16 rows.
void pack_panel_f16(const uint16_t* rows, size_t ldr, size_t nn, size_t kc, const uint16_t* next,
                    float* panel);

// panel[i * NR + j] = src[i * lds + j] for j < nn, i < kc; columns j in [nn, NR) are zero.
// For a B stored input-major, B(i, o) = src[i * lds + o] (the weight W [out, in] of
// dX = dY·W, the activations X of dW = dYᵀ·X): rows are copied, not transposed.
void pack_panel_input_major(const float* src, size_t lds, size_t nn, size_t kc, float* panel);
// The same from bf16 values (bits), widened to fp32 on the way.
void pack_panel_input_major(const uint16_t* src, size_t lds, size_t nn, size_t kc, float* panel);

// Rounds n floats to the nearest bf16 value (nearest even, as f32_to_bf16), in place: the
// operands of the bf16 product's fallback (gemm_bf16_kernels.hpp).
void round_to_bf16(float* x, size_t n);

// Memory the caller reads next (the following weight block), prefetched by gemm_panel a line
// at a time spread over its loops: issued in one burst before the product, the prefetches
// fill the core's miss buffers and stall (measured: 14% of a 32-sequence decode step).
struct PrefetchRange {
  const void* begin = nullptr;
  size_t bytes = 0;
};

// y[t * ldy + j] = (accumulate ? y[t * ldy + j] : 0) + Σ_i x[t * ldx + i] · panel[i * NR + j]
// for t < T, j < nn. panel must be 64-byte aligned.
void gemm_panel(const float* x, size_t ldx, size_t T, const float* panel, size_t kc, float* y,
                size_t ldy, size_t nn, bool accumulate, PrefetchRange prefetch = {});

// gemm_panel over a bf16 panel as pack_panels(DType::BF16, …) made it at load (the same layout
// in 16-bit values), read as it is: no widened fp32 copy per block, which for a decode batch's
// few positions cost as much as the products (panel: 2-byte aligned is enough). Only where
// bf16_panel_product_available() (AVX2 and AVX-512 kernels).
bool bf16_panel_product_available();
void gemm_panel_bf16(const float* x, size_t ldx, size_t T, const uint16_t* panel, size_t kc,
                     float* y, size_t ldy, size_t nn, bool accumulate, PrefetchRange prefetch = {});

// The same with X given transposed: X(t, i) = xt[i * ldxt + t] (xt [kc, ≥ T], e.g. dY [rows,
// out] read down its columns for dW = dYᵀ·X), so no transposed copy is made.
void gemm_panel_xt(const float* xt, size_t ldxt, size_t T, const float* panel, size_t kc, float* y,
                   size_t ldy, size_t nn, bool accumulate, PrefetchRange prefetch = {});

// X packed for gemm_panel_tiles: the positions in tiles of gemm_tile_rows() (the last tile the
// rest), tile by tile; the tile of positions [t, t + mr) holds X(t + r, i) at out[t · kc + i · mr
// + r], so the kernel's broadcasts read one sequential stream instead of mr rows (a block of X
// larger than L1 read down mr rows at once ran the AVX2 kernel at 89 GFLOP/s, packed at 99, one
// thread). X(t, i) = x[t · ldx + i], or x[i · ldx + t] when transposed; t < T, i < kc.
size_t gemm_tile_rows();
void pack_x_tiles(const float* x, size_t ldx, bool transposed, size_t T, size_t kc, float* out);

// gemm_panel over X packed by pack_x_tiles (same T and kc).
void gemm_panel_tiles(const float* xp, size_t T, const float* panel, size_t kc, float* y,
                      size_t ldy, size_t nn, bool accumulate, PrefetchRange prefetch = {});

// Scalar twin of gemm_panel / gemm_panel_xt (the test oracle for the kernel).
void gemm_panel_scalar(const float* x, size_t ldx, bool x_transposed, size_t T, const float* panel,
                       size_t nr, size_t kc, float* y, size_t ldy, size_t nn, bool accumulate);

}  // namespace rwkv7::cpu
