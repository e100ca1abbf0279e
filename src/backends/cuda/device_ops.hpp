#pragma once
// The device-op API of the CUDA backend, in plain C++ (no CUDA types): device memory is void* /
// float*, the stream and the cuBLAS handle live inside the implementation. Two implementations:
//   make_cuda_ops()  kernels + cuBLAS (cuda_ops.cu), or a stub that throws when CUDA is off;
//   make_host_ops()  the same ops on host memory in plain C++ (src/ops/cuda_host_ops.cpp):
//                    the reference twin of every kernel, used by the CPU tests and to check the
//                    kernels.
// The ops know nothing of the block order; src/model/cuda_model.cpp calls them in RWKV-7 order.
// All activations are fp32 [rows, channels] row-major; "slot" indexes a sequence's state in a
// state pool; all ops run in order on one stream (host_ops: immediately).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace rwkv7::dev {

// Storage type of a device weight matrix, which is also the input type of its products:
// F32 → fp32 products; BF16/F16 → x is rounded to that type, products accumulate in fp32.
enum class WType : uint8_t { F32, BF16, F16 };
size_t wtype_size(WType t);

// A weight matrix on the device: [rows = out, cols = in], row-major.
struct DevMatrix {
  WType type = WType::F32;
  int64_t rows = 0, cols = 0;
  const void* data = nullptr;
};

// Ragged batch of a pass: segment s covers rows [row0[s], row0[s] + rows[s]) and its state is
// pool slot slot[s]. prev[r] is the token-shift source of row r: r-1 inside a segment, or
// -1 - s for a segment's first row (take the carried state of segment s). All device int32.
struct DevSegments {
  int64_t count = 0;       // segments
  int64_t total_rows = 0;  // R
  int64_t max_rows = 0;    // longest segment
  const int32_t* row0 = nullptr;
  const int32_t* rows = nullptr;
  const int32_t* slot = nullptr;
  const int32_t* last_row = nullptr;  // row0 + rows - 1
  const int32_t* prev = nullptr;      // [R]
};

// State pool layout on the device: slot-major, then layer.
//   shift [slots, L, C] (att_shift and ffn_shift are two such arrays), wkv [slots, L, H, N, N]
struct DevStateView {
  float* base = nullptr;     // the array's start
  int64_t slot_stride = 0;   // floats between slots
  int64_t layer_offset = 0;  // floats from a slot's start to this layer's part
};

struct ShiftMixArgs {
  const float* x = nullptr;  // [R, C]
  DevStateView carry;        // shift state [C] per slot at this layer
  int nmix = 0;              // up to 6
  const float* mix[6] = {};  // [C] each
  float* out[6] = {};        // [R, C] each: out = x + (prev - x) * mix
  int64_t C = 0;
};

// Per (row, head): decay, in-context rate a, value residual, kk = normalize(k * k_k) and the
// WKV inputs wa = -kk, wb = kk * a, k *= 1 + (a - 1) * k_a. z_* are the LoRA outputs [R, C].
struct WkvPrepArgs {
  int64_t R = 0, H = 0, N = 0;
  const float *w0, *a0, *v0, *k_k, *k_a;  // [C]
  const float *z_w, *z_a, *z_v;           // z_v null in layer 0
  const float* v_first;                   // [R, C], null in layer 0
  float *decay, *a, *v, *k, *wa, *wb;     // [R, C]; a written (σ), v and k updated in place
};

// WKV-7 recurrence over every segment (SPEC §3): one block per (segment, head).
struct WkvArgs {
  int64_t H = 0, N = 0;
  const float *r, *decay, *k, *v, *a, *b;  // [R, H*N]
  DevStateView state;                      // [H, N, N] per slot at this layer
  float* y;                                // [R, H*N]
};

// y = GroupNorm(y) (H groups, eps) then y += (Σ r·k·r_k) · v per head, then y *= g.
struct GroupNormBonusArgs {
  int64_t R = 0, H = 0, N = 0;
  float eps = 64e-5f;
  const float *ln_w, *ln_b, *r_k;  // [C], [C], [H*N]
  const float *r, *k, *v, *g;      // [R, C]
  float* y;                        // [R, C] in place
};

