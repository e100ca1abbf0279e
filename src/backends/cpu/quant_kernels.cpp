// Highway multi-target int8 kernels: this file is compiled once per target ISA.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/quant_kernels.cpp"
#include "backends/cpu/quant_kernels.hpp"

#include <algorithm>
#include <type_traits>

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

// x[32·nb] → Q8_0 exactly as quantize_row_q8_0 + unpack_row_i8 do it (d = amax/127 rounded
// to f16, q = roundf(x·(1/d)): halves away from zero), plus the lane sums of Q8Act.
void QuantizeActQ8(const float* x, size_t nb, int8_t* q, float* d, int32_t* neg_s4) {
  const hn::CappedTag<float, kBlock> df;
  const hn::Rebind<int32_t, decltype(df)> di;
  const hn::Rebind<int8_t, decltype(df)> d8;
  const size_t L = hn::Lanes(df);
  for (size_t b = 0; b < nb; ++b) {
    const float* xb = x + b * kBlock;
    auto amax = hn::Zero(df);
    for (size_t k = 0; k < kBlock; k += L) amax = hn::Max(amax, hn::Abs(hn::LoadU(df, xb + k)));
    const float dm = hn::GetLane(hn::MaxOfLanes(df, amax)) / 127.0f;
    const auto id = hn::Set(df, dm != 0.0f ? 1.0f / dm : 0.0f);
    d[b] = rwkv7::f16_to_f32(rwkv7::f32_to_f16(dm));
    for (size_t k = 0; k < kBlock; k += L) {
      const auto v = hn::Mul(hn::LoadU(df, xb + k), id);
      const auto t = hn::Trunc(v);  // v - t is exact: |frac| ≥ 0.5 ⇔ roundf goes away from 0
      const auto away = hn::Ge(hn::Abs(hn::Sub(v, t)), hn::Set(df, 0.5f));
      const auto r = hn::IfThenElse(away, hn::Add(t, hn::CopySign(hn::Set(df, 1.0f), v)), t);
      hn::StoreU(hn::DemoteTo(d8, hn::ConvertTo(di, r)), d8, q + b * kBlock + k);
    }
  }
  for (size_t i = 0; i < 8 * nb; ++i)
    neg_s4[i] = -(int32_t(q[4 * i]) + q[4 * i + 1] + q[4 * i + 2] + q[4 * i + 3]);
}

// Decode kernels for Q8_0 (34-byte blocks: f16 d, int8 q[32]) and Q4_0 (18-byte blocks: f16 d,
// 16 bytes: low nibble = element j, high nibble = element j + 16, q = nibble - 8).
template <bool kQ4>
constexpr size_t kBlockBytes = kQ4 ? 18 : 34;

// Portable: one row, one block per step, int16 widening multiply-add.
template <bool kQ4>
float DotBlocksGeneric(const uint8_t* row, const Q8Act& x) {
  const hn::CappedTag<int16_t, 16> d16;
  const hn::Rebind<int8_t, decltype(d16)> d8;
  const hn::Rebind<uint8_t, decltype(d16)> du8;
  const hn::RepartitionToWide<decltype(d16)> d32;
  const hn::RebindToFloat<decltype(d32)> df;
  const size_t L = hn::Lanes(d16);
  auto acc = hn::Zero(df);
  for (size_t b = 0; b < x.nb; ++b) {
    const uint8_t* blk = row + b * kBlockBytes<kQ4>;
    const int8_t* xb = x.q + b * kBlock;
    uint16_t h;
    __builtin_memcpy(&h, blk, 2);
    auto i0 = hn::Zero(d32), u = hn::Zero(d32);
    for (size_t k = 0; k < kBlock / 2; k += L) {
      hn::Vec<decltype(d16)> w0, w1;  // elements k.. and 16 + k..
      if constexpr (kQ4) {
        const auto v = hn::PromoteTo(d16, hn::LoadU(du8, blk + 2 + k));
        w0 = hn::Sub(hn::And(v, hn::Set(d16, 15)), hn::Set(d16, 8));
        w1 = hn::Sub(hn::ShiftRight<4>(v), hn::Set(d16, 8));
      } else {
        const auto* q = reinterpret_cast<const int8_t*>(blk + 2);
        w0 = hn::PromoteTo(d16, hn::LoadU(d8, q + k));
        w1 = hn::PromoteTo(d16, hn::LoadU(d8, q + kBlock / 2 + k));
      }
      i0 = hn::ReorderWidenMulAccumulate(d32, w0, hn::PromoteTo(d16, hn::LoadU(d8, xb + k)), i0, u);
      i0 = hn::ReorderWidenMulAccumulate(
          d32, w1, hn::PromoteTo(d16, hn::LoadU(d8, xb + kBlock / 2 + k)), i0, u);
    }
    acc = hn::MulAdd(hn::ConvertTo(df, hn::Add(i0, u)), hn::Set(df, rwkv7::f16_to_f32(h) * x.d[b]),
                     acc);
  }
  return hn::GetLane(hn::SumOfLanes(df, acc));
}

