// Highway multi-target element-wise maps (see pointwise_kernels.hpp). Tails shorter than a
// vector go through a padded buffer so every element takes the same vector formula.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/pointwise_kernels.cpp"
#include "backends/cpu/pointwise_kernels.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
// After highway.h: re-included once per target.
#include "hwy/contrib/math/math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using D = hn::ScalableTag<float>;
using V = hn::Vec<D>;

// Highway's Exp and Tanh map NaN to a number (their range checks compare false): a NaN input
// (a broken model) is passed through explicitly, as std::exp would.
HWY_INLINE V KeepNaN(V x, V y) { return hn::IfThenElse(hn::IsNaN(x), x, y); }

HWY_INLINE V Sigmoid(D d, V x) {
  // e^-x clamped below overflow: σ(x) < 1e-38 there anyway.
  const V e = hn::Exp(d, hn::Min(hn::Set(d, 88.0f), hn::Neg(x)));
  return KeepNaN(x, hn::Div(hn::Set(d, 1.0f), hn::Add(hn::Set(d, 1.0f), e)));
}

// Calls f(offset, lanes-wide pointers...) over [0, n): full vectors in place, the tail through
// padded copies of up to three inputs and one output.
template <class F>
HWY_INLINE void ForEach(size_t n, const float* a, const float* b, const float* c, float* out, F f) {
  const D d;
  const size_t L = hn::Lanes(d);
  size_t i = 0;
  for (; i + L <= n; i += L)
    f(a ? a + i : nullptr, b ? b + i : nullptr, c ? c + i : nullptr, out + i);
  if (i == n) return;
  HWY_ALIGN float ta[HWY_MAX_BYTES / 4] = {}, tb[HWY_MAX_BYTES / 4] = {},
                                     tc[HWY_MAX_BYTES / 4] = {}, to[HWY_MAX_BYTES / 4] = {};
  for (size_t j = i; j < n; ++j) {
    if (a) ta[j - i] = a[j];
    if (b) tb[j - i] = b[j];
    if (c) tc[j - i] = c[j];
    to[j - i] = out[j];
  }
  f(a ? ta : nullptr, b ? tb : nullptr, c ? tc : nullptr, to);
  for (size_t j = i; j < n; ++j) out[j] = to[j - i];
}

void SigmoidBias(const float* bias, const float* z, float* out, size_t n) {
  const D d;
  ForEach(n, bias, z, nullptr, out, [&](const float* b, const float* zz, const float*, float* o) {
    hn::StoreU(Sigmoid(d, hn::Add(hn::LoadU(d, b), hn::LoadU(d, zz))), d, o);
  });
}

void Decay(const float* w0, const float* z, float* out, size_t n) {
  const D d;
  const V neg_e_half = hn::Set(d, -0.60653065971263342f);  // -e^-0.5
  ForEach(n, w0, z, nullptr, out, [&](const float* w, const float* zz, const float*, float* o) {
    const V s = Sigmoid(d, hn::Add(hn::LoadU(d, w), hn::LoadU(d, zz)));
    hn::StoreU(KeepNaN(s, hn::Exp(d, hn::Mul(neg_e_half, s))), d, o);
  });
}

void ValueResidual(const float* v0, const float* z, const float* v_first, float* v, size_t n) {
  const D d;
  ForEach(n, v0, z, v_first, v, [&](const float* b, const float* zz, const float* vf, float* o) {
    const V mix = Sigmoid(d, hn::Add(hn::LoadU(d, b), hn::LoadU(d, zz)));
    const V cur = hn::LoadU(d, o);
    hn::StoreU(hn::MulAdd(hn::Sub(hn::LoadU(d, vf), cur), mix, cur), d, o);
  });
}

void TanhMap(float* x, size_t n) {
  const D d;
  ForEach(n, nullptr, nullptr, nullptr, x, [&](const float*, const float*, const float*, float* o) {
    const V x = hn::LoadU(d, o);
    hn::StoreU(KeepNaN(x, hn::Tanh(d, x)), d, o);
  });
}

void SigmoidMap(float* x, size_t n) {
  const D d;
  ForEach(n, nullptr, nullptr, nullptr, x, [&](const float*, const float*, const float*, float* o) {
    hn::StoreU(Sigmoid(d, hn::LoadU(d, o)), d, o);
  });
}

void ReluSquare(float* x, size_t n) {
  const D d;
  ForEach(n, nullptr, nullptr, nullptr, x, [&](const float*, const float*, const float*, float* o) {
    const V h = hn::Max(hn::Zero(d), hn::LoadU(d, o));  // x86 max: a NaN second operand stays
    hn::StoreU(hn::Mul(h, h), d, o);
  });
}

