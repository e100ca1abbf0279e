// Pair panels of bf16 inference products (see pair_panels.hpp).
#include "backends/cpu/pair_panels.hpp"

#include <algorithm>

#include "backends/cpu/gemm_bf16_kernels.hpp"
#include "backends/cpu/product_tiling.hpp"
#include "core/dtype.hpp"
#include "core/thread_pool.hpp"

namespace rwkv7::cpu {
namespace {

constexpr size_t NR = kBf16PanelWidth;
constexpr int64_t kDeepDepth = 512;  // a panel block of 256 pair lines: 64 KB, read from L2

// Inputs per block, from cols alone (results must not depend on the positions).
int64_t pair_block_depth(int64_t K) { return bf16_block_depth(K, kDeepDepth); }

size_t even(size_t n) { return (n + 1) / 2 * 2; }

template <class Load>
void pack_panels(size_t rows, size_t cols, size_t p0, size_t p1, uint16_t* out, Load load) {
  const size_t stride = pair_panel_stride(cols), pairs = even(cols) / 2;
  for (size_t p = p0; p < p1; ++p) {
    uint16_t* panel = out + p * stride;
    for (size_t j = 0; j < NR; ++j) {
      const size_t o = p * NR + j;
      for (size_t q = 0; q < pairs; ++q) {
        uint16_t* pair = panel + q * 2 * NR + j * 2;
        const size_t i = 2 * q;
        pair[0] = o < rows ? load(o * cols + i) : 0;
        pair[1] = o < rows && i + 1 < cols ? load(o * cols + i + 1) : 0;
      }
    }
  }
}

}  // namespace

size_t pair_panel_stride(size_t cols) { return even(cols) * NR; }

size_t pair_panels_size(size_t rows, size_t cols) {
  return (rows + NR - 1) / NR * pair_panel_stride(cols);
}

void pack_pair_panels_scalar(const uint16_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                             uint16_t* out) {
  pack_panels(rows, cols, p0, p1, out, [w](size_t at) { return w[at]; });
}

void pack_pair_panels_scalar(const float* w, size_t rows, size_t cols, size_t p0, size_t p1,
                             uint16_t* out) {
  pack_panels(rows, cols, p0, p1, out, [w](size_t at) { return f32_to_bf16(w[at]); });
}

// The panels with the AVX-512 packer (16 × 16 transposes; at load the scalar loops took ~3% of
// a 1,024-token prefill run): W [rows, cols] is B transposed, one panel of 64 rows at a time.
namespace {
template <class T>
void pack_pairs_of_rows(const T* w, size_t rows, size_t cols, size_t p0, size_t p1, uint16_t* out) {
  const size_t stride = pair_panel_stride(cols);
  for (size_t p = p0; p < p1; ++p)
    pack_panel_bf16_pairs(w + p * NR * cols, cols, true, std::min(NR, rows - p * NR), cols,
                          static_cast<const T*>(nullptr), out + p * stride);
}
}  // namespace

void pack_pair_panels(const uint16_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                      uint16_t* out) {
  pack_pairs_of_rows(w, rows, cols, p0, p1, out);
}

void pack_pair_panels(const float* w, size_t rows, size_t cols, size_t p0, size_t p1,
                      uint16_t* out) {
  pack_pairs_of_rows(w, rows, cols, p0, p1, out);
}

void pair_panel_products(ThreadPool& pool, PairProductScratch& s,
                         std::span<const PairProduct> list) {
  if (s.xb.size() < list.size()) s.xb.resize(list.size());
  if (s.xb_lo.size() < list.size()) s.xb_lo.resize(list.size());
  // Activations rounded and packed: [count, cols rounded up to even] per product.
  for (size_t i = 0; i < list.size(); ++i) {
    const PairProduct& p = list[i];
    const size_t ldxb = even(size_t(p.cols));
    std::vector<uint16_t>& xb = s.xb[i];
    if (xb.size() < size_t(p.count) * ldxb) xb.resize(size_t(p.count) * ldxb);
    std::vector<uint16_t>& lo = s.xb_lo[i];
    if (p.split_x && lo.size() < size_t(p.count) * ldxb) lo.resize(size_t(p.count) * ldxb);
    auto pack = [&](int64_t t0, int64_t t1) {
      const float* x = p.x + t0 * p.cols;
      const size_t rows = size_t(t1 - t0), K = size_t(p.cols);
      if (p.split_x)  // lo = bf16(x - hi), packed alike
        pack_x_bf16_split(x, K, rows, K, xb.data() + t0 * ldxb, lo.data() + t0 * ldxb, ldxb);
      else
        pack_x_bf16(x, K, false, rows, K, xb.data() + t0 * ldxb, ldxb);
    };
    if (p.count * p.cols < (int64_t(1) << 16))
      pack(0, p.count);  // a decode step's few positions: not worth a parallel region
    else
      pool.parallel_for(p.count, 8, pack);
  }
  // Units: every panel of every product, costed by its multiply-adds; contiguous ranges per
  // thread (each walks its panels front to back, the weights in one stream), balanced.
  std::vector<int64_t>& begin = s.cost_begin;
  begin.assign(list.size() + 1, 0);
  auto unit_cost = [&](size_t i) {
    return int64_t(pair_panel_stride(size_t(list[i].cols))) * std::max<int64_t>(1, list[i].count);
  };
  for (size_t i = 0; i < list.size(); ++i) {
    const int64_t panels = (list[i].rows + int64_t(NR) - 1) / int64_t(NR);
    begin[i + 1] = begin[i] + panels * unit_cost(i);
  }
  const int64_t chunk = std::max<int64_t>(1, begin.back() / (8 * pool.size()));
  pool.parallel_balanced(begin.back(), chunk, [&](int, int64_t b, int64_t e) {
    for (size_t i = 0; i < list.size(); ++i) {
      const int64_t lo = std::max(b, begin[i]), hi = std::min(e, begin[i + 1]);
      if (lo >= hi) continue;
      const int64_t cost = unit_cost(i);
      // Unit u belongs to the range holding its first cost unit.
      const int64_t u0 = (lo - begin[i] + cost - 1) / cost, u1 = (hi - begin[i] + cost - 1) / cost;
      const PairProduct& p = list[i];
      const size_t ldxb = even(size_t(p.cols)), stride = pair_panel_stride(size_t(p.cols));
      const int64_t depth = pair_block_depth(p.cols);
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t n0 = u * int64_t(NR), nn = std::min(int64_t(NR), p.rows - n0);
        const uint16_t* panel = p.panels + size_t(u) * stride;
        for (int64_t k0 = 0; k0 < p.cols; k0 += depth) {
          const int64_t kn = std::min(depth, p.cols - k0);
          gemm_panel_bf16(s.xb[i].data() + k0, ldxb, size_t(p.count), panel + size_t(k0) * NR,
                          size_t(kn), p.y + n0, size_t(p.rows), size_t(nn), k0 > 0);
          if (p.split_x)
            gemm_panel_bf16(s.xb_lo[i].data() + k0, ldxb, size_t(p.count), panel + size_t(k0) * NR,
                            size_t(kn), p.y + n0, size_t(p.rows), size_t(nn), true);
        }
      }
    }
  });
}

}  // namespace rwkv7::cpu
