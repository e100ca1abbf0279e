// CPU backend: SIMD kernels (kernels.cpp) spread over a thread pool.
#include <algorithm>
#include <vector>

#include "backends/cpu/gemm_kernels.hpp"
#include "backends/cpu/gemm_train_kernels.hpp"
#include "backends/cpu/kernels.hpp"
#include "backends/cpu/quant_kernels.hpp"
#include "core/quant.hpp"
#include "core/thread_pool.hpp"
#include "ops/ops.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

constexpr int64_t kRowTile = 64;       // positions per pass over a weight row: x tile stays in L2
constexpr int64_t kGemmMinRows = 8;    // below this the products are memory-bound: dot rows
constexpr int64_t kGemmRowTile = 128;  // positions per packed-block pass: x tile stays in L2

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(ThreadPool* pool) : pool_(pool) {}
  std::string name() const override { return "cpu"; }

  void matmul(const MatmulArgs& a) const override {
    const Matrix& w = a.w;
    if (is_quantized(w.dtype)) return matmul_quantized(a);
    if (a.count >= kGemmMinRows) return matmul_gemm(a);
    if (a.count == 1 && (w.dtype == DType::BF16 || w.dtype == DType::F16)) return matvec_half(a);
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, w.cols));
    pool_->parallel_for(w.rows, grain, [&](int64_t begin, int64_t end) {
      std::vector<float> row(w.dtype == DType::F32 ? 0 : size_t(w.cols));
      for (int64_t t0 = 0; t0 < a.count; t0 += kRowTile) {
        const int64_t tn = std::min(kRowTile, a.count - t0);
        for (int64_t o = begin; o < end; ++o) {
          const float* wrow = widen_row(w, o, row.data());
          cpu::dot_rows(wrow, a.x + t0 * w.cols, size_t(w.cols), size_t(tn), a.y + t0 * w.rows + o,
                        size_t(w.rows));
        }
      }
    });
  }

  // Threads split the rows of C (4-row blocks) when there are enough, else its columns
  // (whole vectors), so each thread writes a disjoint part of C.
  void gemm_acc(const GemmAccArgs& g) const override {
    if (g.M <= 0 || g.N <= 0) return;
    const int64_t threads = pool_->size();
    if (g.M >= 16 * threads || g.N < 32 * threads) {
      const int64_t blocks = (g.M + 3) / 4;
      pool_->parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
        cpu::gemm_acc_tile(g.a, g.a_m, g.a_k, g.b, g.ldb, g.c, g.ldc, b0 * 4, std::min(g.M, b1 * 4),
                           0, g.N, g.K);
      });
    } else {
      const int64_t L = int64_t(cpu::gemm_acc_lanes());
      const int64_t panels = (g.N + L - 1) / L;
      pool_->parallel_for(panels, 1, [&](int64_t p0, int64_t p1) {
        cpu::gemm_acc_tile(g.a, g.a_m, g.a_k, g.b, g.ldb, g.c, g.ldc, 0, g.M, p0 * L,
                           std::min(g.N, p1 * L), g.K);
      });
    }
  }

  void wkv7(const Wkv7Args& p) const override {
    const int64_t C = p.H * p.N;
    pool_->parallel_for(p.H, 1, [&](int64_t h0, int64_t h1) {
      for (int64_t t = 0; t < p.T; ++t) {
        for (int64_t h = h0; h < h1; ++h) {
          const int64_t o = t * C + h * p.N;
          cpu::wkv7_head_step(p.state + h * p.N * p.N, p.r + o, p.decay + o, p.k + o, p.v + o,
                              p.a + o, p.b + o, size_t(p.N), p.y + o);
        }
      }
    });
  }

 private:
  // Prefill: groups of 3 weight rows (widened to fp32 once) against tiles of positions, with
  // 4×3 dot products in registers; threads take whole groups.
  void matmul_gemm(const MatmulArgs& a) const {
    const Matrix& w = a.w;
    constexpr int64_t G = 3;
    const int64_t groups = (w.rows + G - 1) / G;
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, w.cols));
    pool_->parallel_for(groups, grain, [&](int64_t g0, int64_t g1) {
      std::vector<float> rows(w.dtype == DType::F32 ? 0 : size_t(G * w.cols));
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t o0 = g * G, nw = std::min(G, w.rows - o0);
        const float* wr = static_cast<const float*>(w.data) + o0 * w.cols;
        if (w.dtype != DType::F32) {
          for (int64_t j = 0; j < nw; ++j) widen_row(w, o0 + j, rows.data() + j * w.cols);
          wr = rows.data();
        }
        for (int64_t t0 = 0; t0 < a.count; t0 += kGemmRowTile) {
          const int64_t tn = std::min(kGemmRowTile, a.count - t0);
          cpu::gemm_rows(wr, size_t(w.cols), size_t(nw), a.x + t0 * w.cols, size_t(w.cols),
                         size_t(tn), size_t(w.cols), a.y + t0 * w.rows + o0, size_t(w.rows));
        }
      }
    });
  }

  // Q8_0/Q4_0 weights: x is quantised to Q8_0 once per call (as ggml does), then each weight
  // row is unpacked to int8 + scales once and dotted with every position in integers.
  void matmul_quantized(const MatmulArgs& a) const {
    const Matrix& w = a.w;
    const int64_t n = w.cols, nb = n / kQuantBlock;
    const size_t rb = row_bytes(w.dtype, n);  // also checks n % 32 == 0
    std::vector<int8_t> xq(size_t(a.count * n));
    std::vector<float> xd(size_t(a.count * nb));
    pool_->parallel_for(a.count, 8, [&](int64_t t0, int64_t t1) {
      std::vector<unsigned char> blocks(row_bytes(DType::Q8_0, n));
      for (int64_t t = t0; t < t1; ++t) {
        quantize_row_q8_0(a.x + t * n, blocks.data(), n);
        unpack_row_i8(DType::Q8_0, blocks.data(), &xq[size_t(t * n)], &xd[size_t(t * nb)], n);
      }
    });
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n));
    if (a.count == 1 && w.dtype == DType::Q8_0) {  // decode: blocks read in place
      pool_->parallel_for(w.rows, grain, [&](int64_t begin, int64_t end) {
        for (int64_t o = begin; o < end; ++o) {
          a.y[o] = cpu::dot_q8_0_blocks(static_cast<const uint8_t*>(w.data) + size_t(o) * rb,
                                        xq.data(), xd.data(), size_t(nb));
        }
      });
      return;
    }
    pool_->parallel_for(w.rows, grain, [&](int64_t begin, int64_t end) {
      std::vector<int8_t> wq(static_cast<size_t>(n));
      std::vector<float> wd(static_cast<size_t>(nb));
      for (int64_t o = begin; o < end; ++o) {
        unpack_row_i8(w.dtype, static_cast<const unsigned char*>(w.data) + size_t(o) * rb,
                      wq.data(), wd.data(), n);
        for (int64_t t0 = 0; t0 < a.count; t0 += kRowTile) {
          const int64_t tn = std::min(kRowTile, a.count - t0);
          cpu::dot_rows_q8(wq.data(), wd.data(), &xq[size_t(t0 * n)], &xd[size_t(t0 * nb)],
                           size_t(nb), size_t(tn), a.y + t0 * w.rows + o, size_t(w.rows));
        }
      }
    });
  }

  // Decode with bf16/f16 weights: each row widened in registers inside the dot product.
  void matvec_half(const MatmulArgs& a) const {
    const Matrix& w = a.w;
    const auto* base = static_cast<const uint16_t*>(w.data);
    const bool bf16 = w.dtype == DType::BF16;
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, w.cols));
    pool_->parallel_for(w.rows, grain, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const uint16_t* row = base + o * w.cols;
        a.y[o] =
            bf16 ? cpu::dot_bf16(row, a.x, size_t(w.cols)) : cpu::dot_f16(row, a.x, size_t(w.cols));
      }
    });
  }

  static const float* widen_row(const Matrix& w, int64_t o, float* buf) {
    switch (w.dtype) {
      case DType::F32:
        return static_cast<const float*>(w.data) + o * w.cols;
      case DType::BF16:
        cpu::bf16_to_f32_row(static_cast<const uint16_t*>(w.data) + o * w.cols, buf,
                             size_t(w.cols));
        return buf;
      case DType::F16:
        cpu::f16_to_f32_row(static_cast<const uint16_t*>(w.data) + o * w.cols, buf, size_t(w.cols));
        return buf;
      default:
        throw Error("cpu backend: weights of dtype " + dtype_name(w.dtype) + " not supported");
    }
  }

  ThreadPool* pool_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(ThreadPool* pool) {
  return std::make_unique<CpuBackend>(pool);
}

}  // namespace rwkv7
