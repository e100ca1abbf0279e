// Highway multi-target kernels: this file is compiled once per target ISA.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/kernels.cpp"
#include "backends/cpu/kernels.hpp"

#include "core/dtype.hpp"
#include "hwy/aligned_allocator.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Four rows of x share each load of w (register blocking); tails handled by a scalar loop.
void DotRows(const float* w, const float* x, size_t n, size_t rows, float* out, size_t out_stride) {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d);
  size_t j = 0;
  for (; j + 4 <= rows; j += 4) {
    const float* x0 = x + j * n;
    const float* x1 = x0 + n;
    const float* x2 = x1 + n;
    const float* x3 = x2 + n;
    auto s0 = hn::Zero(d), s1 = hn::Zero(d), s2 = hn::Zero(d), s3 = hn::Zero(d);
    size_t i = 0;
    for (; i + L <= n; i += L) {
      const auto wv = hn::LoadU(d, w + i);
      s0 = hn::MulAdd(wv, hn::LoadU(d, x0 + i), s0);
      s1 = hn::MulAdd(wv, hn::LoadU(d, x1 + i), s1);
      s2 = hn::MulAdd(wv, hn::LoadU(d, x2 + i), s2);
      s3 = hn::MulAdd(wv, hn::LoadU(d, x3 + i), s3);
    }
    float r0 = hn::GetLane(hn::SumOfLanes(d, s0)), r1 = hn::GetLane(hn::SumOfLanes(d, s1));
    float r2 = hn::GetLane(hn::SumOfLanes(d, s2)), r3 = hn::GetLane(hn::SumOfLanes(d, s3));
    for (; i < n; ++i) {
      r0 += w[i] * x0[i];
      r1 += w[i] * x1[i];
      r2 += w[i] * x2[i];
      r3 += w[i] * x3[i];
    }
    out[j * out_stride] = r0;
    out[(j + 1) * out_stride] = r1;
    out[(j + 2) * out_stride] = r2;
    out[(j + 3) * out_stride] = r3;
  }
  for (; j < rows; ++j) {
    const float* x0 = x + j * n;
    auto s0 = hn::Zero(d), s1 = hn::Zero(d);
    size_t i = 0;
    for (; i + 2 * L <= n; i += 2 * L) {
      s0 = hn::MulAdd(hn::LoadU(d, w + i), hn::LoadU(d, x0 + i), s0);
      s1 = hn::MulAdd(hn::LoadU(d, w + i + L), hn::LoadU(d, x0 + i + L), s1);
    }
    float r0 = hn::GetLane(hn::SumOfLanes(d, hn::Add(s0, s1)));
    for (; i < n; ++i) r0 += w[i] * x0[i];
    out[j * out_stride] = r0;
  }
}

void Bf16ToF32Row(const uint16_t* in, float* out, size_t n) {
  const hn::ScalableTag<uint32_t> du;
  const hn::Rebind<uint16_t, decltype(du)> d16;
  const hn::RebindToFloat<decltype(du)> df;
  const size_t L = hn::Lanes(du);
  size_t i = 0;
  for (; i + L <= n; i += L) {
    const auto wide = hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, in + i)));
    hn::StoreU(hn::BitCast(df, wide), df, out + i);
  }
  for (; i < n; ++i) {
    uint32_t bits = uint32_t(in[i]) << 16;
    __builtin_memcpy(out + i, &bits, 4);
  }
}

void F16ToF32Row(const uint16_t* in, float* out, size_t n) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> dh;
  const size_t L = hn::Lanes(df);
  size_t i = 0;
  const auto* h = reinterpret_cast<const hwy::float16_t*>(in);
  for (; i + L <= n; i += L) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, h + i)), df, out + i);
  for (; i < n; ++i) out[i] = rwkv7::f16_to_f32(in[i]);
}

// One row of bf16 / f16 weights dotted with x, widened in registers (decode: no row buffer).
float DotBf16(const uint16_t* w, const float* x, size_t n) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::Rebind<uint16_t, decltype(du)> d16;
  const size_t L = hn::Lanes(df);
  auto s0 = hn::Zero(df), s1 = hn::Zero(df);
  size_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    const auto w0 = hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, w + i))));
    const auto w1 =
        hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, w + i + L))));
    s0 = hn::MulAdd(w0, hn::LoadU(df, x + i), s0);
    s1 = hn::MulAdd(w1, hn::LoadU(df, x + i + L), s1);
  }
  float r = hn::GetLane(hn::SumOfLanes(df, hn::Add(s0, s1)));
  for (; i < n; ++i) r += rwkv7::bf16_to_f32(w[i]) * x[i];
  return r;
}

