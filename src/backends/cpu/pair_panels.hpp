#pragma once
// Weights packed once at load for the bf16 products of inference (LoadOptions::precision =
// "bf16"): every product over such a weight rounds its activations to bf16 and runs VDPBF16PS
// (gemm_bf16_kernels.hpp) at any number of positions, so a sequence's results do not depend on
// how many others share its batch. The weight is packed whole, as the training product packs
// one block: panel p holds outputs [64p, 64p + 64) for every input, pair-interleaved,
//   panels[p * pair_panel_stride(cols) + (i / 2) * 128 + j * 2 + i % 2] = bf16(W[64p + j, i]),
// zero past the last output and (odd cols) past the last input; the block of inputs from an
// even k0 starts k0 * 64 values into its panel.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace rwkv7 {
class ThreadPool;
}

namespace rwkv7::cpu {

// uint16 values of one panel, and of all panels of a [rows, cols] weight.
size_t pair_panel_stride(size_t cols);
size_t pair_panels_size(size_t rows, size_t cols);

// Panels [p0, p1) of W [rows, cols] (bf16 bits, or fp32 rounded to nearest even) into `out`
// (the whole array). Needs bf16_dot_available() (AVX-512 packers).
void pack_pair_panels(const uint16_t* w_bf16, size_t rows, size_t cols, size_t p0, size_t p1,
                      uint16_t* out);
void pack_pair_panels(const float* w_f32, size_t rows, size_t cols, size_t p0, size_t p1,
                      uint16_t* out);
// Their scalar twins (the tests' oracle).
void pack_pair_panels_scalar(const uint16_t* w_bf16, size_t rows, size_t cols, size_t p0, size_t p1,
                             uint16_t* out);
void pack_pair_panels_scalar(const float* w_f32, size_t rows, size_t cols, size_t p0, size_t p1,
                             uint16_t* out);

// y [count, rows] = bf16(x [count, cols]) · Wᵀ over pair panels, sums in fp32.
struct PairProduct {
  const uint16_t* panels;
  int64_t rows, cols;
  const float* x;
  int64_t count;
  float* y;
  bool split_x = false;  // x as hi + lo, two bf16 terms (Matrix::cpu_pairs_split_x)
};

// Buffers kept between calls: each product's rounded, packed activations.
struct PairProductScratch {
  std::vector<std::vector<uint16_t>> xb, xb_lo;
  std::vector<int64_t> cost_begin;
};

// Every product of the list (a decode step's stage: one parallel region over all their panels
// when each has few positions). Needs bf16_dot_available(). Each output is the same sum in the
// same order whatever `count` is and whatever else is in the list: inputs in blocks that depend
// on cols only, pairs in order within a block, blocks added in order.
void pair_panel_products(ThreadPool& pool, PairProductScratch& scratch,
                         std::span<const PairProduct> list);

}  // namespace rwkv7::cpu
