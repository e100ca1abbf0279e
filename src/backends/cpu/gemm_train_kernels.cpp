// Highway multi-target accumulate-product kernel (see gemm_train_kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/gemm_train_kernels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// MR rows of C × NV full vectors of columns starting at n, over all K.
template <int MR, int NV>
HWY_INLINE void Micro(const float* a, int64_t a_m, int64_t a_k, const float* b, int64_t ldb,
                      float* c, int64_t ldc, int64_t m, int64_t n, int64_t K) {
  const hn::ScalableTag<float> d;
  const int64_t L = int64_t(hn::Lanes(d));
  using V = hn::Vec<decltype(d)>;
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = hn::Zero(d);
  const float* ap = a + m * a_m;
  const float* bp = b + n;
  for (int64_t k = 0; k < K; ++k) {
    V bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = hn::LoadU(d, bp + v * L);
    for (int r = 0; r < MR; ++r) {
      const V av = hn::Set(d, ap[r * a_m]);
      for (int v = 0; v < NV; ++v) acc[r][v] = hn::MulAdd(av, bv[v], acc[r][v]);
    }
    ap += a_k;
    bp += ldb;
  }
  for (int r = 0; r < MR; ++r) {
    float* cp = c + (m + r) * ldc + n;
    for (int v = 0; v < NV; ++v)
      hn::StoreU(hn::Add(hn::LoadU(d, cp + v * L), acc[r][v]), d, cp + v * L);
  }
}

template <int NV>
HWY_INLINE void Panel(const float* a, int64_t a_m, int64_t a_k, const float* b, int64_t ldb,
                      float* c, int64_t ldc, int64_t m0, int64_t m1, int64_t n, int64_t K) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) Micro<4, NV>(a, a_m, a_k, b, ldb, c, ldc, m, n, K);
  for (; m < m1; ++m) Micro<1, NV>(a, a_m, a_k, b, ldb, c, ldc, m, n, K);
}

// One block of K: the B panel [kn, kWide·L] stays in L2 while every row block of C passes.
void GemmAccBlock(const float* a, int64_t a_m, int64_t a_k, const float* b, int64_t ldb, float* c,
                  int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K) {
  const hn::ScalableTag<float> d;
  const int64_t L = int64_t(hn::Lanes(d));
  int64_t n = n0;
  // 4 rows × 4 vectors = 16 accumulators (of 32 registers on AVX-512; 4 × 2 of 16 on AVX2).
  constexpr int kWide = HWY_MAX_BYTES >= 64 ? 4 : 2;
  for (; n + kWide * L <= n1; n += kWide * L)
    Panel<kWide>(a, a_m, a_k, b, ldb, c, ldc, m0, m1, n, K);
  for (; n + L <= n1; n += L) Panel<1>(a, a_m, a_k, b, ldb, c, ldc, m0, m1, n, K);
  if (n < n1) {  // column tail narrower than a vector
    for (int64_t m = m0; m < m1; ++m) {
      for (int64_t j = n; j < n1; ++j) {
        float s = 0;
        for (int64_t k = 0; k < K; ++k) s += a[m * a_m + k * a_k] * b[k * ldb + j];
        c[m * ldc + j] += s;
      }
    }
  }
}

void GemmAccTile(const float* a, int64_t a_m, int64_t a_k, const float* b, int64_t ldb, float* c,
                 int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K) {
  constexpr int64_t kBlockK = 256;
  for (int64_t k0 = 0; k0 < K; k0 += kBlockK) {
    const int64_t kn = K - k0 < kBlockK ? K - k0 : kBlockK;
    GemmAccBlock(a + k0 * a_k, a_m, a_k, b + k0 * ldb, ldb, c, ldc, m0, m1, n0, n1, kn);
  }
}

size_t Lanes() { return hn::Lanes(hn::ScalableTag<float>()); }

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(GemmAccTile);
HWY_EXPORT(Lanes);

void gemm_acc_tile(const float* a, int64_t a_m, int64_t a_k, const float* b, int64_t ldb, float* c,
                   int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K) {
  HWY_DYNAMIC_DISPATCH(GemmAccTile)(a, a_m, a_k, b, ldb, c, ldc, m0, m1, n0, n1, K);
}

void gemm_acc_tile_scalar(const float* a, int64_t a_m, int64_t a_k, const float* b, int64_t ldb,
                          float* c, int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                          int64_t K) {
  for (int64_t m = m0; m < m1; ++m) {
    for (int64_t j = n0; j < n1; ++j) {
      float s = 0;
      for (int64_t k = 0; k < K; ++k) s += a[m * a_m + k * a_k] * b[k * ldb + j];
      c[m * ldc + j] += s;
    }
  }
}

size_t gemm_acc_lanes() { return HWY_DYNAMIC_DISPATCH(Lanes)(); }

}  // namespace rwkv7::cpu
#endif
