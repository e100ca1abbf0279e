// The device-op API on host memory, in plain scalar C++: the reference twin of every CUDA
// kernel (cuda_ops.cu). "Device" pointers are host pointers; ops run immediately.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backends/cuda/device_ops.hpp"
#include "core/dtype.hpp"
#include "ops/backward_ops.hpp"
#include "ops/ops.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::dev {

size_t wtype_size(WType t) { return t == WType::F32 ? 4 : 2; }

namespace {

float load_w(WType t, const void* p, size_t i) {
  switch (t) {
    case WType::F32:
      return static_cast<const float*>(p)[i];
    case WType::BF16:
      return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case WType::F16:
      return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
  }
  return 0;
}

// x rounded to the product input type (what the CUDA path feeds cuBLAS).
float round_to(WType t, float x) {
  switch (t) {
    case WType::F32:
      return x;
    case WType::BF16:
      return bf16_to_f32(f32_to_bf16(x));
    case WType::F16:
      return f16_to_f32(f32_to_f16(x));
  }
  return x;
}

class HostOps final : public DeviceOps {
 public:
  std::string name() const override { return "host"; }
  bool on_device() const override { return false; }

  void* alloc(size_t bytes) override {
    void* p = std::malloc(std::max<size_t>(bytes, 1));
    if (!p) throw Error("host_ops: out of memory");
    return p;
  }
  void release(void* p) override { std::free(p); }
  void upload(void* dst, const void* host, size_t bytes) override {
    if (bytes) std::memcpy(dst, host, bytes);
  }
  void download(void* host, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(host, src, bytes);
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memmove(dst, src, bytes);
  }
  void zero(void* p, size_t bytes) override {
    if (bytes) std::memset(p, 0, bytes);
  }
  void sync() override {}
  void upload_as(WType t, void* dst, const float* host, size_t n) override {
    for (size_t i = 0; i < n; ++i) {
      switch (t) {
        case WType::F32:
          static_cast<float*>(dst)[i] = host[i];
          break;
        case WType::BF16:
          static_cast<uint16_t*>(dst)[i] = f32_to_bf16(host[i]);
          break;
        case WType::F16:
          static_cast<uint16_t*>(dst)[i] = f32_to_f16(host[i]);
          break;
      }
    }
  }
  void reserve(size_t) override {}

  void gemm_many(const GemmJob* jobs, int n, int64_t R) override {
    for (int i = 0; i < n; ++i) gemm_one(jobs[i], R);
  }

  void gemm_one(const GemmJob& j, int64_t R) {
    const DevMatrix& w = j.w;
    float* y = j.y;
    const bool accumulate = j.accumulate;
    std::vector<float> xr(j.x, j.x + R * w.cols), wr(size_t(w.cols));
    if (j.in_act != Act::None) activate(j.in_act, xr.data(), xr.size());
    for (size_t i = 0; i < xr.size(); ++i) xr[i] = round_to(w.type, xr[i]);
    for (int64_t o = 0; o < w.rows; ++o) {
      for (int64_t c = 0; c < w.cols; ++c)
        wr[size_t(c)] = load_w(w.type, w.data, size_t(o * w.cols + c));
      for (int64_t r = 0; r < R; ++r) {
        const float* xrow = xr.data() + r * w.cols;
        double acc = 0;
        for (int64_t c = 0; c < w.cols; ++c) acc += double(wr[size_t(c)]) * xrow[c];
        float& out = y[r * w.rows + o];
        out = accumulate ? out + float(acc) : float(acc);
      }
    }
  }

  void embed_ln(const DevMatrix& emb, const int32_t* tokens, int64_t R, const float* w,
                const float* b, float eps, float* x) override {
    const int64_t C = emb.cols;
    for (int64_t r = 0; r < R; ++r) {
      float* row = x + r * C;
      for (int64_t c = 0; c < C; ++c)
        row[c] = load_w(emb.type, emb.data, size_t(int64_t(tokens[r]) * C + c));
      train::norm_forward<float>({1, C, 1, eps, row, w, b, row, nullptr});
    }
  }

  void layer_norm(const float* x, const int32_t* rows, int64_t R, int64_t C, const float* w,
                  const float* b, float eps, float* y) override {
    for (int64_t r = 0; r < R; ++r)
      train::norm_forward<float>({1, C, 1, eps, x + (rows ? rows[r] : r) * C, w, b, y + r * C, nullptr});
  }

  void shift_mix(const DevSegments& s, const ShiftMixArgs& a) override {
    const int64_t C = a.C;
    for (int64_t r = 0; r < s.total_rows; ++r) {
      const int32_t p = s.prev[r];
      const float* prev =
          p >= 0 ? a.x + p * C
                 : a.carry.base + s.slot[-1 - p] * a.carry.slot_stride + a.carry.layer_offset;
      const float* cur = a.x + r * C;
      for (int m = 0; m < a.nmix; ++m)
        for (int64_t c = 0; c < C; ++c)
          a.out[m][r * C + c] = cur[c] + (prev[c] - cur[c]) * a.mix[m][c];
    }
  }

