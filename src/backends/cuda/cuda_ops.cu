// The device-op API (device_ops.hpp) as CUDA kernels + cuBLAS on one stream. Each kernel's
// reference twin is the same-named op of host_ops.cpp; tests/cuda compares them.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
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
__device__ __forceinline__ float act_f(Act f, float v) {
  switch (f) {
    case Act::Tanh:
      return tanhf(v);
    case Act::Sigmoid:
      return sigmoidf_(v);
    case Act::ReluSquare:
      return fmaxf(v, 0.f) * fmaxf(v, 0.f);
    default:
      return v;
  }
}
// x rounded to the product input type T and back (what cuBLAS sees).
template <class T>
__device__ __forceinline__ float round_f(float v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(__float2bfloat16_rn(v));
  else if constexpr (std::is_same_v<T, __half>)
    return __half2float(__float2half_rn(v));
  else
    return v;
}

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
    x[i] = act_f(f, x[i]);
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

// --- WKV-7: one block per (segment, head); Q consecutive threads own state row i (value index),
// each M = N/Q of its columns in registers, and combine S·a and y = S·r by warp shuffles.
// Sequential over the segment's rows: S = S·diag(w) + (S·a)·bᵀ + v·kᵀ, y = S·r.
// The state tile moves through shared memory with coalesced 16-byte accesses (rows padded to
// N+1 floats); the step vectors r, w, k, a, b, v of `stage` steps at a time are staged in shared
// memory with coalesced loads, so the serial loop waits on no global load.
// Dynamic shared memory: max(6·stage·N, N·(N+1)) floats. ---
constexpr int kStageFloats = 1536;  // per vector: 6 · 1536 · 4 B = 36 KB at most
// Q, threads per state row: 1 by default (fastest measured on the H200); 2 or 4 through
// RWKV7_WKV_LANES, for measuring.
int wkv_lanes() {
  static const int q = [] {
    const char* e = std::getenv("RWKV7_WKV_LANES");
    const int v = e ? std::atoi(e) : 1;
    return v == 2 || v == 4 ? v : 1;
  }();
  return q;
}

