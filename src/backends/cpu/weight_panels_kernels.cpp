// Highway multi-target kernels over weight panels (bf16, f16, fp32) (see
// weight_panels_kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/weight_panels_kernels.cpp"
#include "backends/cpu/weight_panels_kernels.hpp"

#include <algorithm>

#include "backends/cpu/gemm_packed_kernels.hpp"
#include "core/dtype.hpp"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The weight values of a panel widened to fp32, one vector at a time.
struct Bf16Bits {
  template <class DF>
  static HWY_INLINE hn::Vec<DF> Load(DF df, const uint16_t* p) {
    const hn::RebindToUnsigned<DF> du;
    const hn::Rebind<uint16_t, decltype(du)> d16;
    return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, p))));
  }
  static float One(uint16_t v) {
    const uint32_t bits = uint32_t(v) << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
  }
};
struct F16Bits {
  template <class DF>
  static HWY_INLINE hn::Vec<DF> Load(DF df, const uint16_t* p) {
#if HWY_TARGET <= HWY_AVX2  // F16C
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p)));
#else  // Highway's emulation turns infinities into 65536: converted one by one instead
    HWY_ALIGN float v[HWY_MAX_BYTES / sizeof(float)];
    for (size_t i = 0; i < hn::Lanes(df); ++i) v[i] = rwkv7::f16_to_f32(p[i]);
    return hn::Load(df, v);
#endif
  }
  static float One(uint16_t v) { return rwkv7::f16_to_f32(v); }
};
struct F32Values {
  template <class DF>
  static HWY_INLINE hn::Vec<DF> Load(DF df, const float* p) {
    return hn::LoadU(df, p);
  }
};

template <class W>
HWY_INLINE void Widen(const uint16_t* src, size_t n, float* dst, const uint16_t* next) {
  const hn::ScalableTag<float> df;
  const size_t L = hn::Lanes(df);
  constexpr size_t kLine = 32;  // 16-bit values per 64-byte line
  size_t i = 0;
  if (next)  // one prefetch per line widened
    for (; i + kLine <= n; i += kLine) {
      hwy::Prefetch(next + i);
      for (size_t j = i; j < i + kLine; j += L) hn::StoreU(W::Load(df, src + j), df, dst + j);
    }
  for (; i + L <= n; i += L) hn::StoreU(W::Load(df, src + i), df, dst + i);
  for (; i < n; ++i) dst[i] = W::One(src[i]);
}

void WidenBf16(const uint16_t* src, size_t n, float* dst, const uint16_t* next) {
  Widen<Bf16Bits>(src, n, dst, next);
}

void WidenF16(const uint16_t* src, size_t n, float* dst, const uint16_t* next) {
  Widen<F16Bits>(src, n, dst, next);
}

// The panel width of gemm_packed_kernels.cpp: NR = kVecs vectors of floats.
constexpr int kVecs = HWY_MAX_BYTES >= 64 ? 4 : 2;

// One panel: per input, one broadcast and kVecs FMAs; two inputs at a time into two sets of
// accumulators (enough independent chains to hide the FMA latency).
template <class W, class T, class DF>
HWY_INLINE void GemvPanel(DF df, const T* panel, size_t cols, const float* x, float* out) {
  using V = hn::Vec<DF>;
  const size_t L = hn::Lanes(df), NR = kVecs * L;
  V a[kVecs], b[kVecs];
  for (int v = 0; v < kVecs; ++v) a[v] = hn::Zero(df), b[v] = hn::Zero(df);
  size_t i = 0;
  for (; i + 2 <= cols; i += 2) {
    const T* p = panel + i * NR;
    const V x0 = hn::Set(df, x[i]), x1 = hn::Set(df, x[i + 1]);
    for (int v = 0; v < kVecs; ++v) a[v] = hn::MulAdd(W::Load(df, p + v * L), x0, a[v]);
    for (int v = 0; v < kVecs; ++v) b[v] = hn::MulAdd(W::Load(df, p + NR + v * L), x1, b[v]);
  }
  if (i < cols) {
    const V x0 = hn::Set(df, x[i]);
    for (int v = 0; v < kVecs; ++v)
      a[v] = hn::MulAdd(W::Load(df, panel + i * NR + v * L), x0, a[v]);
  }
  for (int v = 0; v < kVecs; ++v) hn::StoreU(hn::Add(a[v], b[v]), df, out + v * L);
}

