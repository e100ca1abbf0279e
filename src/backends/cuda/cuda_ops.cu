// The device-op API (device_ops.hpp) as CUDA kernels + cuBLAS on one stream. Each kernel's
// reference twin is the same-named op of host_ops.cpp; tests/cuda compares them.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "backends/cuda/device_ops.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::dev {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(e));
}
void check(cublasStatus_t e, const char* what) {
  if (e != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS: ") + what + ": " + cublasGetStatusString(e));
}
#define CK(x) check((x), #x)
#define LAUNCHED(name) check(cudaGetLastError(), name)

int blocks_for(size_t n, int threads) {
  return int(std::min<size_t>((n + size_t(threads) - 1) / size_t(threads), 65535u * 16u));
}

// --- reductions: every thread of the block gets the sum; blockDim a multiple of 32 ---
__device__ float block_sum(float v, float* sh /* [32] */) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int w = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float t = 0;
  const int nw = int(blockDim.x + 31) >> 5;
  for (int i = 0; i < nw; ++i) t += sh[i];
  return t;
}

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// --- LayerNorm of gathered rows: y[r] = LN(x[idx ? idx[r] : r]); also the embedding lookup ---
template <class T>
__global__ void layer_norm_kernel(const T* x, const int32_t* __restrict__ idx, int64_t C,
                                  const float* __restrict__ w, const float* __restrict__ b,
                                  float eps, float* y) {
  __shared__ float sh[32];
  const int64_t r = blockIdx.x;
  const T* xr = x + (idx ? int64_t(idx[r]) : r) * C;
  float s = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += to_f(xr[c]);
  const float mean = block_sum(s, sh) / float(C);
  float q = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = to_f(xr[c]) - mean;
    q += d * d;
  }
  const float inv = rsqrtf(block_sum(q, sh) / float(C) + eps);
  float* yr = y + r * C;  // may alias xr (same row, each element read before written)
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    yr[c] = (to_f(xr[c]) - mean) * inv * w[c] + b[c];
}

// --- token shift + mixes: one block per row ---
__global__ void shift_mix_kernel(DevSegments s, ShiftMixArgs a) {
  const int64_t r = blockIdx.x, C = a.C;
  const int32_t p = s.prev[r];
  const float* prev =
      p >= 0 ? a.x + int64_t(p) * C
             : a.carry.base + int64_t(s.slot[-1 - p]) * a.carry.slot_stride + a.carry.layer_offset;
  const float* cur = a.x + r * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float xc = cur[c], d = prev[c] - xc;
    for (int m = 0; m < a.nmix; ++m) a.out[m][r * C + c] = xc + d * a.mix[m][c];
  }
}

__global__ void store_rows_kernel(DevSegments s, const float* x, int64_t C, DevStateView carry) {
  const int64_t i = blockIdx.x;
  const float* src = x + int64_t(s.last_row[i]) * C;
  float* dst = carry.base + int64_t(s.slot[i]) * carry.slot_stride + carry.layer_offset;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
}

__global__ void activate_kernel(Act f, float* x, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    x[i] = f == Act::Tanh      ? tanhf(v)
           : f == Act::Sigmoid ? sigmoidf_(v)
                               : fmaxf(v, 0.f) * fmaxf(v, 0.f);
  }
}

// --- per (row, head): decay, a, value residual, kk, WKV inputs; blockDim = max(N, 32) ---
__global__ void wkv_prep_kernel(WkvPrepArgs p) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x / p.H, h = blockIdx.x % p.H, C = p.H * p.N;
  const int64_t j = threadIdx.x;
  const bool on = j < p.N;
  const int64_t c = h * p.N + j, e = row * C + c;
  float kk = 0, a = 0, k = 0;
  if (on) {
    const float e_half = 0.60653065971263342f;  // exp(-0.5)
    p.decay[e] = expf(-e_half * sigmoidf_(p.w0[c] + p.z_w[e]));
    a = sigmoidf_(p.a0[c] + p.z_a[e]);
    p.a[e] = a;
    if (p.z_v) {
      const float v = p.v[e];
      p.v[e] = v + (p.v_first[e] - v) * sigmoidf_(p.v0[c] + p.z_v[e]);
    }
    k = p.k[e];
    kk = k * p.k_k[c];
  }
  const float norm = sqrtf(block_sum(kk * kk, sh));
  if (on) {
    kk = kk / fmaxf(norm, 1e-12f);
    p.wa[e] = -kk;
    p.wb[e] = kk * a;
    p.k[e] = k * (1.0f + (a - 1.0f) * p.k_a[c]);
  }
}

