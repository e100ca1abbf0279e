// CPU backend: SIMD kernels (kernels.cpp) spread over a thread pool.
#include <algorithm>
#include <vector>

#include "backends/cpu/kernels.hpp"
#include "core/thread_pool.hpp"
#include "ops/ops.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

constexpr int64_t kRowTile = 64;  // positions per pass over a weight row: x tile stays in L2

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(ThreadPool* pool) : pool_(pool) {}
  std::string name() const override { return "cpu"; }

  void matmul(const MatmulArgs& a) const override {
    const Matrix& w = a.w;
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