template <int N, int Q>
__global__ void __launch_bounds__(N* Q) wkv7_kernel(DevSegments s, WkvArgs p, int stage) {
  constexpr int M = N / Q;         // columns per thread (a multiple of 4)
  constexpr bool kTile = N <= 64;  // a 128-wide tile would not fit; those rows load directly
  static_assert(M % 4 == 0 && (N * N / 4) % (N * Q) == 0, "head size and lanes");
  extern __shared__ float4 sm4[];
  float* sm = reinterpret_cast<float*>(sm4);
  const int64_t seg = blockIdx.x / p.H, h = blockIdx.x % p.H, C = p.H * N;
  const int tid = threadIdx.x, i = tid / Q, j0 = (tid % Q) * M;  // row i, columns [j0, j0+M)
  float* S = p.state.base + int64_t(s.slot[seg]) * p.state.slot_stride + p.state.layer_offset +
             h * int64_t(N) * N;  // this head's [N, N]
  float st[M];
  if constexpr (kTile) {
    const float4* S4 = reinterpret_cast<const float4*>(S);
#pragma unroll
    for (int u = 0; u < N * N / 4 / (N * Q); ++u) {
      const int f = tid + u * N * Q, e = f * 4;
      const float4 v = S4[f];
      float* d = sm + (e / N) * (N + 1) + e % N;
      d[0] = v.x, d[1] = v.y, d[2] = v.z, d[3] = v.w;
    }
    __syncthreads();
#pragma unroll
    for (int m = 0; m < M; ++m) st[m] = sm[i * (N + 1) + j0 + m];
  } else {
#pragma unroll
    for (int m = 0; m < M; ++m) st[m] = S[i * N + j0 + m];
  }
  float *sr = sm, *sw = sm + stage * N, *sk = sm + 2 * stage * N, *sa = sm + 3 * stage * N,
        *sb = sm + 4 * stage * N, *sv = sm + 5 * stage * N;
  const int64_t row0 = s.row0[seg], rows = s.rows[seg];
  for (int64_t t0 = 0; t0 < rows; t0 += stage) {
    const int ts = int(rows - t0 < stage ? rows - t0 : stage);
    __syncthreads();  // the tile or the previous chunk has been read by every thread
    for (int e = tid; e < ts * N; e += N * Q) {
      const int64_t g = (row0 + t0 + e / N) * C + h * N + e % N;
      sr[e] = p.r[g];
      sw[e] = p.decay[g];
      sk[e] = p.k[g];
      sa[e] = p.a[g];
      sb[e] = p.b[g];
      sv[e] = p.v[g];
    }
    __syncthreads();
    for (int t = 0; t < ts; ++t) {
      const int o = t * N + j0;
      const float4* a4 = reinterpret_cast<const float4*>(sa + o);
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // four chains: this thread's part of S·a
#pragma unroll
      for (int u = 0; u < M / 4; ++u) {
        const float4 a = a4[u];
        s0 += st[4 * u] * a.x;
        s1 += st[4 * u + 1] * a.y;
        s2 += st[4 * u + 2] * a.z;
        s3 += st[4 * u + 3] * a.w;
      }
      float sai = (s0 + s1) + (s2 + s3);
#pragma unroll
      for (int off = 1; off < Q; off <<= 1) sai += __shfl_xor_sync(0xffffffffu, sai, off);
      const float v = sv[t * N + i];
      const float4 *w4 = reinterpret_cast<const float4*>(sw + o),
                   *b4 = reinterpret_cast<const float4*>(sb + o),
                   *k4 = reinterpret_cast<const float4*>(sk + o),
                   *r4 = reinterpret_cast<const float4*>(sr + o);
      float y0 = 0, y1 = 0, y2 = 0, y3 = 0;
#pragma unroll
      for (int u = 0; u < M / 4; ++u) {
        const float4 w = w4[u], b = b4[u], k = k4[u], r = r4[u];
        st[4 * u] = st[4 * u] * w.x + sai * b.x + v * k.x;
        st[4 * u + 1] = st[4 * u + 1] * w.y + sai * b.y + v * k.y;
        st[4 * u + 2] = st[4 * u + 2] * w.z + sai * b.z + v * k.z;
        st[4 * u + 3] = st[4 * u + 3] * w.w + sai * b.w + v * k.w;
        y0 += st[4 * u] * r.x;
        y1 += st[4 * u + 1] * r.y;
        y2 += st[4 * u + 2] * r.z;
        y3 += st[4 * u + 3] * r.w;
      }
      float y = (y0 + y1) + (y2 + y3);
#pragma unroll
      for (int off = 1; off < Q; off <<= 1) y += __shfl_xor_sync(0xffffffffu, y, off);
      if (j0 == 0) p.y[(row0 + t0 + t) * C + h * N + i] = y;
    }
  }
  if constexpr (kTile) {
    __syncthreads();  // every thread is done with the staged steps
#pragma unroll
    for (int m = 0; m < M; ++m) sm[i * (N + 1) + j0 + m] = st[m];
    __syncthreads();
    float4* S4 = reinterpret_cast<float4*>(S);
#pragma unroll
    for (int u = 0; u < N * N / 4 / (N * Q); ++u) {
      const int f = tid + u * N * Q, e = f * 4;
      const float* d = sm + (e / N) * (N + 1) + e % N;
      S4[f] = make_float4(d[0], d[1], d[2], d[3]);
    }
  } else {
#pragma unroll
    for (int m = 0; m < M; ++m) S[i * N + j0 + m] = st[m];
  }
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

// act(x) in the product input type T for several products at once (one launch per group):
// job j's inputs land at out + job[j].dst, one after another.
struct RoundJob {
  const float* x;
  size_t dst;  // first element in out; inputs are [dst, next job's dst)
  Act act;
};
struct RoundGroup {
  RoundJob job[8];
  int n;
  size_t total;
};

template <class T>
__global__ void round_many_kernel(RoundGroup g, T* out) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < g.total;
       i += size_t(gridDim.x) * blockDim.x) {
    int j = 0;
    while (j + 1 < g.n && i >= g.job[j + 1].dst) ++j;
    const float v = act_f(g.job[j].act, g.job[j].x[i - g.job[j].dst]);
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      out[i] = __float2bfloat16_rn(v);
    else if constexpr (std::is_same_v<T, __half>)
      out[i] = __float2half_rn(v);
    else
      out[i] = v;
  }
}