// --- WKV-7: one block per (segment, head), thread i owns state row i (value index) in
// registers; the step's r, decay, k, a, b (key-indexed) are shared. Sequential over the
// segment's rows: S = S·diag(w) + (S·a)·bᵀ + v·kᵀ, y = S·r. ---
template <int N>
__global__ void __launch_bounds__(N) wkv7_kernel(DevSegments s, WkvArgs p) {
  __shared__ float sr[N], sw[N], sk[N], sa[N], sb[N];
  const int64_t seg = blockIdx.x / p.H, h = blockIdx.x % p.H, C = p.H * N;
  const int i = threadIdx.x;
  float* S = p.state.base + int64_t(s.slot[seg]) * p.state.slot_stride + p.state.layer_offset +
             (h * N + i) * int64_t(N);
  float st[N];
#pragma unroll
  for (int j = 0; j < N; ++j) st[j] = S[j];
  const int64_t row0 = s.row0[seg], rows = s.rows[seg];
  for (int64_t t = 0; t < rows; ++t) {
    const int64_t o = (row0 + t) * C + h * N;
    __syncthreads();  // the previous step's reads of the shared vectors are done
    sr[i] = p.r[o + i];
    sw[i] = p.decay[o + i];
    sk[i] = p.k[o + i];
    sa[i] = p.a[o + i];
    sb[i] = p.b[o + i];
    const float v = p.v[o + i];
    __syncthreads();
    float sa_i = 0;
#pragma unroll
    for (int j = 0; j < N; ++j) sa_i += st[j] * sa[j];
    float y = 0;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      st[j] = st[j] * sw[j] + sa_i * sb[j] + v * sk[j];
      y += st[j] * sr[j];
    }
    p.y[o + i] = y;
  }
#pragma unroll
  for (int j = 0; j < N; ++j) S[j] = st[j];
}

// --- GroupNorm per head + bonus (Σ r·k·r_k)·v + gate; block per (row, head),
// blockDim = max(N, 32) ---
__global__ void group_norm_bonus_kernel(GroupNormBonusArgs p) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x / p.H, h = blockIdx.x % p.H, C = p.H * p.N;
  const int64_t j = threadIdx.x;
  const bool on = j < p.N;
  const int64_t c = h * p.N + j, e = row * C + c;
  const float y = on ? p.y[e] : 0.f;
  const float mean = block_sum(y, sh) / float(p.N);
  const float d = on ? y - mean : 0.f;
  const float inv = rsqrtf(block_sum(d * d, sh) / float(p.N) + p.eps);
  const float bonus = block_sum(on ? p.r[e] * p.k[e] * p.r_k[c] : 0.f, sh);
  if (on) p.y[e] = (d * inv * p.ln_w[c] + p.ln_b[c] + bonus * p.v[e]) * p.g[e];
}

template <class T>
__global__ void round_kernel(const float* x, T* out, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      out[i] = __float2bfloat16_rn(x[i]);
    else
      out[i] = __float2half_rn(x[i]);
  }
}

int reduce_threads(int64_t N) { return N < 32 ? 32 : int((N + 31) / 32 * 32); }

