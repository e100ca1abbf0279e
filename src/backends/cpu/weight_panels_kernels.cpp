// Highway multi-target kernels over bf16 weight panels (see weight_panels_kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/weight_panels_kernels.cpp"
#include "backends/cpu/weight_panels_kernels.hpp"

#include <algorithm>

#include "backends/cpu/gemm_packed_kernels.hpp"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void WidenBf16(const uint16_t* src, size_t n, float* dst, const uint16_t* next) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::Rebind<uint16_t, decltype(du)> d16;
  const size_t L = hn::Lanes(df);
  constexpr size_t kLine = 32;  // bf16 values per 64-byte line
  size_t i = 0;
  if (next)  // one prefetch per line widened
    for (; i + kLine <= n; i += kLine) {
      hwy::Prefetch(next + i);
      for (size_t j = i; j < i + kLine; j += L)
        hn::StoreU(hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, src + j)))),
                   df, dst + j);
    }
  for (; i + L <= n; i += L)
    hn::StoreU(hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, src + i)))), df,
               dst + i);
  for (; i < n; ++i) {
    const uint32_t bits = uint32_t(src[i]) << 16;
    __builtin_memcpy(dst + i, &bits, 4);
  }
}

// The panel width of gemm_packed_kernels.cpp: NR = kVecs vectors of floats.
constexpr int kVecs = HWY_MAX_BYTES >= 64 ? 4 : 2;

// One panel: per input, one broadcast and kVecs FMAs; two inputs at a time into two sets of
// accumulators (enough independent chains to hide the FMA latency).
template <class DF>
HWY_INLINE void GemvPanel(DF df, const uint16_t* panel, size_t cols, const float* x, float* out) {
  using V = hn::Vec<DF>;
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<uint16_t, decltype(du)> d16;
  const size_t L = hn::Lanes(df), NR = kVecs * L;
  auto widen = [&](const uint16_t* p) {
    return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, p))));
  };
  V a[kVecs], b[kVecs];
  for (int v = 0; v < kVecs; ++v) a[v] = hn::Zero(df), b[v] = hn::Zero(df);
  size_t i = 0;
  for (; i + 2 <= cols; i += 2) {
    const uint16_t* p = panel + i * NR;
    const V x0 = hn::Set(df, x[i]), x1 = hn::Set(df, x[i + 1]);
    for (int v = 0; v < kVecs; ++v) a[v] = hn::MulAdd(widen(p + v * L), x0, a[v]);
    for (int v = 0; v < kVecs; ++v) b[v] = hn::MulAdd(widen(p + NR + v * L), x1, b[v]);
  }
  if (i < cols) {
    const V x0 = hn::Set(df, x[i]);
    for (int v = 0; v < kVecs; ++v) a[v] = hn::MulAdd(widen(panel + i * NR + v * L), x0, a[v]);
  }
  for (int v = 0; v < kVecs; ++v) hn::StoreU(hn::Add(a[v], b[v]), df, out + v * L);
}

void GemvBf16Panels(const uint16_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                    const float* x, float* y) {
  const hn::ScalableTag<float> df;
  const size_t NR = kVecs * hn::Lanes(df);
  HWY_ALIGN float tail[kVecs * HWY_MAX_BYTES / sizeof(float)];
  for (size_t p = p0; p < p1; ++p) {
    const size_t o0 = p * NR;
    const uint16_t* panel = panels + p * cols * NR;
    if (o0 + NR <= rows) {
      GemvPanel(df, panel, cols, x, y + o0);
    } else {  // the last panel, padded past `rows`
      GemvPanel(df, panel, cols, x, tail);
      for (size_t j = 0; o0 + j < rows; ++j) y[o0 + j] = tail[j];
    }
  }
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(WidenBf16);
HWY_EXPORT(GemvBf16Panels);

size_t bf16_panels_size(size_t rows, size_t cols) {
  const size_t nr = panel_width();
  return (rows + nr - 1) / nr * nr * cols;
}

void pack_bf16_panels(const uint16_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                      uint16_t* out) {
  const size_t nr = panel_width();
  constexpr size_t kBlock = 64;  // inputs per pass: nr source rows × 64 values stay in L1
  for (size_t p = p0; p < p1; ++p) {
    uint16_t* panel = out + p * cols * nr;
    for (size_t i0 = 0; i0 < cols; i0 += kBlock) {
      const size_t i1 = std::min(cols, i0 + kBlock);
      for (size_t j = 0; j < nr; ++j) {
        const size_t o = p * nr + j;
        for (size_t i = i0; i < i1; ++i) panel[i * nr + j] = o < rows ? w[o * cols + i] : 0;
      }
    }
  }
}

void widen_bf16(const uint16_t* src, size_t n, float* dst, const uint16_t* next) {
  HWY_DYNAMIC_DISPATCH(WidenBf16)(src, n, dst, next);
}

void gemv_bf16_panels(const uint16_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                      const float* x, float* y) {
  HWY_DYNAMIC_DISPATCH(GemvBf16Panels)(panels, rows, cols, p0, p1, x, y);
}

}  // namespace rwkv7::cpu
#endif
