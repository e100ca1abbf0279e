// Highway multi-target block decoding (see dequant_kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/dequant_kernels.cpp"
#include "backends/cpu/dequant_kernels.hpp"

#include "core/quant.hpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "rwkv7/error.hpp"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Up to 16 lanes per step: one Q4_0 byte run (16 bytes) or half a Q8_0 block at a time.
using DF = hn::CappedTag<float, 16>;
using DI = hn::Rebind<int32_t, DF>;
using D8 = hn::Rebind<int8_t, DF>;
using DU8 = hn::Rebind<uint8_t, DF>;

void DequantQ8(const uint8_t* p, float* out, size_t nb) {
  const DF df;
  const DI di;
  const D8 d8;
  const size_t L = hn::Lanes(df);
  for (size_t b = 0; b < nb; ++b, p += kQ8Bytes, out += kQuantBlock) {
    uint16_t h;
    __builtin_memcpy(&h, p, 2);
    const auto d = hn::Set(df, f16_to_f32(h));
    const auto* q = reinterpret_cast<const int8_t*>(p + 2);
    for (size_t j = 0; j < size_t(kQuantBlock); j += L)
      hn::StoreU(hn::Mul(d, hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, q + j)))), df,
                 out + j);
  }
}

void DequantQ4(const uint8_t* p, float* out, size_t nb) {
  const DF df;
  const DI di;
  const DU8 du8;
  const size_t L = hn::Lanes(df);
  const auto low_mask = hn::Set(di, 0x0f), eight = hn::Set(di, 8);
  for (size_t b = 0; b < nb; ++b, p += kQ4Bytes, out += kQuantBlock) {
    uint16_t h;
    __builtin_memcpy(&h, p, 2);
    const auto d = hn::Set(df, f16_to_f32(h));
    for (size_t j = 0; j < size_t(kQuantBlock / 2); j += L) {
      const auto bytes = hn::PromoteTo(di, hn::LoadU(du8, p + 2 + j));
      const auto lo = hn::Sub(hn::And(bytes, low_mask), eight);
      const auto hi = hn::Sub(hn::ShiftRight<4>(bytes), eight);
      hn::StoreU(hn::Mul(d, hn::ConvertTo(df, lo)), df, out + j);
      hn::StoreU(hn::Mul(d, hn::ConvertTo(df, hi)), df, out + kQuantBlock / 2 + j);
    }
  }
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(DequantQ8);
HWY_EXPORT(DequantQ4);

void dequantize_row(DType t, const void* blocks, float* out, int64_t n) {
  // The other block types decode through core's scalar code (prefill only: decode reads
  // them in place, quant_kernels.hpp).
  if (is_quantized(t) && t != DType::Q8_0 && t != DType::Q4_0)
    return rwkv7::dequantize_row(t, blocks, out, n);
  if (n % kQuantBlock != 0)
    throw Error("dequantize: " + std::to_string(n) + " values is not a whole number of blocks");
  const auto* p = static_cast<const uint8_t*>(blocks);
  const size_t nb = size_t(n / kQuantBlock);
  switch (t) {
    case DType::Q8_0:
      return HWY_DYNAMIC_DISPATCH(DequantQ8)(p, out, nb);
    case DType::Q4_0:
      return HWY_DYNAMIC_DISPATCH(DequantQ4)(p, out, nb);
    default:
      throw Error("dequantize: " + dtype_name(t) + " is not a block-quantised type");
  }
}

}  // namespace rwkv7::cpu
#endif