#if HWY_TARGET == HWY_AVX3_DL
// VNNI: vpdpbusd multiplies unsigned weight bytes (Q8_0: q ^ 0x80 = q + 128; Q4_0: the raw
// nibble = q + 8) by signed activation bytes, 4 products per int32 lane, into an accumulator
// that starts at -offset·(lane sum of x): exact Σ q_w·q_x per lane. Two blocks per 512-bit
// vector (lanes 0-7: block b, 8-15: block b + 1); their two f16 scales are broadcast straight
// from memory into one f16 vector (a gather per 16 blocks cost a third more time); lanes are
// scaled and summed in fp32, reduced once per row. R rows share each activation load.
template <size_t R, bool kQ4>
__attribute__((target(HWY_TARGET_STR ",avx512vnni"))) void MatvecVnni(const uint8_t* w,
                                                                      size_t stride, const Q8Act& x,
                                                                      float* y) {
  constexpr int BB = int(kBlockBytes<kQ4>);
  constexpr int kShift = kQ4 ? 3 : 7;  // offset 8 or 128
  const __m512i k80 = _mm512_set1_epi8(char(0x80));
  const __m512i k0F = _mm512_set1_epi8(0x0F);
  const __m512i nib_shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
  // Software prefetch a whole number of R-row groups ahead, at least 8 KB: without it the
  // hardware prefetchers leave 4 interleaved row streams at 10-18 GB/s (microbenchmark, 2
  // threads, 0.1B head shape); with it 25-30+ GB/s.
  const size_t group = R * stride;
  const uintptr_t ahead = group * std::max<size_t>(1, (8192 + group - 1) / group);
  __m512 acc[R];
  for (size_t r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    // Blocks b and b + 1 (kPair) or b alone (upper half zero: an odd block count).
    // clang does not pass the function's target attribute on to a lambda inside it.
#if defined(__clang__)
  auto step = [&](size_t b, auto kPair) __attribute__((target(HWY_TARGET_STR ",avx512vnni"))) {
#else
  auto step = [&](size_t b, auto kPair) {
#endif
    __m512i xq, c;
    __m512 xd;  // [x.d[b] ×8, x.d[b + 1] ×8]
    if constexpr (kPair) {
      xq = _mm512_loadu_si512(x.q + b * kBlock);
      c = _mm512_loadu_si512(x.neg_s4 + b * 8);
      xd = _mm512_insertf32x8(_mm512_set1_ps(x.d[b]), _mm256_set1_ps(x.d[b + 1]), 1);
    } else {
      xq = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i*)(x.q + b * kBlock)));
      c = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i*)(x.neg_s4 + b * 8)));
      xd = _mm512_maskz_mov_ps(0x00FF, _mm512_set1_ps(x.d[b]));
    }
    c = _mm512_slli_epi32(c, kShift);
    for (size_t r = 0; r < R; ++r) {
      const uint8_t* p = w + r * stride + b * BB;
      _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + ahead),
                   _MM_HINT_T0);
      uint16_t h0, h1 = 0;
      __builtin_memcpy(&h0, p, 2);
      if constexpr (kPair) __builtin_memcpy(&h1, p + BB, 2);
      const __m256i hd = _mm256_mask_set1_epi16(_mm256_set1_epi16(short(h0)), 0xFF00, short(h1));
      __m512i wq;  // block b in the low 256 bits, b + 1 (or zero) in the high
      if constexpr (kQ4) {
        const __m256i lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(p + 2)));
        __m256i hi = _mm256_setzero_si256();
        if constexpr (kPair)
          hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(p + 2 + BB)));
        const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        wq = _mm512_and_si512(_mm512_srlv_epi64(v, nib_shift), k0F);  // [lo | hi nibbles]
      } else {
        const __m256i lo = _mm256_loadu_si256((const __m256i*)(p + 2));
        __m256i hi = _mm256_setzero_si256();
        if constexpr (kPair) hi = _mm256_loadu_si256((const __m256i*)(p + 2 + BB));
        wq = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), k80);
      }
      const __m512i dot = _mm512_dpbusd_epi32(c, wq, xq);
      const __m512 scale = _mm512_mul_ps(_mm512_cvtph_ps(hd), xd);
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r]);
    }
  };
  size_t b = 0;
  for (; b + 2 <= x.nb; b += 2) step(b, std::true_type());
  if (b < x.nb) step(b, std::false_type());
  for (size_t r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
}
#endif

