// How the packed products (fp32: cpu_backend.cpp, bf16: bf16_product.cpp) split their work, so
// that both tile alike: blocks of C's rows, and panels of outputs shared out to the threads.
#pragma once

#include <algorithm>
#include <cstdint>

namespace rwkv7::cpu {

// Rows of C per pass over the panels when there are many (the head's dW: M = vocabulary):
// 1024 rows × 128 fp32 inputs (or × 256 bf16 ones) = 512 KB of op(X), inside L2, read by every
// panel before the next block (256 and 2048 rows measured slower: rwkv7_bench
// --benchmark_filter=Gemm).
inline constexpr int64_t kProductRowBlock = 1024;
// Rows of C a thread takes when it shares a panel with others.
inline constexpr int64_t kMinRowsPerPart = 48;

// fn(m0, rows) for consecutive blocks of kProductRowBlock rows of M when M is more than two
// blocks, else once for all M rows.
template <class Fn>
void for_each_row_block(int64_t M, Fn&& fn) {
  const int64_t block = M > 2 * kProductRowBlock ? kProductRowBlock : M;
  for (int64_t m0 = 0; m0 < M; m0 += block) fn(m0, std::min(block, M - m0));
}

// Inputs per block of the bf16 products (training's and the pair panels'): up to 1024 inputs in
// one or two equal blocks of at most 512 (a pair panel block of 64 KB, read from L2), so the
// output is read and written again at most once; deeper products in blocks of `deep`. Always
// even (a block's inputs are whole pairs); a function of K alone, so a position's sums do not
// depend on the other positions.
inline int64_t bf16_block_depth(int64_t K, int64_t deep) {
  constexpr int64_t kMaxDepth = 512;
  if (K > 2 * kMaxDepth) return deep;
  const int64_t blocks = (K + kMaxDepth - 1) / kMaxDepth;
  return ((K + blocks - 1) / blocks + 1) / 2 * 2;
}

// The tasks of one product: every panel of outputs, and when there are fewer panels than
// threads, each panel's rows of C in row_parts ranges (each range's thread packs its own copy
// of the panel). Task t is panel t / row_parts, rows from (t % row_parts) · rows_per_part.
struct PanelTasks {
  int64_t row_parts = 1, rows_per_part = 0, count = 0;

  PanelTasks(int64_t M, int64_t panels, int64_t threads) {
    if (panels < threads)
      row_parts =
          std::min((threads + panels - 1) / panels, std::max<int64_t>(1, M / kMinRowsPerPart));
    rows_per_part = (M + row_parts - 1) / row_parts;
    count = panels * row_parts;
  }
  int64_t panel(int64_t task) const { return task / row_parts; }
  int64_t first_row(int64_t task) const { return task % row_parts * rows_per_part; }
};

}  // namespace rwkv7::cpu