class CudaOps final : public DeviceOps {
 public:
  CudaOps() {
    CK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CK(cublasCreate(&blas_));
    CK(cublasSetStream(blas_, stream_));
    CK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));  // no TF32: fp32 products stay fp32
    CK(cudaMalloc(&blas_ws_, kBlasWorkspace));  // fixed workspace: graph capture allocates none
    CK(cublasSetWorkspace(blas_, blas_ws_, kBlasWorkspace));
    CK(cudaEventCreate(&e0_));
    CK(cudaEventCreate(&e1_));
  }
  ~CudaOps() override {
    for (auto& g : graphs_) cudaGraphExecDestroy(g);
    cudaFree(scratch_);
    cudaFree(blas_ws_);
    cublasDestroy(blas_);
    cudaEventDestroy(e0_);
    cudaEventDestroy(e1_);
    cudaStreamDestroy(stream_);
  }
  std::string name() const override {
    cudaDeviceProp prop{};
    int dev = 0;
    cudaGetDevice(&dev);
    cudaGetDeviceProperties(&prop, dev);
    return std::string("cuda:") + prop.name;
  }
  bool on_device() const override { return true; }

  void* alloc(size_t bytes) override {
    void* p = nullptr;
    CK(cudaMalloc(&p, std::max<size_t>(bytes, 1)));
    return p;
  }
  void release(void* p) override {
    if (p) {
      cudaStreamSynchronize(stream_);
      cudaFree(p);
    }
  }
  void upload(void* dst, const void* host, size_t bytes) override {
    if (bytes) CK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
  }
  void download(void* host, const void* src, size_t bytes) override {
    if (bytes) CK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_));
    CK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void zero(void* p, size_t bytes) override {
    if (bytes) CK(cudaMemsetAsync(p, 0, bytes, stream_));
  }
  void sync() override { CK(cudaStreamSynchronize(stream_)); }
  void upload_as(WType t, void* dst, const float* host, size_t n) override {
    if (t == WType::F32) return upload(dst, host, n * 4);
    // Host-side rounding by CUDA's own conversions (round to nearest even, as torch does).
    if (t == WType::BF16) {
      std::vector<__nv_bfloat16> h(n);
      for (size_t i = 0; i < n; ++i) h[i] = __float2bfloat16_rn(host[i]);
      CK(cudaMemcpyAsync(dst, h.data(), n * 2, cudaMemcpyHostToDevice, stream_));
      CK(cudaStreamSynchronize(stream_));  // h dies on return
    } else {
      std::vector<__half> h(n);
      for (size_t i = 0; i < n; ++i) h[i] = __float2half_rn(host[i]);
      CK(cudaMemcpyAsync(dst, h.data(), n * 2, cudaMemcpyHostToDevice, stream_));
      CK(cudaStreamSynchronize(stream_));
    }
  }
  void reserve(size_t product_inputs) override {
    if (product_inputs <= scratch_n_) return;
    CK(cudaStreamSynchronize(stream_));
    cudaFree(scratch_);
    scratch_ = nullptr;
    CK(cudaMalloc(&scratch_, product_inputs * 2));
    scratch_n_ = product_inputs;
  }

  void gemm(const DevMatrix& w, const float* x, float* y, int64_t R, bool accumulate) override {
    if (R == 0) return;
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    // Row-major W [out, in] is column-major Wᵀ with ld = in; x [R, in] is column-major [in, R];
    // y [R, out] is column-major [out, R]: y = op_T(W) · x.
    const void* xin = x;
    cudaDataType_t t = CUDA_R_32F;
    if (w.type != WType::F32) {
      const size_t n = size_t(R * w.cols);
      if (n > scratch_n_) reserve(n);
      const int blocks = blocks_for(n, 256);
      if (w.type == WType::BF16) {
        round_kernel<<<blocks, 256, 0, stream_>>>(x, static_cast<__nv_bfloat16*>(scratch_), n);
        t = CUDA_R_16BF;
      } else {
        round_kernel<<<blocks, 256, 0, stream_>>>(x, static_cast<__half*>(scratch_), n);
        t = CUDA_R_16F;
      }
      LAUNCHED("round");
      xin = scratch_;
    }
    CK(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(w.rows), int(R), int(w.cols), &alpha,
                    w.data, t, int(w.cols), xin, t, int(w.cols), &beta, y, CUDA_R_32F, int(w.rows),
                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  void embed_ln(const DevMatrix& emb, const int32_t* tokens, int64_t R, const float* w,
                const float* b, float eps, float* x) override {
    if (R == 0) return;
    const int th = norm_threads(emb.cols);
    if (emb.type == WType::F32)
      layer_norm_kernel<<<R, th, 0, stream_>>>(static_cast<const float*>(emb.data), tokens,
                                               emb.cols, w, b, eps, x);
    else if (emb.type == WType::BF16)
      layer_norm_kernel<<<R, th, 0, stream_>>>(static_cast<const __nv_bfloat16*>(emb.data), tokens,
                                               emb.cols, w, b, eps, x);
    else
      layer_norm_kernel<<<R, th, 0, stream_>>>(static_cast<const __half*>(emb.data), tokens,
                                               emb.cols, w, b, eps, x);
    LAUNCHED("embed_ln");
  }

  void layer_norm(const float* x, const int32_t* rows, int64_t R, int64_t C, const float* w,
                  const float* b, float eps, float* y) override {
    if (R == 0) return;
    layer_norm_kernel<<<R, norm_threads(C), 0, stream_>>>(x, rows, C, w, b, eps, y);
    LAUNCHED("layer_norm");
  }

  void shift_mix(const DevSegments& s, const ShiftMixArgs& a) override {
    if (s.total_rows == 0) return;
    shift_mix_kernel<<<s.total_rows, norm_threads(a.C), 0, stream_>>>(s, a);
    LAUNCHED("shift_mix");
  }

  void store_last_rows(const DevSegments& s, const float* x, int64_t C,
                       DevStateView carry) override {
    if (s.count == 0) return;
    store_rows_kernel<<<s.count, norm_threads(C), 0, stream_>>>(s, x, C, carry);
    LAUNCHED("store_last_rows");
  }

  void activate(Act f, float* x, size_t n) override {
    if (n == 0) return;
    activate_kernel<<<blocks_for(n, 256), 256, 0, stream_>>>(f, x, n);
    LAUNCHED("activate");
  }

  void wkv_prep(const WkvPrepArgs& a) override {
    if (a.R == 0) return;
    wkv_prep_kernel<<<a.R * a.H, reduce_threads(a.N), 0, stream_>>>(a);
    LAUNCHED("wkv_prep");
  }

  void wkv7(const DevSegments& s, const WkvArgs& a) override {
    if (s.count == 0) return;
    const unsigned blocks = unsigned(s.count * a.H);
    switch (a.N) {
      case 64:
        wkv7_kernel<64><<<blocks, 64, 0, stream_>>>(s, a);
        break;
      case 32:
        wkv7_kernel<32><<<blocks, 32, 0, stream_>>>(s, a);
        break;
      case 16:
        wkv7_kernel<16><<<blocks, 16, 0, stream_>>>(s, a);
        break;
      case 128:
        wkv7_kernel<128><<<blocks, 128, 0, stream_>>>(s, a);
        break;
      default:
        throw Error("CUDA wkv7: head size " + std::to_string(a.N) + " not built (16/32/64/128)");
    }
    LAUNCHED("wkv7");
  }

  void group_norm_bonus(const GroupNormBonusArgs& a) override {
    if (a.R == 0) return;
    group_norm_bonus_kernel<<<a.R * a.H, reduce_threads(a.N), 0, stream_>>>(a);
    LAUNCHED("group_norm_bonus");
  }

  GraphId capture(const std::function<void()>& body) override {
    cudaGraph_t g = nullptr;
    CK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      body();
    } catch (...) {
      cudaStreamEndCapture(stream_, &g);
      if (g) cudaGraphDestroy(g);
      throw;
    }
    CK(cudaStreamEndCapture(stream_, &g));
    cudaGraphExec_t exec = nullptr;
    CK(cudaGraphInstantiate(&exec, g, 0));
    cudaGraphDestroy(g);
    graphs_.push_back(exec);
    return GraphId(graphs_.size() - 1);
  }
  void replay(GraphId g) override { CK(cudaGraphLaunch(graphs_.at(size_t(g)), stream_)); }
  double time_ms(const std::function<void()>& fn) override {
    CK(cudaEventRecord(e0_, stream_));
    fn();
    CK(cudaEventRecord(e1_, stream_));
    CK(cudaEventSynchronize(e1_));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0_, e1_));
    return ms;
  }

 private:
  static int norm_threads(int64_t C) { return C >= 1024 ? 256 : C >= 256 ? 128 : 64; }
  static constexpr size_t kBlasWorkspace = 32u << 20;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* blas_ws_ = nullptr;
  void* scratch_ = nullptr;  // rounded product inputs (2 bytes each)
  size_t scratch_n_ = 0;
  cudaEvent_t e0_ = nullptr, e1_ = nullptr;
  std::vector<cudaGraphExec_t> graphs_;
};

}  // namespace

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

std::unique_ptr<DeviceOps> make_cuda_ops() {
  if (!cuda_available()) throw Error("CUDA: no usable device");
  return std::make_unique<CudaOps>();
}

}  // namespace rwkv7::dev
