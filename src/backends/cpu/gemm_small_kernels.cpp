// Highway multi-target kernel for decode-batch products (see gemm_small_kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/gemm_small_kernels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Accumulators: rows × vectors ≤ 24 (of 32 registers on AVX-512; AVX2's 16 registers hold
// 12), leaving room for the position vectors and the broadcast weight.
constexpr size_t kAccumulators = HWY_MAX_BYTES >= 64 ? 24 : 12;

size_t SmallLanes() { return hn::Lanes(hn::ScalableTag<float>()); }
size_t SmallMaxPositions() { return 4 * SmallLanes(); }
size_t SmallWidth(size_t T) { return (T + SmallLanes() - 1) / SmallLanes() * SmallLanes(); }
size_t SmallRowsFor(size_t T) {
  const size_t nv = (T + SmallLanes() - 1) / SmallLanes();
  return kAccumulators / (nv ? nv : 1);
}

void SmallPackX(const float* x, size_t ldx, size_t T, size_t K, float* xp) {
  const size_t mp = SmallWidth(T);
  for (size_t i = 0; i < K; ++i) {
    float* out = xp + i * mp;
    for (size_t t = 0; t < T; ++t) out[t] = x[t * ldx + i];
    for (size_t t = T; t < mp; ++t) out[t] = 0.0f;
  }
}

template <size_t NV, size_t MR>
HWY_INLINE void Block(const float* w, size_t ldw, const float* xp, size_t K, size_t T, float* y,
                      size_t ldr) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  const size_t L = hn::Lanes(d), mp = NV * L;
  V acc[MR][NV];
  for (size_t r = 0; r < MR; ++r)
    for (size_t v = 0; v < NV; ++v) acc[r][v] = hn::Zero(d);
  // Fully unrolled over rows and vectors, so that the accumulators live in registers.
  for (size_t i = 0; i < K; ++i) {
    V xv[NV];
#pragma GCC unroll 4
    for (size_t v = 0; v < NV; ++v) xv[v] = hn::Load(d, xp + i * mp + v * L);
#pragma GCC unroll 24
    for (size_t r = 0; r < MR; ++r) {
      const V a = hn::Set(d, w[r * ldw + i]);
#pragma GCC unroll 4
      for (size_t v = 0; v < NV; ++v) acc[r][v] = hn::MulAdd(a, xv[v], acc[r][v]);
    }
  }
  HWY_ALIGN float tile[4 * HWY_MAX_BYTES / sizeof(float)];
  for (size_t r = 0; r < MR; ++r) {
    for (size_t v = 0; v < NV; ++v) hn::Store(acc[r][v], d, tile + v * L);
    for (size_t t = 0; t < T; ++t) y[r * ldr + t] = tile[t];
  }
}

template <size_t NV, size_t MR>
HWY_INLINE void Rows(const float* w, size_t ldw, size_t rows, const float* xp, size_t K, size_t T,
                     float* y, size_t ldr) {
  if constexpr (MR == 0) {
    return;
  } else {
    if (rows == MR) return Block<NV, MR>(w, ldw, xp, K, T, y, ldr);
    if (rows > MR) return;  // the caller asked for more than small_gemm_rows
    return Rows<NV, MR - 1>(w, ldw, rows, xp, K, T, y, ldr);
  }
}

void SmallGemm(const float* w, size_t ldw, size_t rows, const float* xp, size_t K, size_t T,
               float* y, size_t ldr) {
  const size_t nv = (T + SmallLanes() - 1) / SmallLanes();
  switch (nv) {
    case 1:
      return Rows<1, kAccumulators>(w, ldw, rows, xp, K, T, y, ldr);
    case 2:
      return Rows<2, kAccumulators / 2>(w, ldw, rows, xp, K, T, y, ldr);
    case 3:
      return Rows<3, kAccumulators / 3>(w, ldw, rows, xp, K, T, y, ldr);
    case 4:
      return Rows<4, kAccumulators / 4>(w, ldw, rows, xp, K, T, y, ldr);
    default:
      return;
  }
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(SmallMaxPositions);
HWY_EXPORT(SmallWidth);
HWY_EXPORT(SmallRowsFor);
HWY_EXPORT(SmallPackX);
HWY_EXPORT(SmallGemm);

size_t small_gemm_max_positions() { return HWY_DYNAMIC_DISPATCH(SmallMaxPositions)(); }
size_t small_gemm_width(size_t T) { return HWY_DYNAMIC_DISPATCH(SmallWidth)(T); }
size_t small_gemm_rows(size_t T) { return HWY_DYNAMIC_DISPATCH(SmallRowsFor)(T); }
void small_gemm_pack_x(const float* x, size_t ldx, size_t T, size_t K, float* xp) {
  HWY_DYNAMIC_DISPATCH(SmallPackX)(x, ldx, T, K, xp);
}
void small_gemm(const float* w, size_t ldw, size_t rows, const float* xp, size_t K, size_t T,
                float* y, size_t ldr) {
  HWY_DYNAMIC_DISPATCH(SmallGemm)(w, ldw, rows, xp, K, T, y, ldr);
}

}  // namespace rwkv7::cpu
#endif