#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3
// AVX2 (and AVX-512 without VNNI): vpmaddubsw multiplies unsigned by signed bytes into int16
// pair sums, vpmaddwd by ones sums those pairs into int32 lanes of 4 products: exact, as no
// pair can saturate. Q4_0: the raw nibble (q + 8, ≤ 15) is the unsigned operand, and each lane
// starts from -8·(its 4 activations' sum), so it holds Σ q_w·q_x. Q8_0 (q_w down to -128):
// |q_w| against q_x carrying q_w's sign (ggml's sign trick; |pair| ≤ 2·128·127 < 2^15). One
// block per 256-bit vector, its fp32 scale product broadcast; R rows share each activation
// load, and each row is prefetched a whole number of R-row groups (≥ 8 KB) ahead, as in the
// VNNI kernel.
template <size_t R, bool kQ4>
void MatvecAvx2(const uint8_t* w, size_t stride, const Q8Act& x, float* y) {
  constexpr size_t BB = kBlockBytes<kQ4>;
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const size_t group = R * stride;
  const uintptr_t ahead = group * std::max<size_t>(1, (8192 + group - 1) / group);
  __m256 acc[R];
  for (size_t r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (size_t b = 0; b < x.nb; ++b) {
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + b * kBlock));
    __m256i offset = _mm256_setzero_si256();
    if constexpr (kQ4)
      offset = _mm256_slli_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.neg_s4 + b * 8)), 3);
    const float xd = x.d[b];
    for (size_t r = 0; r < R; ++r) {
      const uint8_t* p = w + r * stride + b * BB;
      if (kQ4 ? b % 2 == 0 : true)  // Q4_0: two 18-byte blocks fit one cache line
        _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + ahead),
                     _MM_HINT_T0);
      uint16_t h;
      __builtin_memcpy(&h, p, 2);
      __m256i dot;
      if constexpr (kQ4) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2));
        const __m256i wq = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), low4);
        dot = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(wq, xq), ones), offset);
      } else {
        const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2));
        const __m256i pairs =
            _mm256_maddubs_epi16(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));
        dot = _mm256_madd_epi16(pairs, ones);
      }
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(_cvtsh_ss(h) * xd), acc[r]);
    }
  }
  for (size_t r = 0; r < R; ++r) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    y[r] = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
  }
}
#endif