float DotF16(const uint16_t* w, const float* x, size_t n) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> dh;
  const size_t L = hn::Lanes(df);
  const auto* h = reinterpret_cast<const hwy::float16_t*>(w);
  auto s0 = hn::Zero(df), s1 = hn::Zero(df);
  size_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    s0 = hn::MulAdd(hn::PromoteTo(df, hn::LoadU(dh, h + i)), hn::LoadU(df, x + i), s0);
    s1 = hn::MulAdd(hn::PromoteTo(df, hn::LoadU(dh, h + i + L)), hn::LoadU(df, x + i + L), s1);
  }
  float r = hn::GetLane(hn::SumOfLanes(df, hn::Add(s0, s1)));
  for (; i < n; ++i) r += rwkv7::f16_to_f32(w[i]) * x[i];
  return r;
}

void Wkv7HeadStep(float* S, const float* r, const float* decay, const float* k, const float* v,
                  const float* a, const float* b, size_t N, float* y) {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d);
  for (size_t i = 0; i < N; ++i) {
    float* row = S + i * N;
    size_t j = 0;
    auto acc = hn::Zero(d);
    for (; j + L <= N; j += L) acc = hn::MulAdd(hn::LoadU(d, row + j), hn::LoadU(d, a + j), acc);
    float sa = hn::GetLane(hn::SumOfLanes(d, acc));
    for (; j < N; ++j) sa += row[j] * a[j];
    const auto vsa = hn::Set(d, sa), vv = hn::Set(d, v[i]);
    auto yacc = hn::Zero(d);
    j = 0;
    for (; j + L <= N; j += L) {
      auto s = hn::Mul(hn::LoadU(d, row + j), hn::LoadU(d, decay + j));
      s = hn::MulAdd(vsa, hn::LoadU(d, b + j), s);
      s = hn::MulAdd(vv, hn::LoadU(d, k + j), s);
      hn::StoreU(s, d, row + j);
      yacc = hn::MulAdd(s, hn::LoadU(d, r + j), yacc);
    }
    float yi = hn::GetLane(hn::SumOfLanes(d, yacc));
    for (; j < N; ++j) {
      float s = row[j] * decay[j] + sa * b[j] + v[i] * k[j];
      row[j] = s;
      yi += s * r[j];
    }
    y[i] = yi;
  }
}

// T steps of one head with the state held transposed in a local buffer, St[j][i] = S[i][j]
// (j = key, i = value), so every step is broadcast-FMAs over vectors of values with no
// horizontal sums: sa = Σ_j a_j St[j], St[j] = St[j]·w_j + b_j·sa + k_j·v, y = Σ_j r_j St[j].
// Rows are padded to whole vectors (padding stays zero). Inputs of step t are at t·stride.
// Returns false (nothing done) when a row needs more than kMaxVecs vectors.
constexpr size_t kMaxVecs = 8;

template <size_t NV>
HWY_INLINE void Wkv7SeqFixed(float* St, size_t Np, const float* r, const float* w, const float* k,
                             const float* v, const float* a, const float* b, size_t N, size_t T,
                             size_t stride, float* y) {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d);
  using V = hn::Vec<decltype(d)>;
  HWY_ALIGN float vpad[kMaxVecs * HWY_MAX_BYTES / sizeof(float)] = {};
  HWY_ALIGN float ypad[kMaxVecs * HWY_MAX_BYTES / sizeof(float)] = {};
  for (size_t t = 0; t < T; ++t) {
    const size_t o = t * stride;
    for (size_t i = 0; i < N; ++i) vpad[i] = v[o + i];
    // Two accumulator sets (even / odd j) halve the FMA dependency chains.
    V sa0[NV], sa1[NV];
    for (size_t q = 0; q < NV; ++q) sa0[q] = sa1[q] = hn::Zero(d);
    size_t j = 0;
    for (; j + 2 <= N; j += 2) {
      const V a0 = hn::Set(d, a[o + j]), a1 = hn::Set(d, a[o + j + 1]);
      for (size_t q = 0; q < NV; ++q) {
        sa0[q] = hn::MulAdd(a0, hn::Load(d, St + j * Np + q * L), sa0[q]);
        sa1[q] = hn::MulAdd(a1, hn::Load(d, St + (j + 1) * Np + q * L), sa1[q]);
      }
    }
    if (j < N) {
      const V a0 = hn::Set(d, a[o + j]);
      for (size_t q = 0; q < NV; ++q)
        sa0[q] = hn::MulAdd(a0, hn::Load(d, St + j * Np + q * L), sa0[q]);
    }
    V sa[NV], vv[NV], y0[NV], y1[NV];
    for (size_t q = 0; q < NV; ++q) {
      sa[q] = hn::Add(sa0[q], sa1[q]);
      vv[q] = hn::Load(d, vpad + q * L);
      y0[q] = y1[q] = hn::Zero(d);
    }
    for (j = 0; j < N; ++j) {
      const V wj = hn::Set(d, w[o + j]), bj = hn::Set(d, b[o + j]), kj = hn::Set(d, k[o + j]),
              rj = hn::Set(d, r[o + j]);
      float* row = St + j * Np;
      for (size_t q = 0; q < NV; ++q) {
        V s = hn::Mul(hn::Load(d, row + q * L), wj);
        s = hn::MulAdd(bj, sa[q], s);
        s = hn::MulAdd(kj, vv[q], s);
        hn::Store(s, d, row + q * L);
        if (j & 1) {
          y1[q] = hn::MulAdd(rj, s, y1[q]);
        } else {
          y0[q] = hn::MulAdd(rj, s, y0[q]);
        }
      }
    }
    for (size_t q = 0; q < NV; ++q) hn::Store(hn::Add(y0[q], y1[q]), d, ypad + q * L);
    for (size_t i = 0; i < N; ++i) y[o + i] = ypad[i];
  }
}

