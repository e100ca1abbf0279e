// Highway multi-target kernels over weight panels (bf16, f16, fp32) (see
// weight_panels_kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/weight_panels_kernels.cpp"
#include "backends/cpu/weight_panels_kernels.hpp"

#include <algorithm>
#include <vector>

#include "backends/cpu/gemm_packed_kernels.hpp"
#include "core/dtype.hpp"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
// (after highway.h: a per-target header)
#include "backends/cpu/panel_vecs-inl.hpp"

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
  static float One(uint16_t v) { return rwkv7::bf16_to_f32(v); }
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
constexpr int kVecs = kPanelVecs;  // panel_vecs-inl.hpp

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

// fp32 values that came from bf16 / f16 back to their 16-bit form (exact: the panels are
// packed through fp32, see pack_panels).
void NarrowBf16(const float* src, size_t n, uint16_t* dst) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::RebindToSigned<decltype(df)> di;  // values < 2^16 after the shift: int32 → uint16
  const hn::Rebind<uint16_t, decltype(du)> d16;
  const size_t L = hn::Lanes(df);
  size_t i = 0;
  for (; i + L <= n; i += L)
    hn::StoreU(
        hn::DemoteTo(d16,
                     hn::BitCast(di, hn::ShiftRight<16>(hn::BitCast(du, hn::LoadU(df, src + i))))),
        d16, dst + i);
  for (; i < n; ++i) {
    uint32_t bits;
    __builtin_memcpy(&bits, src + i, 4);
    dst[i] = uint16_t(bits >> 16);
  }
}

void NarrowF16(const float* src, size_t n, uint16_t* dst) {
  size_t i = 0;
#if HWY_TARGET <= HWY_AVX2  // F16C; elsewhere one by one (see F16Bits)
  const hn::ScalableTag<float> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> dh;
  const size_t L = hn::Lanes(df);
  for (; i + L <= n; i += L)
    hn::StoreU(hn::DemoteTo(dh, hn::LoadU(df, src + i)), dh,
               reinterpret_cast<hwy::float16_t*>(dst + i));
#endif
  for (; i < n; ++i) dst[i] = rwkv7::f32_to_f16(src[i]);
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(WidenBf16);
HWY_EXPORT(WidenF16);
HWY_EXPORT(GemvPanelsOf);
HWY_EXPORT(NarrowBf16);
HWY_EXPORT(NarrowF16);

size_t panels_size(size_t rows, size_t cols) {
  const size_t nr = panel_width();
  return (rows + nr - 1) / nr * nr * cols;
}

namespace {

void narrow_bf16(const float* src, size_t n, uint16_t* dst) {
  HWY_DYNAMIC_DISPATCH(NarrowBf16)(src, n, dst);
}

void narrow_f16(const float* src, size_t n, uint16_t* dst) {
  HWY_DYNAMIC_DISPATCH(NarrowF16)(src, n, dst);
}

}  // namespace

// Each panel through the packed product's own packer (register transposes: the scalar loop
// this replaced took a third of a bf16 model's load), one block of inputs at a time.
void pack_panels(const float* w, size_t rows, size_t cols, size_t p0, size_t p1, float* out) {
  const size_t nr = panel_width();
  for (size_t p = p0; p < p1; ++p) {
    const size_t o0 = p * nr;
    pack_panel(w + o0 * cols, cols, std::min(nr, rows - o0), cols, nullptr, out + p * cols * nr);
  }
}

// 16-bit values go through fp32 panels (widened exactly), narrowed back into place.
void pack_panels(DType t, const uint16_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                 uint16_t* out) {
  const size_t nr = panel_width();
  constexpr size_t kDepth = 256;  // inputs per block: a 64 KB fp32 panel block on AVX-512
  std::vector<float> block(kDepth * nr);
  const auto pack = t == DType::F16 ? pack_panel_f16 : pack_panel_bf16;
  const auto narrow = t == DType::F16 ? narrow_f16 : narrow_bf16;
  for (size_t p = p0; p < p1; ++p) {
    const size_t o0 = p * nr, nn = std::min(nr, rows - o0);
    for (size_t i0 = 0; i0 < cols; i0 += kDepth) {
      const size_t kc = std::min(kDepth, cols - i0);
      pack(w + o0 * cols + i0, cols, nn, kc, nullptr, block.data());
      narrow(block.data(), kc * nr, out + p * cols * nr + i0 * nr);
    }
  }
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
