// The bf16 packed product over the pool (see bf16_product.hpp).
#include "backends/cpu/bf16_product.hpp"

#include <algorithm>

#include "backends/cpu/gemm_bf16_kernels.hpp"
#include "backends/cpu/product_tiling.hpp"
#include "core/thread_pool.hpp"

namespace rwkv7::cpu {
namespace {

// Inputs per block (bf16_block_depth): op(X)'s block, 512 rows × 512 in bf16 = 512 KB, stays in
// L2 beside the panel (the head's logits, K = 768: one pass instead of three in blocks of 256);
// deeper products (the head's dX, K = 65,536) go in blocks of kDepth. op(X)'s packed rows of
// `depth` values hold a block with its zero padding when it is the last and odd.
constexpr int64_t kDepth = 256, kMaxDepth = 512;

int64_t block_depth(int64_t K) { return bf16_block_depth(K, kDepth); }

// Where B's block of outputs from n0 and inputs from k0 starts (in b.data, or b.bf16).
int64_t block_at(const GemmOperand& b, int64_t n0, int64_t k0) {
  return b.transposed ? n0 * b.ld + k0 : k0 * b.ld + n0;
}

// One pair panel of B's block: from its kept bf16 copy when there is one (copied, half the
// bytes), else rounded from its fp32 values. `next`: the block packed after it, or -1.
void pack_block(const GemmOperand& b, int64_t at, int64_t next, int64_t nn, int64_t kn,
                uint16_t* panel) {
  if (b.bf16)
    pack_panel_bf16_pairs(b.bf16 + at, size_t(b.ld), b.transposed, size_t(nn), size_t(kn),
                          next >= 0 ? b.bf16 + next : nullptr, panel);
  else
    pack_panel_bf16_pairs(b.data + at, size_t(b.ld), b.transposed, size_t(nn), size_t(kn),
                          next >= 0 ? b.data + next : nullptr, panel);
}

// Blocks of inputs in turn, each over every panel: op(X)'s block is packed (M × depth in bf16:
// 256 KB for 512 rows × 256, in L2) and read by every panel before the next block, instead of
// the whole of op(X) per panel (the head's dX, K = 65,536: 64 MB of bf16 through memory for
// each panel).
void block_product(ThreadPool& pool, Bf16ProductScratch& s, const GemmOperand& x, int64_t M,
                   int64_t N, int64_t K, const GemmOperand& b, float* c, int64_t ldc,
                   bool accumulate) {
  const int64_t depth = block_depth(K), ldxb = depth;
  if (s.xb.size() < size_t(M * ldxb)) s.xb.resize(size_t(M * ldxb));
  uint16_t* xb = s.xb.data();
  const int64_t nr = int64_t(kBf16PanelWidth);
  const int64_t threads = pool.size();
  const PanelTasks tasks(M, (N + nr - 1) / nr, threads);
  if (s.panels.size() < size_t(threads)) s.panels.resize(size_t(threads));
  for (int64_t k0 = 0; k0 < K; k0 += depth) {
    const int64_t kn = std::min(depth, K - k0);
    pool.parallel_for(M, 16, [&](int64_t m0, int64_t m1) {
      const float* src = x.transposed ? x.data + k0 * x.ld + m0 : x.data + m0 * x.ld + k0;
      pack_x_bf16(src, size_t(x.ld), x.transposed, size_t(m1 - m0), size_t(kn), xb + m0 * ldxb,
                  size_t(ldxb));
    });
    pool.parallel_parts(tasks.count, 1, [&](int part, int64_t task0, int64_t task1) {
      auto& owned = s.panels[size_t(part)];
      if (!owned) owned = hwy::AllocateAligned<uint16_t>(size_t(kMaxDepth * nr));
      uint16_t* panel = owned.get();
      for (int64_t task = task0; task < task1; ++task) {
        const int64_t p = tasks.panel(task), m0 = tasks.first_row(task);
        const int64_t rows = std::min(tasks.rows_per_part, M - m0);
        if (rows <= 0) continue;
        const int64_t n0 = p * nr, nn = std::min(nr, N - n0);
        // The panel this thread packs next (same inputs, the next outputs), when as wide:
        // its weights are prefetched meanwhile.
        const bool next_panel_mine = tasks.row_parts == 1 && task + 1 < task1;
        const int64_t next = next_panel_mine && n0 + 2 * nr <= N ? block_at(b, n0 + nr, k0) : -1;
        pack_block(b, block_at(b, n0, k0), next, nn, kn, panel);
        gemm_panel_bf16(xb + m0 * ldxb, size_t(ldxb), size_t(rows), panel, size_t(kn),
                        c + m0 * ldc + n0, size_t(ldc), size_t(nn), accumulate || k0 > 0);
      }
    });
  }
}

}  // namespace

void bf16_product(ThreadPool& pool, Bf16ProductScratch& s, const GemmOperand& x, int64_t M,
                  int64_t N, int64_t K, const GemmOperand& b, float* c, int64_t ldc,
                  bool accumulate) {
  // Many rows (the head's dW: M = vocabulary) go in blocks, each over every panel, so a block
  // of packed rows stays in L2 between panels and the packed copy stays small.
  for_each_row_block(M, [&](int64_t m0, int64_t rows) {
    GemmOperand block = x;
    block.data = x.transposed ? x.data + m0 : x.data + m0 * x.ld;
    block_product(pool, s, block, rows, N, K, b, c + m0 * ldc, ldc, accumulate);
  });
}

}  // namespace rwkv7::cpu
