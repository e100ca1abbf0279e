#pragma once
// The Backend interface: hot ops of the RWKV-7 graph (products with stored weights, the WKV-7
// recurrence, element-wise maps) with their named-argument structs. Each backend implements
// it: a plain scalar reference (the test oracle) and fast ones. The ops and model layers above
// call it.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "backends/pointwise.hpp"
#include "backends/wkv7_train_args.hpp"
#include "core/dtype.hpp"
#include "core/function_ref.hpp"

namespace rwkv7 {

class ThreadPool;

// A weight matrix as stored: [rows = out, cols = in], row-major, in its file dtype.
struct Matrix {
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  // The same values in the cpu backend's panel layout, made once at load (prepare_cpu_panels),
  // in `dtype`: bf16 / f16 bits (uint16_t) or fp32 (float). The cpu backend's products then
  // read these instead of `data`.
  const void* cpu_panels = nullptr;
  // Quantised values in the cpu backend's integer panels, made at load: Q8_0 on CPUs with
  // AVX-512 VNNI (q8_panels_kernels.hpp), Q4_0 and Q4_K on CPUs with AVX2
  // (q4_panels_kernels.hpp, q4k_panels_kernels.hpp); `dtype` says which. Every product of
  // the cpu backend reads these.
  const uint8_t* cpu_int_panels = nullptr;
  // Outputs per panel of whichever panels above were made: they were laid out for the kernels
  // in use at load, and are refused (an error, not wrong products) if the ISA changed since.
  uint32_t cpu_panel_outputs = 0;
  // Or, for bf16 products (LoadOptions::precision "bf16" on CPUs with AVX512_BF16), the weight
  // rounded to bf16 in pair panels (cpu/pair_panels.hpp): every product of the cpu backend then
  // rounds its activations to bf16 and reads these.
  const uint16_t* cpu_pair_panels = nullptr;
  // With pair panels: x is multiplied as two bf16 terms, hi = bf16(x) and lo = bf16(x - hi)
  // (16 significant bits; for the small LoRA factors, whose results are sensitive to x).
  bool cpu_pairs_split_x = false;
  // An fp32 weight's values rounded to bf16 (nearest even), [rows, cols] bits, kept beside
  // them by mixed-precision training (TrainParams::bf16_weights): bf16-precision products read
  // these 2-byte values instead of rounding the 4-byte ones each time. Same products either way.
  const uint16_t* bf16_rows = nullptr;
};

// y[t, :] = W · x[t, :] for t in [0, count): x is [count, W.cols], y is [count, W.rows].
struct MatmulArgs {
  const Matrix& w;
  const float* x;
  float* y;
  int64_t count;
};

// The WKV-7 recurrence over T positions of one sequence (SPEC §3), heads of size N.
// Inputs are [T, H*N]; state is [H, N, N] with S[i][j] (i = value, j = key), updated in place.
//   S = S·diag(decay) + (S·a)·bᵀ + v·kᵀ ;  y = S·r      (a = -kk, b = kk*a in RWKV-7)
struct Wkv7Args {
  int64_t T, H, N;
  const float *r, *decay, *k, *v, *a, *b;
  float* state;
  float* y;
};

// One operand of a GemmArgs product, fp32, row-major with `ld` floats between rows. Read as
// stored, or transposed: the product reads it down its columns, so no transposed copy is made.
struct GemmOperand {
  const float* data = nullptr;
  int64_t ld = 0;
  bool transposed = false;
  // Optional, for B only (GemmArgs::b; ignored for A): the same values rounded to bf16
  // (nearest even), same layout and ld, which products in ProductPrecision::BF16 read instead
  // of rounding `data` (a weight's copy kept by mixed-precision training: half the bytes).
  // Same products either way.
  const uint16_t* bf16 = nullptr;
};

// C [M, N] = (accumulate ? C : 0) + op(A) · op(B), fp32, C rows ldc apart, where
//   op(A) [M, K] is A stored [M, K], or (A.transposed) Aᵀ with A stored [K, M];
//   op(B) [K, N] is B stored [K, N], or (B.transposed) Bᵀ with B stored [N, K].
// The training products: dX += dY·W (W [out, in] as stored: B plain), dW += dYᵀ·X (A
// transposed), the LoRA dX += dY·mᵀ (m [in, out]: B transposed, as matmul reads W).
struct GemmArgs {
  int64_t M = 0, N = 0, K = 0;
  GemmOperand a, b;
  float* c = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;
};

// How a backend multiplies fp32 operands (the products with fp32 weights, and gemm): in fp32,
// or (mixed-precision training) with both operands rounded to bf16 (nearest even) and the
// products summed in fp32, as PyTorch's bf16 autocast does. Weights stored in other dtypes
// are multiplied as they are either way.
enum class ProductPrecision { F32, BF16 };

// "fp32" or "bf16" (as users type it); anything else is an Error naming `what` and the value.
ProductPrecision product_precision(std::string_view name, std::string_view what);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual void matmul(const MatmulArgs& args) const = 0;
  // Several independent products (distinct outputs). Decoding one token runs a dozen small
  // products per layer; a backend with threads can run them in one parallel region.
  virtual void matmul_many(std::span<const MatmulArgs> list) const {
    for (const MatmulArgs& a : list) matmul(a);
  }
  // The general fp32 product (training); matmul is its inference case with a weight in any
  // dtype, op(B) = Wᵀ, no accumulation.
  virtual void gemm(const GemmArgs& args) const = 0;
  virtual void wkv7(const Wkv7Args& args) const = 0;
  // The recurrence of several sequences (distinct states and outputs): a decode batch runs one
  // per sequence per layer; a backend with threads can run them in one parallel region.
  virtual void wkv7_many(std::span<const Wkv7Args> list) const {
    for (const Wkv7Args& a : list) wkv7(a);
  }
  // The exact backward of the recurrence (training) for several sequences with distinct
  // gradient outputs: each item's gradients are ADDED to its non-null outputs, states
  // recomputed from checkpoints every `checkpoint` steps (Wkv7TrainArgs; its `pool` and
  // forward outputs are not used).
  virtual void wkv7_backward(std::span<const Wkv7TrainArgs<float>> list) const = 0;
  // The element-wise maps of this backend (scalar or SIMD).
  virtual const PointwiseOps& pointwise() const = 0;
  // Calls fn on disjoint ranges covering [0, rows), in parallel where the backend has threads:
  // for per-row work between products (norms, mixes, maps). fn must not call parallel_rows.
  virtual void parallel_rows(int64_t rows, FunctionRef<void(int64_t, int64_t)> fn) const = 0;
};