template <class W, class T>
void GemvPanels(const T* panels, size_t rows, size_t cols, size_t p0, size_t p1, const float* x,
                float* y) {
  const hn::ScalableTag<float> df;
  const size_t NR = kVecs * hn::Lanes(df);
  HWY_ALIGN float tail[kVecs * HWY_MAX_BYTES / sizeof(float)];
  for (size_t p = p0; p < p1; ++p) {
    const size_t o0 = p * NR;
    const T* panel = panels + p * cols * NR;
    if (o0 + NR <= rows) {
      GemvPanel<W>(df, panel, cols, x, y + o0);
    } else {  // the last panel, padded past `rows`
      GemvPanel<W>(df, panel, cols, x, tail);
      for (size_t j = 0; o0 + j < rows; ++j) y[o0 + j] = tail[j];
    }
  }
}

void GemvPanelsOf(DType t, const void* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                  const float* x, float* y) {
  if (t == DType::F32)
    return GemvPanels<F32Values>(static_cast<const float*>(panels), rows, cols, p0, p1, x, y);
  const auto* bits = static_cast<const uint16_t*>(panels);
  if (t == DType::F16) return GemvPanels<F16Bits>(bits, rows, cols, p0, p1, x, y);
  GemvPanels<Bf16Bits>(bits, rows, cols, p0, p1, x, y);
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(WidenBf16);
HWY_EXPORT(WidenF16);
HWY_EXPORT(GemvPanelsOf);

namespace {

template <class T>
void pack_panels_of(const T* w, size_t rows, size_t cols, size_t p0, size_t p1, T* out) {
  const size_t nr = panel_width();
  constexpr size_t kBlock = 64;  // inputs per pass: nr source rows × 64 values stay in L1
  for (size_t p = p0; p < p1; ++p) {
    T* panel = out + p * cols * nr;
    for (size_t i0 = 0; i0 < cols; i0 += kBlock) {
      const size_t i1 = std::min(cols, i0 + kBlock);
      for (size_t j = 0; j < nr; ++j) {
        const size_t o = p * nr + j;
        for (size_t i = i0; i < i1; ++i) panel[i * nr + j] = o < rows ? w[o * cols + i] : T(0);
      }
    }
  }
}

}  // namespace

size_t panels_size(size_t rows, size_t cols) {
  const size_t nr = panel_width();
  return (rows + nr - 1) / nr * nr * cols;
}

void pack_panels(const uint16_t* w, size_t rows, size_t cols, size_t p0, size_t p1, uint16_t* out) {
  pack_panels_of(w, rows, cols, p0, p1, out);
}

void pack_panels(const float* w, size_t rows, size_t cols, size_t p0, size_t p1, float* out) {
  pack_panels_of(w, rows, cols, p0, p1, out);
}

void widen_bf16(const uint16_t* src, size_t n, float* dst, const uint16_t* next) {
  HWY_DYNAMIC_DISPATCH(WidenBf16)(src, n, dst, next);
}

void widen_f16(const uint16_t* src, size_t n, float* dst, const uint16_t* next) {
  HWY_DYNAMIC_DISPATCH(WidenF16)(src, n, dst, next);
}

void gemv_panels(DType t, const void* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                 const float* x, float* y) {
  HWY_DYNAMIC_DISPATCH(GemvPanelsOf)(t, panels, rows, cols, p0, p1, x, y);
}

}  // namespace rwkv7::cpu
#endif
