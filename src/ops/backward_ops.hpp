#pragma once
// Training ops of the RWKV-7 graph: a forward that keeps what the backward needs, and the exact
// backward, side by side. Scalar reference code templated on the float type: float for
// training, double for the finite-difference tests. Explicitly instantiated for both.
//
// Conventions: activations are row-major [R, C], R = rows (positions of all sequences
// stacked). One args struct per op serves both directions: forward reads the inputs and writes
// the outputs; backward reads the inputs, the saved values and dy, and ACCUMULATES (+=) into
// every non-null gradient pointer (inputs used twice simply get both contributions; callers
// zero the buffers first).
#include <cstdint>

#include "backends/pointwise.hpp"
#include "backends/wkv7_train_args.hpp"

namespace rwkv7 {

class ThreadPool;

namespace train {

// emb[tokens[r]] → y[r]; backward scatter-adds dy into dtable.
template <class T>
struct EmbeddingArgs {
  int64_t R, C;
  const int32_t* tokens;  // [R], validated by the caller
  const T* table;         // [V, C]
  T* y;                   // [R, C]
  const T* dy = nullptr;
  T* dtable = nullptr;
};
template <class T>
void embedding_forward(const EmbeddingArgs<T>& a);
template <class T>
void embedding_backward(const EmbeddingArgs<T>& a);

// LayerNorm (groups = 1) or GroupNorm over `groups` consecutive groups of n/groups channels:
// y = (x - mean) / sqrt(var + eps) * w + b.
template <class T>
struct NormArgs {
  int64_t R, n, groups;
  T eps;
  const T *x, *w, *b;  // x [R, n]; w, b [n]
  T* y;                // [R, n] (forward)
  T* stats;            // [R, groups, 2]: mean, 1/std — written by forward (unless null), read
                       // by backward
  const T* dy = nullptr;
  T *dx = nullptr, *dw = nullptr, *db = nullptr;
};
template <class T>
void norm_forward(const NormArgs<T>& a);
template <class T>
void norm_backward(const NormArgs<T>& a);

// Token shift + mix over B sequences of S positions each (rows b*S .. b*S+S-1):
// y[t] = x[t] + (prev - x[t]) * mix, prev = x[t-1], or prev0[b] (zeros when null) at t = 0.
template <class T>
struct ShiftMixArgs {
  int64_t B, S, C;
  const T* x;      // [B*S, C]
  const T* prev0;  // [B, C] or null
  const T* mix;    // [C]
  T* y;            // [B*S, C]
  // Backward: dx, dprev0, dmix and dy must not overlap (the loops read them as restrict).
  const T* dy = nullptr;
  T *dx = nullptr, *dmix = nullptr, *dprev0 = nullptr;
};
template <class T>
void shift_mix_forward(const ShiftMixArgs<T>& a);
template <class T>
void shift_mix_backward(const ShiftMixArgs<T>& a);

// Dense product, plain loops (the model uses the backend for speed; this is the oracle).
// nn.Linear layout (w_in_out = false): w [out, in], y = x · wᵀ.
// LoRA layout (w_in_out = true):       w [in, out], y = x · w.
template <class T>
struct LinearArgs {
  int64_t R, in, out;
  bool w_in_out;
  const T* x;  // [R, in]
  const T* w;
  T* y;  // [R, out]
  const T* dy = nullptr;
  T *dx = nullptr, *dw = nullptr;
};
template <class T>
void linear_forward(const LinearArgs<T>& a);
template <class T>
void linear_backward(const LinearArgs<T>& a);

// Elementwise activations. Backward of Tanh / Sigmoid reads y, of ReluSq (relu(x)²) reads x.
enum class Act { Tanh, Sigmoid, ReluSq };
template <class T>
struct ActArgs {
  int64_t n;
  Act act;
  const T* x;
  T* y;
  const T* dy = nullptr;
  T* dx = nullptr;
};
template <class T>
void act_forward(const ActArgs<T>& a);
template <class T>
void act_backward(const ActArgs<T>& a);

// Per-channel bias + sigmoid, optionally turned into the decay:
//   kind Sigmoid: y = σ(bias + z)                  (in-context rate a = σ(a0 + …))
//   kind Decay:   y = exp(-e^-0.5 · σ(bias + z))  (decay from w0 + tanh(xw·w1)·w2)
enum class BiasSigmoidKind { Sigmoid, Decay };
template <class T>
struct BiasSigmoidArgs {
  int64_t R, C;
  BiasSigmoidKind kind;
  const T* bias;  // [C]
  const T* z;     // [R, C]
  T* y;           // [R, C]; backward reads it
  const T* dy = nullptr;
  T *dz = nullptr, *dbias = nullptr;
};
template <class T>
void bias_sigmoid_forward(const BiasSigmoidArgs<T>& a);
template <class T>
void bias_sigmoid_backward(const BiasSigmoidArgs<T>& a);

// Value residual (layers >= 1): y = v + (v_first - v) * σ(v0 + z).
template <class T>
struct ValueResidualArgs {
  int64_t R, C;
  const T *v, *v_first, *v0, *z;  // v, v_first, z [R, C]; v0 [C]
  T* y;
  const T* dy = nullptr;
  T *dv = nullptr, *dv_first = nullptr, *dv0 = nullptr, *dz = nullptr;
};
template <class T>
void value_residual_forward(const ValueResidualArgs<T>& a);
template <class T>
void value_residual_backward(const ValueResidualArgs<T>& a);

// The WKV inputs made from k and the rate a, per head of N channels:
//   kk = (k*k_k) / max(‖k*k_k‖, 1e-12)   wa = -kk   wb = kk*a
//   k_out = k * (1 + (a - 1) * k_a)
template <class T>
struct WkvInputsArgs {
  int64_t R, H, N;
  const T *k, *a;      // [R, H*N]
  const T *k_k, *k_a;  // [H*N]
  T *wa, *wb, *k_out;  // [R, H*N] (forward)
  const T *dwa = nullptr, *dwb = nullptr, *dk_out = nullptr;
  T *dk = nullptr, *da = nullptr, *dk_k = nullptr, *dk_a = nullptr;
};
template <class T>
void wkv_inputs_forward(const WkvInputsArgs<T>& a);
template <class T>
void wkv_inputs_backward(const WkvInputsArgs<T>& a);

// WKV-7 over one sequence (Wkv7TrainArgs, backends/wkv7_train_args.hpp): the scalar forward and
// exact backward, heads in parallel on `pool` when given.
template <class T>
void wkv7_train_forward(const Wkv7TrainArgs<T>& a);
template <class T>
void wkv7_train_backward(const Wkv7TrainArgs<T>& a);

// Bonus term, per head: y += (Σ_j r[j]·k[j]·r_k[h][j]) · v  (in place on y).
template <class T>
struct BonusArgs {
  int64_t R, H, N;
  const T *r, *k, *v, *r_k;  // r_k [H, N]
  T* y;
  const T* dy = nullptr;
  T *dr = nullptr, *dk = nullptr, *dv = nullptr, *dr_k = nullptr;
};
template <class T>
void bonus_forward(const BonusArgs<T>& a);
template <class T>
void bonus_backward(const BonusArgs<T>& a);

// Elementwise product (the output gate): y = p * q.
template <class T>
struct MulArgs {
  int64_t n;
  const T *p, *q;
  T* y;
  const T* dy = nullptr;
  T *dp = nullptr, *dq = nullptr;
};
template <class T>
void mul_forward(const MulArgs<T>& a);
template <class T>
void mul_backward(const MulArgs<T>& a);

// Mean cross-entropy over R positions and, in the same pass, its gradient (WRITTEN, not
// accumulated) into dlogits. With l2wrap, each position's arg-max logit gradient also gets
// 1e-4 / R · max_logit (the official L2Wrap; the loss value is unchanged).
template <class T>
struct CrossEntropyArgs {
  int64_t R, V;
  const T* logits;         // [R, V]
  const int32_t* targets;  // [R]
  T* dlogits;              // [R, V] or null (loss only); may be `logits` itself
  bool l2wrap = false;
  int64_t mean_over = 0;  // positions the mean divides by (0 = R): a block of a larger batch
  // [R, V] target distributions in place of `targets` (soft targets: Σ_v p_v·(lse − l_v) per
  // row, KL(p‖softmax(l)) + H(p)); null = the hard targets. Incompatible with l2wrap.
  const T* soft_targets = nullptr;
};
template <class T>
double cross_entropy(const CrossEntropyArgs<T>& a);  // returns Σ loss / mean_over
// The same in float with a backend's softmax pieces (SIMD exp on the cpu backend) for the hard
// targets; soft targets go to the scalar cross_entropy.
double cross_entropy(const CrossEntropyArgs<float>& a, const PointwiseOps& ops);

}  // namespace train
}  // namespace rwkv7