// Plain scalar C++ with double accumulators: the oracle.
std::unique_ptr<Backend> make_reference_backend(ProductPrecision precision = ProductPrecision::F32);
// SIMD (run-time dispatch) + threads from the pool (which must outlive the backend). The
// backend keeps scratch buffers between calls (so decoding allocates nothing): one instance
// serves one caller at a time, like the pool it runs on.
// With ProductPrecision::BF16 the products of fp32 operands run on AVX512_BF16 dot products
// where the CPU has them (and the ISA cap allows), else on the fp32 kernels over the rounded
// operands.
std::unique_ptr<Backend> make_cpu_backend(ThreadPool* pool,
                                          ProductPrecision precision = ProductPrecision::F32);

// Packs a bf16 or f16 weight into the cpu backend's panels (threads from the pool) and points
// m.cpu_panels at them, or a Q8_0 / Q4_0 / Q4_K weight into its integer panels (m.cpu_int_panels:
// Q8_0 on CPUs with AVX-512 VNNI, Q4_0 and Q4_K on CPUs with AVX2);
// returns their owner. An fp32 weight only with `data_is_mapped` (its panels are as large as the
// weight, so they replace file pages) or with `fp32_copy_ok` (a small matrix, e.g. a LoRA factor,
// whose panels the caller accepts as a second copy in memory). Other dtypes and CPUs: nullptr,
// m unchanged. With `data_is_mapped` (a view of a checkpoint file), the pages of m.data are then
// advised cold: the products no longer read them. With `bf16_pairs`, a bf16 or fp32 weight is
// packed into pair panels instead (m.cpu_pair_panels) where bf16_dot_available(); other dtypes
// as above.
std::shared_ptr<const void> prepare_cpu_panels(Matrix& m, ThreadPool& pool,
                                               bool data_is_mapped = false,
                                               bool fp32_copy_ok = false, bool bf16_pairs = false);

}  // namespace rwkv7