// A NaN anywhere gives NaN (x86 max would skip it), as the scalar version: the loss of a row
// with a NaN logit must come out NaN.
float MaxValue(const float* x, size_t n) {
  const D d;
  const size_t L = hn::Lanes(d);
  float m = x[0];
  bool nan = std::isnan(x[0]);
  size_t i = 0;
  if (n >= L) {
    V acc = hn::LoadU(d, x);
    auto bad = hn::IsNaN(acc);
    for (i = L; i + L <= n; i += L) {
      const V v = hn::LoadU(d, x + i);
      bad = hn::Or(bad, hn::IsNaN(v));
      acc = hn::Max(acc, v);
    }
    nan = nan || !hn::AllFalse(d, bad);
    m = hn::GetLane(hn::MaxOfLanes(d, acc));
  }
  for (; i < n; ++i) {
    nan = nan || std::isnan(x[i]);
    m = std::max(m, x[i]);
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}

// Float exps summed in float vectors over blocks of kBlock values, the blocks in double: a
// vocabulary of 65536 keeps the float sums short.
double ExpSum(const float* x, float shift, size_t n) {
  const D d;
  const size_t L = hn::Lanes(d);
  constexpr size_t kBlock = 1024;
  const V s = hn::Set(d, shift);
  double total = 0;
  size_t i = 0;
  while (i + L <= n) {
    V a0 = hn::Zero(d), a1 = hn::Zero(d);
    const size_t end = std::min(n, i + kBlock);
    for (; i + 2 * L <= end; i += 2 * L) {
      const V z0 = hn::Sub(hn::LoadU(d, x + i), s), z1 = hn::Sub(hn::LoadU(d, x + i + L), s);
      a0 = hn::Add(a0, KeepNaN(z0, hn::Exp(d, z0)));
      a1 = hn::Add(a1, KeepNaN(z1, hn::Exp(d, z1)));
    }
    for (; i + L <= end; i += L) {
      const V z = hn::Sub(hn::LoadU(d, x + i), s);
      a0 = hn::Add(a0, KeepNaN(z, hn::Exp(d, z)));
    }
    total += double(hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, a1))));
  }
  for (; i < n; ++i) total += std::exp(double(x[i]) - double(shift));
  return total;
}

void ExpScale(const float* x, float shift, float scale, float* out, size_t n) {
  const D d;
  const V s = hn::Set(d, shift), k = hn::Set(d, scale);
  ForEach(n, x, nullptr, nullptr, out, [&](const float* a, const float*, const float*, float* o) {
    const V z = hn::Sub(hn::LoadU(d, a), s);
    hn::StoreU(hn::Mul(KeepNaN(z, hn::Exp(d, z)), k), d, o);
  });
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(SigmoidBias);
HWY_EXPORT(Decay);
HWY_EXPORT(ValueResidual);
HWY_EXPORT(TanhMap);
HWY_EXPORT(SigmoidMap);
HWY_EXPORT(ReluSquare);
HWY_EXPORT(MaxValue);
HWY_EXPORT(ExpSum);
HWY_EXPORT(ExpScale);

namespace {
void sigmoid_bias(const float* bias, const float* z, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(SigmoidBias)(bias, z, out, n);
}
void decay(const float* w0, const float* z, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(Decay)(w0, z, out, n);
}
void value_residual(const float* v0, const float* z, const float* v_first, float* v, size_t n) {
  HWY_DYNAMIC_DISPATCH(ValueResidual)(v0, z, v_first, v, n);
}
void tanh_map(float* x, size_t n) { HWY_DYNAMIC_DISPATCH(TanhMap)(x, n); }
void sigmoid_map(float* x, size_t n) { HWY_DYNAMIC_DISPATCH(SigmoidMap)(x, n); }
void relu_square(float* x, size_t n) { HWY_DYNAMIC_DISPATCH(ReluSquare)(x, n); }
float max_value(const float* x, size_t n) { return HWY_DYNAMIC_DISPATCH(MaxValue)(x, n); }
double exp_sum(const float* x, float shift, size_t n) {
  return HWY_DYNAMIC_DISPATCH(ExpSum)(x, shift, n);
}
void exp_scale(const float* x, float shift, float scale, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(ExpScale)(x, shift, scale, out, n);
}
}  // namespace

const PointwiseOps& simd_pointwise_ops() {
  static const PointwiseOps ops{sigmoid_bias, decay,     value_residual, tanh_map, sigmoid_map,
                                relu_square,  max_value, exp_sum,        exp_scale};
  return ops;
}

}  // namespace rwkv7::cpu
#endif
