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
    const auto d = hn::Set(df, f16_at(p));
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
    const auto d = hn::Set(df, f16_at(p));
    for (size_t j = 0; j < size_t(kQuantBlock / 2); j += L) {
      const auto bytes = hn::PromoteTo(di, hn::LoadU(du8, p + 2 + j));
      const auto lo = hn::Sub(hn::And(bytes, low_mask), eight);
      const auto hi = hn::Sub(hn::ShiftRight<4>(bytes), eight);
      hn::StoreU(hn::Mul(d, hn::ConvertTo(df, lo)), df, out + j);
      hn::StoreU(hn::Mul(d, hn::ConvertTo(df, hi)), df, out + kQuantBlock / 2 + j);
    }
  }
}

// Q4_K / Q5_K super-blocks (core/quant.hpp): sub-block j's value is d·sc_j·q - dmin·m_j. Every
// product is exact in fp32 (d·sc: 11 + 6 bits, ·q: + 5 bits), so the result equals core's
// whatever the compiler fuses.
template <bool kQ5>
void DequantQ45K(const uint8_t* p, float* out, size_t nsb) {
  const DF df;
  const DI di;
  const DU8 du8;
  const size_t L = hn::Lanes(df);
  const auto low = hn::Set(di, 0x0f), one = hn::Set(di, 1);
  constexpr size_t kBytes = kQ5 ? kQ5KBytes : kQ4KBytes;
  for (size_t sb = 0; sb < nsb; ++sb, p += kBytes, out += kSuperBlock) {
    const float d = f16_at(p), dmin = f16_at(p + kK45DminAt);
    const uint8_t* qs = p + (kQ5 ? kQ5KQsAt : kQ4KQsAt);
    for (int c = 0; c < 4; ++c) {
      uint8_t s0, m0, s1, m1;
      k4_scale_min(2 * c, p + kK45ScalesAt, &s0, &m0);
      k4_scale_min(2 * c + 1, p + kK45ScalesAt, &s1, &m1);
      const auto d1 = hn::Set(df, d * float(s0)), n1 = hn::Set(df, dmin * float(m0));
      const auto d2 = hn::Set(df, d * float(s1)), n2 = hn::Set(df, dmin * float(m1));
      for (size_t l = 0; l < 32; l += L) {
        const auto bytes = hn::PromoteTo(di, hn::LoadU(du8, qs + 32 * c + l));
        auto lo = hn::And(bytes, low), hi = hn::ShiftRight<4>(bytes);
        if constexpr (kQ5) {
          const auto h = hn::PromoteTo(di, hn::LoadU(du8, p + kQ5KQhAt + l));
          lo = hn::Or(lo, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, 2 * c), one)));
          hi = hn::Or(hi, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, 2 * c + 1), one)));
        }
        hn::StoreU(hn::Sub(hn::Mul(d1, hn::ConvertTo(df, lo)), n1), df, out + 64 * c + l);
        hn::StoreU(hn::Sub(hn::Mul(d2, hn::ConvertTo(df, hi)), n2), df, out + 64 * c + 32 + l);
      }
    }
  }
}

// Q6_K super-blocks: per half h, 16-value group s, value (d·sc_s)·(q - 32), q from a nibble of
// ql and two bits of qh; exact in fp32 (d·sc: 11 + 8 bits, ·q: + 6 bits).
void DequantQ6K(const uint8_t* p, float* out, size_t nsb) {
  const DF df;
  const DI di;
  const DU8 du8;
  const size_t L = hn::Lanes(df);
  const auto low = hn::Set(di, 0x0f), three = hn::Set(di, 3), off = hn::Set(di, 32);
  for (size_t sb = 0; sb < nsb; ++sb, p += kQ6KBytes, out += kSuperBlock) {
    const float d = f16_at(p + kQ6KDAt);
    const auto* sc = reinterpret_cast<const int8_t*>(p + kQ6KScalesAt);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = p + 64 * h;
      const uint8_t* qh = p + kQ6KQhAt + 32 * h;
      const int8_t* s = sc + 8 * h;
      float* y = out + 128 * h;
      for (size_t l = 0; l < 32; l += L) {  // L divides 16: one scale group per step
        const size_t is = l / 16;
        const auto a = hn::PromoteTo(di, hn::LoadU(du8, ql + l));
        const auto b = hn::PromoteTo(di, hn::LoadU(du8, ql + 32 + l));
        const auto hb = hn::PromoteTo(di, hn::LoadU(du8, qh + l));
        const auto q1 = hn::Sub(hn::Or(hn::And(a, low), hn::ShiftLeft<4>(hn::And(hb, three))), off);
        const auto q2 = hn::Sub(
            hn::Or(hn::And(b, low), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<2>(hb), three))), off);
        const auto q3 = hn::Sub(
            hn::Or(hn::ShiftRight<4>(a), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<4>(hb), three))),
            off);
        const auto q4 =
            hn::Sub(hn::Or(hn::ShiftRight<4>(b), hn::ShiftLeft<4>(hn::ShiftRight<6>(hb))), off);
        hn::StoreU(hn::Mul(hn::Set(df, d * float(s[is])), hn::ConvertTo(df, q1)), df, y + l);
        hn::StoreU(hn::Mul(hn::Set(df, d * float(s[is + 2])), hn::ConvertTo(df, q2)), df,
                   y + 32 + l);
        hn::StoreU(hn::Mul(hn::Set(df, d * float(s[is + 4])), hn::ConvertTo(df, q3)), df,
                   y + 64 + l);
        hn::StoreU(hn::Mul(hn::Set(df, d * float(s[is + 6])), hn::ConvertTo(df, q4)), df,
                   y + 96 + l);
      }
    }
  }
}

void DequantK(DType t, const uint8_t* p, float* out, size_t nsb) {
  if (t == DType::Q6_K) return DequantQ6K(p, out, nsb);
  if (t == DType::Q5_K) return DequantQ45K<true>(p, out, nsb);
  DequantQ45K<false>(p, out, nsb);
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(DequantQ8);
HWY_EXPORT(DequantQ4);
HWY_EXPORT(DequantK);

void dequantize_row(DType t, const void* blocks, float* out, int64_t n) {
  if (t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K) {
    if (n % kSuperBlock != 0)
      throw Error("dequantize: " + std::to_string(n) + " values is not a whole number of " +
                  dtype_name(t) + " super-blocks");
    return HWY_DYNAMIC_DISPATCH(DequantK)(t, static_cast<const uint8_t*>(blocks), out,
                                          size_t(n / kSuperBlock));
  }
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
