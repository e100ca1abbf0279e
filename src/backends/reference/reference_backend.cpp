// The oracle: straightforward loops, double accumulators, no threads, no SIMD.
#include <vector>

#include "backends/backend.hpp"
#include "backends/reference/wkv7_train_scalar.hpp"
#include "core/quant.hpp"

namespace rwkv7 {
namespace {

class ReferenceBackend final : public Backend {
 public:
  explicit ReferenceBackend(ProductPrecision precision) : precision_(precision) {}
  std::string name() const override { return "reference"; }
  const PointwiseOps& pointwise() const override { return scalar_pointwise_ops(); }
  void parallel_rows(int64_t rows, FunctionRef<void(int64_t, int64_t)> fn) const override {
    if (rows > 0) fn(0, rows);
  }

  void matmul(const MatmulArgs& a) const override {
    if (is_quantized(a.w.dtype)) return matmul_quantized(a);
    for (int64_t t = 0; t < a.count; ++t) {
      const float* x = a.x + t * a.w.cols;
      for (int64_t o = 0; o < a.w.rows; ++o) {
        double acc = 0;
        for (int64_t i = 0; i < a.w.cols; ++i) {
          const float w = load_as_f32(a.w.dtype, a.w.data, size_t(o * a.w.cols + i));
          acc += operand(w, a.w.dtype) * operand(x[i], a.w.dtype);
        }
        a.y[t * a.w.rows + o] = float(acc);
      }
    }
  }

  void gemm(const GemmArgs& g) const override {
    // op(X)(r, c) of an operand stored row-major, read through its transpose flag.
    auto at = [&](const GemmOperand& x, int64_t r, int64_t c) {
      return operand(x.transposed ? x.data[c * x.ld + r] : x.data[r * x.ld + c]);
    };
    for (int64_t m = 0; m < g.M; ++m) {
      for (int64_t n = 0; n < g.N; ++n) {
        double acc = g.accumulate ? double(g.c[m * g.ldc + n]) : 0.0;
        for (int64_t k = 0; k < g.K; ++k) acc += at(g.a, m, k) * at(g.b, k, n);
        g.c[m * g.ldc + n] = float(acc);
      }
    }
  }

  // A product's operand as this backend's precision reads it (exactly, in double); `stored`:
  // the weight's dtype (only products with fp32 weights change precision).
  double operand(float v, DType stored = DType::F32) const {
    if (precision_ == ProductPrecision::BF16 && stored == DType::F32)
      return double(bf16_to_f32(f32_to_bf16(v)));
    return double(v);
  }

  // Block-quantised weights: dequantise each row exactly, then the same double accumulation.
  void matmul_quantized(const MatmulArgs& a) const {
    const int64_t cols = a.w.cols;
    const size_t rb = row_bytes(a.w.dtype, cols);
    std::vector<float>& row = row_;
    row.resize(static_cast<size_t>(cols));
    for (int64_t o = 0; o < a.w.rows; ++o) {
      dequantize_row(a.w.dtype, static_cast<const unsigned char*>(a.w.data) + size_t(o) * rb,
                     row.data(), cols);
      for (int64_t t = 0; t < a.count; ++t) {
        const float* x = a.x + t * cols;
        double acc = 0;
        for (int64_t i = 0; i < cols; ++i) acc += double(row[size_t(i)]) * x[i];
        a.y[t * a.w.rows + o] = float(acc);
      }
    }
  }

  // In double: the inputs widened, the scalar recurrence, the gradients added back.
  void wkv7_backward(std::span<const Wkv7TrainArgs<float>> list) const override {
    for (const Wkv7TrainArgs<float>& p : list) {
      const size_t n = size_t(p.S * p.H * p.N), nn = size_t(p.H * p.N * p.N);
      auto wide = [](const float* x, size_t count) {
        return x ? std::vector<double>(x, x + count) : std::vector<double>();
      };
      const std::vector<double> r = wide(p.r, n), w = wide(p.decay, n), k = wide(p.k, n),
                                v = wide(p.v, n), a = wide(p.a, n), b = wide(p.b, n),
                                s0 = wide(p.s0, nn), dy = wide(p.dy, n), dsf = wide(p.ds_final, nn);
      std::vector<double> dr(n), dw(n), dk(n), dv(n), da(n), db(n), ds0(nn);
      Wkv7TrainArgs<double> q{p.S,      p.H,      p.N,      r.data(), w.data(),
                              k.data(), v.data(), a.data(), b.data(), p.s0 ? s0.data() : nullptr};
      q.dy = dy.data();
      q.ds_final = p.ds_final ? dsf.data() : nullptr;
      q.dr = dr.data(), q.ddecay = dw.data(), q.dk = dk.data(), q.dv = dv.data();
      q.da = da.data(), q.db = db.data(), q.ds0 = ds0.data();
      q.checkpoint = p.checkpoint;
      for (int64_t h = 0; h < p.H; ++h) wkv7_scalar::head_backward<double>(q, h);
      auto add = [](float* out, const std::vector<double>& g) {
        if (out)
          for (size_t i = 0; i < g.size(); ++i) out[i] += float(g[i]);
      };
      add(p.dr, dr), add(p.ddecay, dw), add(p.dk, dk), add(p.dv, dv);
      add(p.da, da), add(p.db, db), add(p.ds0, ds0);
    }
  }

  void wkv7(const Wkv7Args& p) const override {
    const int64_t N = p.N, C = p.H * p.N;
    std::vector<double>& sa = sa_;
    sa.resize(static_cast<size_t>(N));
    for (int64_t t = 0; t < p.T; ++t) {
      for (int64_t h = 0; h < p.H; ++h) {
        const int64_t o = t * C + h * N;
        float* S = p.state + h * N * N;
        for (int64_t i = 0; i < N; ++i) {
          double acc = 0;
          for (int64_t j = 0; j < N; ++j) acc += double(S[i * N + j]) * p.a[o + j];
          sa[size_t(i)] = acc;
        }
        for (int64_t i = 0; i < N; ++i) {
          double y = 0;
          for (int64_t j = 0; j < N; ++j) {
            double s = double(S[i * N + j]) * p.decay[o + j] + sa[size_t(i)] * p.b[o + j] +
                       double(p.v[o + i]) * p.k[o + j];
            S[i * N + j] = float(s);
            y += s * p.r[o + j];
          }
          p.y[o + i] = float(y);
        }
      }
    }
  }

 private:
  ProductPrecision precision_;
  // Kept between calls (one caller at a time, like every backend instance).
  mutable std::vector<float> row_;
  mutable std::vector<double> sa_;
};

}  // namespace

std::unique_ptr<Backend> make_reference_backend(ProductPrecision precision) {
  return std::make_unique<ReferenceBackend>(precision);
}

}  // namespace rwkv7