bool Wkv7HeadSeq(float* S, const float* r, const float* decay, const float* k, const float* v,
                 const float* a, const float* b, size_t N, size_t T, size_t stride, float* y) {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d);
  const size_t nv = (N + L - 1) / L, Np = nv * L;
  if (nv > kMaxVecs) return false;
  auto St = hwy::AllocateAligned<float>(N * Np);
  for (size_t j = 0; j < N; ++j) {
    for (size_t i = 0; i < N; ++i) St[j * Np + i] = S[i * N + j];
    for (size_t i = N; i < Np; ++i) St[j * Np + i] = 0.0f;
  }
  switch (nv) {
#define RWKV7_WKV_CASE(n)                                                 \
  case n:                                                                 \
    Wkv7SeqFixed<n>(St.get(), Np, r, decay, k, v, a, b, N, T, stride, y); \
    break;
    RWKV7_WKV_CASE(1)
    RWKV7_WKV_CASE(2)
    RWKV7_WKV_CASE(3)
    RWKV7_WKV_CASE(4)
    RWKV7_WKV_CASE(5)
    RWKV7_WKV_CASE(6)
    RWKV7_WKV_CASE(7)
    RWKV7_WKV_CASE(8)
#undef RWKV7_WKV_CASE
  }
  for (size_t i = 0; i < N; ++i)
    for (size_t j = 0; j < N; ++j) S[i * N + j] = St[j * Np + i];
  return true;
}

// Twelve independent FMA chains in registers: the fp32 FMA limit. The chains start from
// different values: identical chains are one value, and GCC kept one of them, so the loop timed
// one FMA's latency and counted ten (a quarter above the true limit on Zen 3: 257 vs 205
// GFLOP/s for 2 threads). Twelve covers two FMA units of latency up to 6 cycles. Returns the
// FLOPs done; *sink gets the sum of the chains' lane 0.
double FmaPeak(int64_t iters, float* sink) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  constexpr int kChains = 12;
  V a[kChains];
  for (int j = 0; j < kChains; ++j) a[j] = hn::Set(d, fma_peak_start(j));
  const V m = hn::Set(d, kFmaPeakScale), c = hn::Set(d, kFmaPeakShift);
  for (int64_t i = 0; i < iters; ++i)
    for (int j = 0; j < kChains; ++j) a[j] = hn::MulAdd(a[j], m, c);
  float total = 0;
  for (int j = 0; j < kChains; ++j) total += hn::GetLane(a[j]);
  *sink += total;
  return double(iters) * kChains * 2 * double(hn::Lanes(d));
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(DotRows);
HWY_EXPORT(Bf16ToF32Row);
HWY_EXPORT(F16ToF32Row);
HWY_EXPORT(Wkv7HeadStep);
HWY_EXPORT(Wkv7HeadSeq);
HWY_EXPORT(FmaPeak);
HWY_EXPORT(DotBf16);
HWY_EXPORT(DotF16);

float dot_bf16(const uint16_t* w, const float* x, size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotBf16)(w, x, n);
}
float dot_f16(const uint16_t* w, const float* x, size_t n) {
  return HWY_DYNAMIC_DISPATCH(DotF16)(w, x, n);
}

double fma_peak(int64_t iters, float* sink) { return HWY_DYNAMIC_DISPATCH(FmaPeak)(iters, sink); }

void dot_rows(const float* w, const float* x, size_t n, size_t rows, float* out,
              size_t out_stride) {
  HWY_DYNAMIC_DISPATCH(DotRows)(w, x, n, rows, out, out_stride);
}
void bf16_to_f32_row(const uint16_t* in, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(Bf16ToF32Row)(in, out, n);
}
void f16_to_f32_row(const uint16_t* in, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(F16ToF32Row)(in, out, n);
}
bool wkv7_head_seq(float* S, const float* r, const float* decay, const float* k, const float* v,
                   const float* a, const float* b, size_t N, size_t T, size_t stride, float* y) {
  return HWY_DYNAMIC_DISPATCH(Wkv7HeadSeq)(S, r, decay, k, v, a, b, N, T, stride, y);
}
void wkv7_head_step(float* S, const float* r, const float* decay, const float* k, const float* v,
                    const float* a, const float* b, size_t N, float* y) {
  HWY_DYNAMIC_DISPATCH(Wkv7HeadStep)(S, r, decay, k, v, a, b, N, y);
}

}  // namespace rwkv7::cpu
#endif
