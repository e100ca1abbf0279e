#pragma once
// The cpu backend's product in bf16 with fp32 accumulation on CPUs with AVX512_BF16
// (gemm_bf16_kernels.hpp): blocks of 256 inputs in turn; in each, op(X)'s block rounded and
// packed in pairs once (shared by the threads), then B's panels packed and multiplied, threads
// over panels (and rows when panels are few). Many rows go in blocks of rows.
#include <cstdint>
#include <vector>

#include "backends/backend.hpp"
#include "hwy/aligned_allocator.h"

namespace rwkv7 {
class ThreadPool;
}

namespace rwkv7::cpu {

// Buffers kept between calls: op(X)'s packed block (shared by the threads), one pair panel
// per pool part.
struct Bf16ProductScratch {
  std::vector<uint16_t> xb;
  std::vector<hwy::AlignedFreeUniquePtr<uint16_t[]>> panels;
};

// C [M, N] (+)= op(X) · op(B) in bf16 × bf16 → fp32 (GemmArgs' operand conventions). Needs
// bf16_dot_available(); K > 0.
void bf16_product(ThreadPool& pool, Bf16ProductScratch& scratch, const GemmOperand& x, int64_t M,
                  int64_t N, int64_t K, const GemmOperand& b, float* c, int64_t ldc,
                  bool accumulate);

}  // namespace rwkv7::cpu
