// Highway multi-target int8 kernels: this file is compiled once per target ISA.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/quant_kernels.cpp"
#include "core/dtype.hpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr size_t kBlock = 32;

// int8 → int16 widening, then pairwise multiply-add into int32 (pmaddwd / vpdpwssd), one
// int32 vector per block converted to fp32 and scaled: exact integer sums inside a block.
// Four activation rows share each weight load (register blocking).
void DotRowsQ8(const int8_t* wq, const float* wd, const int8_t* xq, const float* xd, size_t nb,
               size_t rows, float* out, size_t out_stride) {
  const hn::CappedTag<int16_t, kBlock> d16;
  const hn::Rebind<int8_t, decltype(d16)> d8;
  const hn::RepartitionToWide<decltype(d16)> d32;
  const hn::RebindToFloat<decltype(d32)> df;
  const size_t L = hn::Lanes(d16);
  const size_t n = nb * kBlock;
  size_t j = 0;
  for (; j + 4 <= rows; j += 4) {
    const int8_t* x0 = xq + j * n;
    const int8_t* x1 = x0 + n;
    const int8_t* x2 = x1 + n;
    const int8_t* x3 = x2 + n;
    const float* s0 = xd + j * nb;
    auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    for (size_t b = 0; b < nb; ++b) {
      auto i0 = hn::Zero(d32), i1 = hn::Zero(d32), i2 = hn::Zero(d32), i3 = hn::Zero(d32);
      // Second accumulators of ReorderWidenMulAccumulate (x86 leaves them zero; others may not).
      auto u0 = hn::Zero(d32), u1 = hn::Zero(d32), u2 = hn::Zero(d32), u3 = hn::Zero(d32);
      for (size_t k = b * kBlock; k < (b + 1) * kBlock; k += L) {
        const auto w = hn::PromoteTo(d16, hn::LoadU(d8, wq + k));
        i0 = hn::ReorderWidenMulAccumulate(d32, w, hn::PromoteTo(d16, hn::LoadU(d8, x0 + k)), i0,
                                           u0);
        i1 = hn::ReorderWidenMulAccumulate(d32, w, hn::PromoteTo(d16, hn::LoadU(d8, x1 + k)), i1,
                                           u1);
        i2 = hn::ReorderWidenMulAccumulate(d32, w, hn::PromoteTo(d16, hn::LoadU(d8, x2 + k)), i2,
                                           u2);
        i3 = hn::ReorderWidenMulAccumulate(d32, w, hn::PromoteTo(d16, hn::LoadU(d8, x3 + k)), i3,
                                           u3);
      }
      const float wb = wd[b];
      a0 = hn::MulAdd(hn::ConvertTo(df, hn::Add(i0, u0)), hn::Set(df, wb * s0[b]), a0);
      a1 = hn::MulAdd(hn::ConvertTo(df, hn::Add(i1, u1)), hn::Set(df, wb * s0[nb + b]), a1);
      a2 = hn::MulAdd(hn::ConvertTo(df, hn::Add(i2, u2)), hn::Set(df, wb * s0[2 * nb + b]), a2);
      a3 = hn::MulAdd(hn::ConvertTo(df, hn::Add(i3, u3)), hn::Set(df, wb * s0[3 * nb + b]), a3);
    }
    out[j * out_stride] = hn::GetLane(hn::SumOfLanes(df, a0));
    out[(j + 1) * out_stride] = hn::GetLane(hn::SumOfLanes(df, a1));
    out[(j + 2) * out_stride] = hn::GetLane(hn::SumOfLanes(df, a2));
    out[(j + 3) * out_stride] = hn::GetLane(hn::SumOfLanes(df, a3));
  }
  for (; j < rows; ++j) {
    const int8_t* x0 = xq + j * n;
    const float* s0 = xd + j * nb;
    auto a0 = hn::Zero(df);
    for (size_t b = 0; b < nb; ++b) {
      auto i0 = hn::Zero(d32), u = hn::Zero(d32);
      for (size_t k = b * kBlock; k < (b + 1) * kBlock; k += L) {
        const auto w = hn::PromoteTo(d16, hn::LoadU(d8, wq + k));
        i0 =
            hn::ReorderWidenMulAccumulate(d32, w, hn::PromoteTo(d16, hn::LoadU(d8, x0 + k)), i0, u);
      }
      a0 = hn::MulAdd(hn::ConvertTo(df, hn::Add(i0, u)), hn::Set(df, wd[b] * s0[b]), a0);
    }
    out[j * out_stride] = hn::GetLane(hn::SumOfLanes(df, a0));
  }
}

// Decode with Q8_0 weights: reads the 34-byte blocks in place (f16 scale, 32 int8), so no
// row is unpacked first. One activation row, quantised to Q8_0 as for DotRowsQ8.
float DotQ8Blocks(const uint8_t* blocks, const int8_t* xq, const float* xd, size_t nb) {
  const hn::CappedTag<int16_t, kBlock> d16;
  const hn::Rebind<int8_t, decltype(d16)> d8;
  const hn::RepartitionToWide<decltype(d16)> d32;
  const hn::RebindToFloat<decltype(d32)> df;
  const size_t L = hn::Lanes(d16);
  auto acc = hn::Zero(df);
  for (size_t b = 0; b < nb; ++b) {
    const uint8_t* blk = blocks + b * (2 + kBlock);
    const auto* q = reinterpret_cast<const int8_t*>(blk + 2);
    uint16_t h;
    __builtin_memcpy(&h, blk, 2);
    auto i0 = hn::Zero(d32), u = hn::Zero(d32);
    for (size_t k = 0; k < kBlock; k += L) {
      const auto w = hn::PromoteTo(d16, hn::LoadU(d8, q + k));
      i0 = hn::ReorderWidenMulAccumulate(
          d32, w, hn::PromoteTo(d16, hn::LoadU(d8, xq + b * kBlock + k)), i0, u);
    }
    acc = hn::MulAdd(hn::ConvertTo(df, hn::Add(i0, u)), hn::Set(df, rwkv7::f16_to_f32(h) * xd[b]),
                     acc);
  }
  return hn::GetLane(hn::SumOfLanes(df, acc));
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(DotRowsQ8);
HWY_EXPORT(DotQ8Blocks);

float dot_q8_0_blocks(const uint8_t* blocks, const int8_t* xq, const float* xd, size_t nb) {
  return HWY_DYNAMIC_DISPATCH(DotQ8Blocks)(blocks, xq, xd, nb);
}

void dot_rows_q8(const int8_t* wq, const float* wd, const int8_t* xq, const float* xd, size_t nb,
                 size_t rows, float* out, size_t out_stride) {
  HWY_DYNAMIC_DISPATCH(DotRowsQ8)(wq, wd, xq, xd, nb, rows, out, out_stride);
}

}  // namespace rwkv7::cpu
#endif
