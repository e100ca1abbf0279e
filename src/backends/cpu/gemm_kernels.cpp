// Highway multi-target product kernel: 4 positions × 3 weight rows of dot products at once.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/gemm_kernels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

template <int MR, int NW>
HWY_INLINE void Tile(const float* w, size_t ldw, const float* x, size_t ldx, size_t n, float* y,
                     size_t ldy) {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d);
  using V = hn::Vec<decltype(d)>;
  V acc[MR][NW];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NW; ++c) acc[r][c] = hn::Zero(d);
  size_t i = 0;
  for (; i + L <= n; i += L) {
    V wv[NW];
    for (int c = 0; c < NW; ++c) wv[c] = hn::LoadU(d, w + size_t(c) * ldw + i);
    for (int r = 0; r < MR; ++r) {
      const V xv = hn::LoadU(d, x + size_t(r) * ldx + i);
      for (int c = 0; c < NW; ++c) acc[r][c] = hn::MulAdd(xv, wv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int c = 0; c < NW; ++c) {
      float s = hn::GetLane(hn::SumOfLanes(d, acc[r][c]));
      for (size_t k = i; k < n; ++k) s += x[size_t(r) * ldx + k] * w[size_t(c) * ldw + k];
      y[size_t(r) * ldy + size_t(c)] = s;
    }
  }
}

template <int NW>
HWY_INLINE void Rows(const float* w, size_t ldw, const float* x, size_t ldx, size_t T, size_t n,
                     float* y, size_t ldy) {
  size_t t = 0;
  for (; t + 4 <= T; t += 4) Tile<4, NW>(w, ldw, x + t * ldx, ldx, n, y + t * ldy, ldy);
  for (; t < T; ++t) Tile<1, NW>(w, ldw, x + t * ldx, ldx, n, y + t * ldy, ldy);
}

void GemmRows(const float* w, size_t ldw, size_t nw, const float* x, size_t ldx, size_t T, size_t n,
              float* y, size_t ldy) {
  switch (nw) {
    case 3:
      return Rows<3>(w, ldw, x, ldx, T, n, y, ldy);
    case 2:
      return Rows<2>(w, ldw, x, ldx, T, n, y, ldy);
    default:
      return Rows<1>(w, ldw, x, ldx, T, n, y, ldy);
  }
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(GemmRows);

void gemm_rows(const float* w, size_t ldw, size_t nw, const float* x, size_t ldx, size_t T,
               size_t n, float* y, size_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemmRows)(w, ldw, nw, x, ldx, T, n, y, ldy);
}

}  // namespace rwkv7::cpu
#endif