template <bool kQ4>
void Matvec(const uint8_t* w, size_t stride, size_t rows, const Q8Act& x, float* y) {
#if HWY_TARGET == HWY_AVX3_DL
  constexpr size_t R = 4;
  size_t r = 0;
  for (; r + R <= rows; r += R) MatvecVnni<R, kQ4>(w + r * stride, stride, x, y + r);
  switch (rows - r) {
    case 3:
      return MatvecVnni<3, kQ4>(w + r * stride, stride, x, y + r);
    case 2:
      return MatvecVnni<2, kQ4>(w + r * stride, stride, x, y + r);
    case 1:
      return MatvecVnni<1, kQ4>(w + r * stride, stride, x, y + r);
    default:
      return;
  }
#elif HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3
  constexpr size_t R = 4;
  size_t r = 0;
  for (; r + R <= rows; r += R) MatvecAvx2<R, kQ4>(w + r * stride, stride, x, y + r);
  switch (rows - r) {
    case 3:
      return MatvecAvx2<3, kQ4>(w + r * stride, stride, x, y + r);
    case 2:
      return MatvecAvx2<2, kQ4>(w + r * stride, stride, x, y + r);
    case 1:
      return MatvecAvx2<1, kQ4>(w + r * stride, stride, x, y + r);
    default:
      return;
  }
#else
  for (size_t r = 0; r < rows; ++r) y[r] = DotBlocksGeneric<kQ4>(w + r * stride, x);
#endif
}

void MatvecQ8(const uint8_t* w, size_t stride, size_t rows, const Q8Act& x, float* y) {
  Matvec<false>(w, stride, rows, x, y);
}
void MatvecQ4(const uint8_t* w, size_t stride, size_t rows, const Q8Act& x, float* y) {
  Matvec<true>(w, stride, rows, x, y);
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(DotRowsQ8);
HWY_EXPORT(MatvecQ8);
HWY_EXPORT(MatvecQ4);
HWY_EXPORT(QuantizeActQ8);

void quantize_act_q8(const float* x, size_t nb, int8_t* q, float* d, int32_t* neg_s4) {
  HWY_DYNAMIC_DISPATCH(QuantizeActQ8)(x, nb, q, d, neg_s4);
}

void q8_act_lane_sums(const int8_t* q, size_t nb, int32_t* neg_s4) {
  for (size_t i = 0; i < 8 * nb; ++i)
    neg_s4[i] = -(int32_t(q[4 * i]) + q[4 * i + 1] + q[4 * i + 2] + q[4 * i + 3]);
}

void q8_act_block_sums(const float* d, const int32_t* neg_s4, size_t nb, float* dsum) {
  for (size_t b = 0; b < nb; ++b) {
    int32_t s = 0;
    for (size_t k = 0; k < 8; ++k) s -= neg_s4[8 * b + k];
    dsum[b] = d[b] * float(s);
  }
}

void matvec_q8_0(const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x, float* y) {
  HWY_DYNAMIC_DISPATCH(MatvecQ8)(w, row_bytes, rows, x, y);
}

void matvec_q4_0(const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x, float* y) {
  HWY_DYNAMIC_DISPATCH(MatvecQ4)(w, row_bytes, rows, x, y);
}

template <bool kQ4>
static void matvec_ref(const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x, float* y) {
  for (size_t r = 0; r < rows; ++r) {
    float acc = 0;
    for (size_t b = 0; b < x.nb; ++b) {
      const uint8_t* blk = w + r * row_bytes + b * (kQ4 ? 18 : 34);
      uint16_t h;
      __builtin_memcpy(&h, blk, 2);
      int32_t sum = 0;
      for (size_t i = 0; i < 32; ++i) {
        const int32_t q = kQ4 ? (i < 16 ? blk[2 + i] & 15 : blk[2 + i - 16] >> 4) - 8
                              : int32_t(int8_t(blk[2 + i]));
        sum += q * x.q[32 * b + i];
      }
      acc += float(sum) * (rwkv7::f16_to_f32(h) * x.d[b]);
    }
    y[r] = acc;
  }
}

void matvec_q8_0_ref(const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x, float* y) {
  matvec_ref<false>(w, row_bytes, rows, x, y);
}

void matvec_q4_0_ref(const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x, float* y) {
  matvec_ref<true>(w, row_bytes, rows, x, y);
}

void dot_rows_q8(const int8_t* wq, const float* wd, const int8_t* xq, const float* xd, size_t nb,
                 size_t rows, float* out, size_t out_stride) {
  HWY_DYNAMIC_DISPATCH(DotRowsQ8)(wq, wd, xq, xd, nb, rows, out, out_stride);
}

}  // namespace rwkv7::cpu
#endif