// --- grouped matrix-vector products for few rows (decode): one block per output row of one job,
// its 128 threads splitting the columns; each thread has four 16-byte weight loads in flight
// before it uses the first, then the inputs (R ≤ kGemvRows rows, activated and rounded on the way
// in) are read from L2. ---
constexpr int kGemvRows = 4, kGemvJobs = 8, kGemvThreads = 128, kGemvUnroll = 4;
struct GemvJob {
  const void* w;
  const float* x;
  float* y;
  int rows, cols, first_block;
  bool accumulate;
  Act act;
};
struct GemvGroup {
  GemvJob job[kGemvJobs];
  int n, R;
};

template <class T>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(GemvGroup g) {
  __shared__ float part[kGemvThreads / 32][kGemvRows];
  int j = 0;
  while (j + 1 < g.n && int(blockIdx.x) >= g.job[j + 1].first_block) ++j;
  const GemvJob& job = g.job[j];
  const int o = int(blockIdx.x) - job.first_block;  // the output row
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int cols = job.cols, R = g.R;
  const T* wr = static_cast<const T*>(job.w) + size_t(o) * cols;
  constexpr int kPass = kGemvThreads * 8;  // columns per block pass
  float acc[kGemvRows] = {};
  for (int base = tid * 8; base < cols; base += kGemvUnroll * kPass) {
    float4 raw[kGemvUnroll][sizeof(T) == 2 ? 1 : 2];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int c = base + u * kPass;
      if (c < cols) {
        raw[u][0] = *reinterpret_cast<const float4*>(wr + c);
        if constexpr (sizeof(T) == 4)
          raw[u][sizeof(T) == 2 ? 0 : 1] = *reinterpret_cast<const float4*>(wr + c + 4);
      }
    }
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int c = base + u * kPass;
      if (c >= cols) break;
      float wf[8];
      if constexpr (sizeof(T) == 2) {
        const T* h = reinterpret_cast<const T*>(&raw[u][0]);
#pragma unroll
        for (int e = 0; e < 8; ++e) wf[e] = to_f(h[e]);
      } else {
        const float* f = reinterpret_cast<const float*>(&raw[u][0]);
#pragma unroll
        for (int e = 0; e < 8; ++e) wf[e] = f[e];
      }
#pragma unroll
      for (int r = 0; r < kGemvRows; ++r) {
        if (r < R) {
          const float4 a = *reinterpret_cast<const float4*>(job.x + size_t(r) * cols + c);
          const float4 b = *reinterpret_cast<const float4*>(job.x + size_t(r) * cols + c + 4);
          const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r] += wf[e] * round_f<T>(act_f(job.act, xv[e]));
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kGemvRows; ++r) {
    float v = acc[r];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) part[warp][r] = v;
  }
  __syncthreads();
  if (tid < R) {
    float v = 0;
#pragma unroll
    for (int w = 0; w < kGemvThreads / 32; ++w) v += part[w][tid];
    float& y = job.y[size_t(tid) * job.rows + o];
    y = job.accumulate ? y + v : v;
  }
}

// --- LayerNorm + token shift + mixes + carry: one block per row, each thread keeps its E
// elements of the rows it needs in registers (one round of loads, then block reductions). ---
template <int E>
__device__ float2 reg_stats(const float (&v)[E], int64_t C, float eps, float* sh) {
  float s = 0;
#pragma unroll
  for (int e = 0; e < E; ++e) s += v[e];  // elements past C are zero
  const float mean = block_sum(s, sh) / float(C);
  float q = 0;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int64_t c = threadIdx.x + int64_t(e) * blockDim.x;
    const float d = c < C ? v[e] - mean : 0.f;
    q += d * d;
  }
  return make_float2(mean, rsqrtf(block_sum(q, sh) / float(C) + eps));
}