enum class Act : uint8_t { None, Tanh, Sigmoid, ReluSquare };

// One product of a group: y[R, out] = act(x)[R, in] · Wᵀ (y += that when accumulate).
struct GemmJob {
  DevMatrix w;
  const float* x = nullptr;
  float* y = nullptr;
  bool accumulate = false;
  Act in_act = Act::None;  // applied to x on the way in (x itself is not changed)
};

// LayerNorm, token shift and mixes in one op: xa = LN(x) per row, out[m] = xa + (prev - xa) ·
// mix[m] with prev the previous row's xa or the carried state, then carry = the last row's xa.
struct LnShiftArgs {
  const float* x = nullptr;  // [R, C] residual stream
  const float *ln_w = nullptr, *ln_b = nullptr;
  float eps = 1e-5f;
  DevStateView carry;
  int nmix = 0;
  const float* mix[6] = {};
  float* out[6] = {};
  int64_t C = 0;
};

class DeviceOps {
 public:
  virtual ~DeviceOps() = default;
  virtual std::string name() const = 0;
  virtual bool on_device() const = 0;

  // --- memory (bytes) ---
  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  virtual void upload(void* dst, const void* host, size_t bytes) = 0;
  virtual void download(void* host, const void* src, size_t bytes) = 0;  // waits for the stream
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* p, size_t bytes) = 0;
  virtual void sync() = 0;
  // Converts n fp32 host values to `t` and uploads them (weights: once, at load).
  virtual void upload_as(WType t, void* dst, const float* host, size_t n) = 0;
  // Scratch for product inputs (activated and rounded to the weight type) of the widest group
  // of products, in elements: sized before a graph capture, which cannot allocate.
  virtual void reserve(size_t product_inputs) = 0;

  // --- ops ---
  // Independent products over the same R rows (distinct outputs); small R runs them all in one
  // launch (decode), large R one cuBLAS call each.
  virtual void gemm_many(const GemmJob* jobs, int n, int64_t R) = 0;
  // y[R, out] = x[R, in] · Wᵀ, or y += that when accumulate (residual adds).
  void gemm(const DevMatrix& w, const float* x, float* y, int64_t R, bool accumulate) {
    const GemmJob j{w, x, y, accumulate, Act::None};
    gemm_many(&j, 1, R);
  }
  // x[r] = LN(emb[tokens[r]]) over C channels (emb in its type, tokens device int32).
  virtual void embed_ln(const DevMatrix& emb, const int32_t* tokens, int64_t R, const float* w,
                        const float* b, float eps, float* x) = 0;
  // y[r] = LN(x[rows ? rows[r] : r]); rows (device int32) gathers, e.g. the rows with logits.
  virtual void layer_norm(const float* x, const int32_t* rows, int64_t R, int64_t C, const float* w,
                          const float* b, float eps, float* y) = 0;
  virtual void shift_mix(const DevSegments& s, const ShiftMixArgs& a) = 0;
  virtual void ln_shift_mix(const DevSegments& s, const LnShiftArgs& a) = 0;
  // carry[slot[s]] = x[last_row[s]] for every segment (after the shift has read it).
  virtual void store_last_rows(const DevSegments& s, const float* x, int64_t C,
                               DevStateView carry) = 0;
  virtual void activate(Act f, float* x, size_t n) = 0;
  virtual void wkv_prep(const WkvPrepArgs& a) = 0;
  virtual void wkv7(const DevSegments& s, const WkvArgs& a) = 0;
  virtual void group_norm_bonus(const GroupNormBonusArgs& a) = 0;

  // --- CUDA graphs: capture the ops body issues, replay them later (host: calls body) ---
  using GraphId = int;
  virtual GraphId capture(const std::function<void()>& body) = 0;
  virtual void replay(GraphId g) = 0;
  // Elapsed milliseconds of fn on the device (events around it; host: wall clock).
  virtual double time_ms(const std::function<void()>& fn) = 0;
};

// Kernels + cuBLAS on the current CUDA device; throws Error when built without CUDA or when no
// device is usable.
std::unique_ptr<DeviceOps> make_cuda_ops();
bool cuda_available();
// The reference twin on host memory.
std::unique_ptr<DeviceOps> make_host_ops();

}  // namespace rwkv7::dev