  void ln_shift_mix(const DevSegments& s, const LnShiftArgs& a) override {
    std::vector<float> xa(size_t(s.total_rows * a.C));
    layer_norm(a.x, nullptr, s.total_rows, a.C, a.ln_w, a.ln_b, a.eps, xa.data());
    ShiftMixArgs m;
    m.x = xa.data(), m.carry = a.carry, m.nmix = a.nmix, m.C = a.C;
    for (int i = 0; i < a.nmix; ++i) m.mix[i] = a.mix[i], m.out[i] = a.out[i];
    shift_mix(s, m);
    store_last_rows(s, xa.data(), a.C, a.carry);
  }

  void store_last_rows(const DevSegments& s, const float* x, int64_t C,
                       DevStateView carry) override {
    for (int64_t i = 0; i < s.count; ++i)
      std::memcpy(carry.base + s.slot[i] * carry.slot_stride + carry.layer_offset,
                  x + int64_t(s.last_row[i]) * C, size_t(C) * 4);
  }

  void activate(Act f, float* x, size_t n) override {
    const PointwiseOps& pw = scalar_pointwise_ops();
    if (f == Act::Tanh) pw.tanh(x, n);
    if (f == Act::Sigmoid) pw.sigmoid(x, n);
    if (f == Act::ReluSquare) pw.relu_square(x, n);
    // Act::None: nothing
  }

  void wkv_prep(const WkvPrepArgs& p) override {
    const int64_t C = p.H * p.N;
    const PointwiseOps& pw = scalar_pointwise_ops();
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t o = r * C;
      pw.decay(p.w0, p.z_w + o, p.decay + o, size_t(C));
      pw.sigmoid_bias(p.a0, p.z_a + o, p.a + o, size_t(C));
      if (p.z_v) pw.value_residual(p.v0, p.z_v + o, p.v_first + o, p.v + o, size_t(C));
      for (int64_t h = 0; h < p.H; ++h) {
        const int64_t e0 = o + h * p.N;
        double norm = 0;
        for (int64_t j = 0; j < p.N; ++j) {
          const float kk = p.k[e0 + j] * p.k_k[h * p.N + j];
          norm += double(kk) * kk;
        }
        const float inv = 1.0f / std::max(float(std::sqrt(norm)), 1e-12f);
        for (int64_t j = 0; j < p.N; ++j) {
          const int64_t e = e0 + j, c = h * p.N + j;
          const float kk = p.k[e] * p.k_k[c] * inv;
          p.wa[e] = -kk;
          p.wb[e] = kk * p.a[e];
          p.k[e] = p.k[e] * (1.0f + (p.a[e] - 1.0f) * p.k_a[c]);
        }
      }
    }
  }

  void wkv7(const DevSegments& s, const WkvArgs& a) override {
    const int64_t C = a.H * a.N;
    for (int64_t i = 0; i < s.count; ++i) {
      const int64_t o = int64_t(s.row0[i]) * C;
      ref_->wkv7(
          Wkv7Args{s.rows[i], a.H, a.N, a.r + o, a.decay + o, a.k + o, a.v + o, a.a + o, a.b + o,
                   a.state.base + s.slot[i] * a.state.slot_stride + a.state.layer_offset, a.y + o});
    }
  }

  void group_norm_bonus(const GroupNormBonusArgs& p) override {
    const int64_t C = p.H * p.N;
    for (int64_t r = 0; r < p.R; ++r) {
      float* y = p.y + r * C;
      train::norm_forward<float>({1, C, p.H, p.eps, y, p.ln_w, p.ln_b, y, nullptr});
      for (int64_t h = 0; h < p.H; ++h) {
        const int64_t o = r * C + h * p.N;
        float bonus = 0;
        for (int64_t j = 0; j < p.N; ++j) bonus += p.r[o + j] * p.k[o + j] * p.r_k[h * p.N + j];
        for (int64_t j = 0; j < p.N; ++j) y[h * p.N + j] += bonus * p.v[o + j];
      }
      for (int64_t j = 0; j < C; ++j) y[j] *= p.g[r * C + j];
    }
  }

  GraphId capture(const std::function<void()>& body) override {
    graphs_.push_back(body);
    return GraphId(graphs_.size() - 1);
  }
  void replay(GraphId g) override { graphs_.at(size_t(g))(); }
  double time_ms(const std::function<void()>& fn) override {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }

 private:
  std::unique_ptr<Backend> ref_ = make_reference_backend();
  std::vector<std::function<void()>> graphs_;
};

}  // namespace

std::unique_ptr<DeviceOps> make_host_ops() { return std::make_unique<HostOps>(); }

}  // namespace rwkv7::dev