template <int E>
__global__ void ln_shift_kernel(DevSegments s, LnShiftArgs a) {
  __shared__ float sh[32];
  const int64_t r = blockIdx.x, C = a.C, T = blockDim.x;
  const int32_t p = s.prev[r];  // uniform in the block: so are the branches below
  const int64_t seg = p < 0 ? -1 - p : -1;
  const int64_t last = seg >= 0 ? s.last_row[seg] : -1;
  // The other row whose LayerNorm is needed: the previous one, or (on a segment's first row)
  // the segment's last row, whose LN becomes the carried state; none when that is this row.
  const float* xc = a.x + r * C;
  const float* xo = p >= 0 ? a.x + int64_t(p) * C : last != r ? a.x + last * C : nullptr;
  float vc[E], vo[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int64_t c = threadIdx.x + e * T;
    vc[e] = c < C ? xc[c] : 0.f;
    vo[e] = xo && c < C ? xo[c] : 0.f;
  }
  const float2 sc = reg_stats(vc, C, a.eps, sh);
  const float2 so = xo ? reg_stats(vo, C, a.eps, sh) : sc;
  // A segment's first row reads the carried state and then replaces it (each element read
  // before written, by the same thread; no other block touches this slot's carry).
  float* carry =
      seg >= 0 ? a.carry.base + int64_t(s.slot[seg]) * a.carry.slot_stride + a.carry.layer_offset
               : nullptr;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int64_t c = threadIdx.x + e * T;
    if (c < C) {
      const float w = a.ln_w[c], b = a.ln_b[c];
      const float xa = (vc[e] - sc.x) * sc.y * w + b;
      const float other = xo ? (vo[e] - so.x) * so.y * w + b : xa;
      const float d = (carry ? carry[c] : other) - xa;
      for (int m = 0; m < a.nmix; ++m) a.out[m][r * C + c] = xa + d * a.mix[m][c];
      if (carry) carry[c] = other;
    }
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
    CK(cudaMalloc(&scratch_, product_inputs * 4));  // fp32 when an activation is applied
    scratch_n_ = product_inputs;
  }

  void gemm_many(const GemmJob* jobs, int n, int64_t R) override {
    if (R == 0 || n == 0) return;
    if (n > kGemvJobs) throw Error("CUDA gemm_many: more than 8 products in a group");
    bool small = R <= kGemvRows && n <= kGemvJobs;
    for (int i = 0; i < n; ++i)
      small = small && jobs[i].w.cols % 8 == 0 && jobs[i].w.type == jobs[0].w.type;
    if (!small) return gemm_blas(jobs, n, R);
    GemvGroup g{};
    g.n = n, g.R = int(R);
    int blocks = 0;
    for (int i = 0; i < n; ++i) {
      const GemmJob& j = jobs[i];
      g.job[i] =
          GemvJob{j.w.data, j.x, j.y, int(j.w.rows), int(j.w.cols), blocks, j.accumulate, j.in_act};
      blocks += int(j.w.rows);  // one block per output row
    }
    switch (jobs[0].w.type) {
      case WType::F32:
        gemv_kernel<float><<<blocks, kGemvThreads, 0, stream_>>>(g);
        break;
      case WType::BF16:
        gemv_kernel<__nv_bfloat16><<<blocks, kGemvThreads, 0, stream_>>>(g);
        break;
      case WType::F16:
        gemv_kernel<__half><<<blocks, kGemvThreads, 0, stream_>>>(g);
        break;
    }
    LAUNCHED("gemv");
  }

  // One conversion launch for the inputs of every job that needs one (bf16/fp16 weights, or
  // an activation), then one cuBLAS call per job.
  void gemm_blas(const GemmJob* jobs, int n, int64_t R) {
    RoundGroup g{};
    const void* xin[kGemvJobs];
    for (int i = 0; i < n; ++i) {
      const GemmJob& j = jobs[i];
      if (i > 0 && j.w.type != jobs[0].w.type) throw Error("CUDA gemm_many: mixed weight types");
      xin[i] = j.x;
      if (j.w.type != WType::F32 || j.in_act != Act::None) {
        g.job[g.n++] = RoundJob{j.x, g.total, j.in_act};
        g.total += size_t(R * j.w.cols);
      }
    }
    const WType type = jobs[0].w.type;
    const size_t es = wtype_size(type);
    if (g.n > 0) {
      if (g.total > scratch_n_) reserve(g.total);
      const int blocks = blocks_for(g.total, 256);
      if (type == WType::BF16)
        round_many_kernel<<<blocks, 256, 0, stream_>>>(g, static_cast<__nv_bfloat16*>(scratch_));
      else if (type == WType::F16)
        round_many_kernel<<<blocks, 256, 0, stream_>>>(g, static_cast<__half*>(scratch_));
      else
        round_many_kernel<<<blocks, 256, 0, stream_>>>(g, static_cast<float*>(scratch_));
      LAUNCHED("round_many");
      for (int i = 0, k = 0; i < n; ++i)
        if (jobs[i].w.type != WType::F32 || jobs[i].in_act != Act::None)
          xin[i] = static_cast<const char*>(scratch_) + g.job[k++].dst * es;
    }
    const cudaDataType_t t = type == WType::BF16  ? CUDA_R_16BF
                             : type == WType::F16 ? CUDA_R_16F
                                                  : CUDA_R_32F;
    const float alpha = 1.0f;
    for (int i = 0; i < n; ++i) {
      const GemmJob& j = jobs[i];
      const float beta = j.accumulate ? 1.0f : 0.0f;
      // Row-major W [out, in] is column-major Wᵀ with ld = in; x [R, in] is column-major
      // [in, R]; y [R, out] is column-major [out, R]: y = op_T(W) · x.
      CK(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(j.w.rows), int(R), int(j.w.cols), &alpha,
                      j.w.data, t, int(j.w.cols), xin[i], t, int(j.w.cols), &beta, j.y, CUDA_R_32F,
                      int(j.w.rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
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

  void ln_shift_mix(const DevSegments& s, const LnShiftArgs& a) override {
    if (s.total_rows == 0) return;
    // about four elements per thread, up to 1024 threads; 8 per thread beyond C = 4096
    const int64_t T = std::clamp<int64_t>((a.C + 4 * 32 - 1) / (4 * 32) * 32, 32, 1024);
    const int64_t E = (a.C + T - 1) / T;
    const unsigned blocks = unsigned(s.total_rows);
    if (E <= 1)
      ln_shift_kernel<1><<<blocks, unsigned(T), 0, stream_>>>(s, a);
    else if (E <= 2)
      ln_shift_kernel<2><<<blocks, unsigned(T), 0, stream_>>>(s, a);
    else if (E <= 4)
      ln_shift_kernel<4><<<blocks, unsigned(T), 0, stream_>>>(s, a);
    else if (E <= 8)
      ln_shift_kernel<8><<<blocks, unsigned(T), 0, stream_>>>(s, a);
    else
      throw Error("CUDA ln_shift_mix: width " + std::to_string(a.C) + " over 8192");
    LAUNCHED("ln_shift_mix");
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
    switch (a.N) {
      case 16:
        return launch_wkv7<16>(s, a);
      case 32:
        return launch_wkv7<32>(s, a);
      case 64:
        return launch_wkv7<64>(s, a);
      case 128:
        return launch_wkv7<128>(s, a);
      default:
        throw Error("CUDA wkv7: head size " + std::to_string(a.N) + " not built (16/32/64/128)");
    }
  }
  template <int N>
  void launch_wkv7(const DevSegments& s, const WkvArgs& a) {
    const int64_t most = std::max<int64_t>(s.max_rows, 1);
    const int stage = int(std::min<int64_t>(kStageFloats / N, most));
    const size_t tile = N <= 64 ? size_t(N) * (N + 1) : 0;
    const size_t smem = std::max(size_t(6) * size_t(stage) * N, tile) * 4;
    const unsigned blocks = unsigned(s.count * a.H);
    switch (wkv_lanes()) {
      case 4:
        wkv7_kernel<N, 4><<<blocks, N * 4, smem, stream_>>>(s, a, stage);
        break;
      case 2:
        wkv7_kernel<N, 2><<<blocks, N * 2, smem, stream_>>>(s, a, stage);
        break;
      default:
        wkv7_kernel<N, 1><<<blocks, N, smem, stream_>>>(s, a, stage);
        break;
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
  void* scratch_ = nullptr;  // product inputs after act / rounding (up to 4 bytes each)
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
