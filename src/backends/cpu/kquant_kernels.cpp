// Highway multi-target decode kernels for the K-quants and Q5_0/Q5_1/IQ4_NL (see
// kquant_kernels.hpp): this file is compiled once per target ISA.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/kquant_kernels.cpp"
#include "backends/cpu/kquant_kernels.hpp"

#include <algorithm>
#include <cstring>

#include "core/quant.hpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "rwkv7/error.hpp"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// A 32-block of Q5_0 / Q5_1 / IQ4_NL as int16 levels and its two coefficients
// (kquant_kernels.hpp), decoded with the type fixed so that the loops vectorise.
template <DType T>
inline void Decode32(const uint8_t* blk, int16_t* w, float* ws, float* wm) {
  uint16_t h;
  std::memcpy(&h, blk, 2);
  *ws = rwkv7::f16_to_f32(h);
  *wm = 0;
  if constexpr (T == DType::IQ4_NL) {
    for (int i = 0; i < 16; ++i) {
      w[i] = kIq4nlValues[blk[2 + i] & 0x0F];
      w[i + 16] = kIq4nlValues[blk[2 + i] >> 4];
    }
  } else {
    constexpr int kQh = T == DType::Q5_0 ? 2 : 4, kQs = kQh + 4, kOff = T == DType::Q5_0 ? 16 : 0;
    uint32_t qh;
    std::memcpy(&qh, blk + kQh, 4);
    for (int i = 0; i < 16; ++i) {
      w[i] = int16_t(((blk[kQs + i] & 0x0F) | int((qh >> i) & 1u) << 4) - kOff);
      w[i + 16] = int16_t(((blk[kQs + i] >> 4) | int((qh >> (i + 16)) & 1u) << 4) - kOff);
    }
    if constexpr (T == DType::Q5_1) {
      std::memcpy(&h, blk + 2, 2);
      *wm = rwkv7::f16_to_f32(h);
    }
  }
}

// Portable: each 32-block decoded to int16 levels, widened multiply-add against the int8
// activations, the block's two fp32 terms added per block. T = F32: any type, through the
// shared scalar decoder (the K-quants off x86); else one of the 32-block types.
template <DType T>
float DotRowGeneric(DType t, const uint8_t* row, const Q8Act& x) {
  const hn::CappedTag<int16_t, 16> d16;
  const hn::Rebind<int8_t, decltype(d16)> d8;
  const hn::RepartitionToWide<decltype(d16)> d32;
  const size_t L = hn::Lanes(d16);
  alignas(64) int16_t w[32];
  float acc = 0;
  for (size_t b = 0; b < x.nb; ++b) {
    float ws, wm;
    if constexpr (T == DType::F32)
      decode_block32(t, row, b, w, &ws, &wm);
    else
      Decode32<T>(row + b * (T == DType::Q5_0 ? 22 : T == DType::Q5_1 ? 24 : 18), w, &ws, &wm);
    auto i0 = hn::Zero(d32), u = hn::Zero(d32);
    for (size_t k = 0; k < 32; k += L)
      i0 = hn::ReorderWidenMulAccumulate(
          d32, hn::LoadU(d16, w + k), hn::PromoteTo(d16, hn::LoadU(d8, x.q + 32 * b + k)), i0, u);
    const int32_t sum = hn::GetLane(hn::SumOfLanes(d32, hn::Add(i0, u)));
    acc += ws * x.d[b] * float(sum) + wm * x.dsum[b];
  }
  return acc;
}

#if HWY_TARGET == HWY_AVX3_DL || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2
// The 12 scale bytes of a Q4_K/Q5_K super-block → bytes [sc 0-7 | m 0-7]: the rule of core's
// k4_scale_min applied to 32-bit lanes (x86 is little-endian). With a = the three words:
// sc 0-3 = a0 & 0x3f.., sc 4-7 = (a2 & 0x0f..) | (a0 >> 6 & 0x03..) << 4, m 0-3 = a1 & 0x3f..,
// m 4-7 = (a2 >> 4 & 0x0f..) | (a1 >> 6 & 0x03..) << 4. Reads 16 bytes (inside the block).
inline __m128i UnpackK4Scales(const uint8_t* s) {
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
  const __m128i y = _mm_shuffle_epi32(a, _MM_SHUFFLE(1, 1, 0, 0));  // [a0, a0, a1, a1]
  const __m128i x = _mm_shuffle_epi32(a, _MM_SHUFFLE(2, 1, 2, 0));  // lanes 1, 3: a2
  const __m128i even = _mm_and_si128(y, _mm_set1_epi32(0x3f3f3f3f));
  const __m128i odd = _mm_or_si128(
      _mm_and_si128(_mm_srlv_epi32(x, _mm_setr_epi32(0, 0, 0, 4)), _mm_set1_epi32(0x0f0f0f0f)),
      _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(y, 6), _mm_set1_epi32(0x03030303)), 4));
  return _mm_blend_epi32(even, odd, 0xA);
}

inline float Hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float F16At(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// Software prefetch a whole number of R-row groups ahead, at least 8 KB (as quant_kernels.cpp).
inline uintptr_t PrefetchAhead(size_t group) {
  return group * std::max<size_t>(1, (8192 + group - 1) / group);
}

template <size_t kBytes>
inline void PrefetchBlock(const uint8_t* p, uintptr_t ahead) {
  const auto a = reinterpret_cast<uintptr_t>(p) + ahead;
  for (size_t o = 0; o < kBytes; o += 64)
    _mm_prefetch(reinterpret_cast<const char*>(a + o), _MM_HINT_T0);
}
#endif

#if HWY_TARGET == HWY_AVX3_DL
// Q4_K / Q5_K with VNNI. Per super-block and run c of 32 qs bytes: the run broadcast to both
// 256-bit halves, shifted by 0 / 4 per half and masked gives elements 64c..64c+63 in order
// (low nibbles = sub-block 2c, high = 2c + 1); Q5_K ORs in bit 2c / 2c + 1 of qh as bit 4.
// vpdpbusd takes the unsigned levels × signed activations (no offset: the min is a separate
// term, -dmin·m_j·dsum_j, accumulated per super-block in 8 lanes). Lanes 0-7 of the product
// are scaled by d·sc_2c·x.d, lanes 8-15 by d·sc_2c+1·x.d (a permute of the 8 sub-block
// scales). R rows share each activation load.
template <size_t R, bool kQ5>
__attribute__((target(HWY_TARGET_STR ",avx512vnni"))) void MatvecQ45KVnni(const uint8_t* w,
                                                                          size_t stride,
                                                                          const Q8Act& x,
                                                                          float* y) {
  constexpr size_t BB = kQ5 ? kQ5KBytes : kQ4KBytes, QS = kQ5 ? kQ5KQsAt : kQ4KQsAt;
  const __m512i k0F = _mm512_set1_epi8(0x0F), k01 = _mm512_set1_epi8(1);
  const __m512i nib_shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
  const __m512i pair = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const uintptr_t ahead = PrefetchAhead(R * stride);
  __m512 acc[R], macc[R];
  for (size_t r = 0; r < R; ++r) acc[r] = macc[r] = _mm512_setzero_ps();
  for (size_t sb = 0; sb < x.nb / 8; ++sb) {
    const int8_t* xq = x.q + 256 * sb;
    // [x.d | x.dsum] of the super-block's 8 blocks.
    const __m512 xds = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(x.d + 8 * sb)),
                                          _mm256_loadu_ps(x.dsum + 8 * sb), 1);
    __m512i xv[4];
    for (int c = 0; c < 4; ++c) xv[c] = _mm512_loadu_si512(xq + 64 * c);
    for (size_t r = 0; r < R; ++r) {
      const uint8_t* b = w + r * stride + sb * BB;
      PrefetchBlock<BB>(b, ahead);
      const __m128i smv = UnpackK4Scales(b + kK45ScalesAt);
      uint32_t dd;  // f16 d, dmin
      std::memcpy(&dd, b, 4);
      const __m512 dm = _mm512_permutexvar_ps(  // [d ×8 | dmin ×8]
          pair, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(int(dd)))));
      // [d·sc_j·x.d_j | dmin·m_j·dsum_j], j < 8
      const __m512 sm16 =
          _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(smv)), _mm512_mul_ps(dm, xds));
      macc[r] = _mm512_add_ps(macc[r], sm16);  // the upper half is the min terms
      __m512i qhv = _mm512_setzero_si512();
      if constexpr (kQ5)
        qhv = _mm512_broadcast_i64x4(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + kQ5KQhAt)));
      for (int c = 0; c < 4; ++c) {
        const __m512i v = _mm512_broadcast_i64x4(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + QS + 32 * c)));
        __m512i wq = _mm512_and_si512(_mm512_srlv_epi64(v, nib_shift), k0F);
        if constexpr (kQ5) {
          const __m512i sh =
              _mm512_add_epi64(_mm512_set1_epi64(2 * c), _mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1));
          const __m512i hb = _mm512_and_si512(_mm512_srlv_epi64(qhv, sh), k01);
          wq = _mm512_or_si512(wq, _mm512_slli_epi64(hb, 4));
        }
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, xv[c]);
        const __m512 sc =
            _mm512_permutexvar_ps(_mm512_add_epi32(pair, _mm512_set1_epi32(2 * c)), sm16);
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc[r]);
      }
    }
  }
  for (size_t r = 0; r < R; ++r)
    y[r] = _mm512_reduce_add_ps(acc[r]) - Hsum256(_mm512_extractf32x8_ps(macc[r], 1));
}

// Q6_K with VNNI. Per half h of a super-block: ql[64h..64h+63] masked gives elements 0..63 of
// the half, shifted by 4 elements 64..127; qh[32h..] broadcast and shifted per 256-bit half
// by (0, 2) or (4, 6) supplies bits 4-5. vpdpbusd of the unsigned level (q + 32) starts from
// 32·(-lane sum) (Q8Act::neg_s4): exact Σ (q - 32)·x per 4 values. Each group of 4 lanes (16
// values) is scaled by d·sc_s·x.d[block].
template <size_t R>
__attribute__((target(HWY_TARGET_STR ",avx512vnni"))) void MatvecQ6KVnni(const uint8_t* w,
                                                                         size_t stride,
                                                                         const Q8Act& x, float* y) {
  const __m512i k0F = _mm512_set1_epi8(0x0F), k03 = _mm512_set1_epi8(3);
  const __m512i sh_lo = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
  const __m512i sh_hi = _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6);
  const __m512i rep4 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  const __m512i rep2 = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const uintptr_t ahead = PrefetchAhead(R * stride);
  __m512 acc[R];
  for (size_t r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (size_t sb = 0; sb < x.nb / 8; ++sb) {
    const int8_t* xq = x.q + 256 * sb;
    // x.d per 16-value sub-block: each block's scale twice.
    const __m512 xd16 =
        _mm512_permutexvar_ps(rep2, _mm512_castps256_ps512(_mm256_loadu_ps(x.d + 8 * sb)));
    __m512i xv[4], cv[4];
    for (int q = 0; q < 4; ++q) {
      xv[q] = _mm512_loadu_si512(xq + 64 * q);
      cv[q] = _mm512_slli_epi32(_mm512_loadu_si512(x.neg_s4 + 64 * sb + 16 * q), 5);
    }
    for (size_t r = 0; r < R; ++r) {
      const uint8_t* b = w + r * stride + sb * kQ6KBytes;
      PrefetchBlock<kQ6KBytes>(b, ahead);
      const __m512 sc16 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                                            reinterpret_cast<const __m128i*>(b + kQ6KScalesAt)))),
                                        _mm512_mul_ps(_mm512_set1_ps(F16At(b + kQ6KDAt)), xd16));
      for (int h = 0; h < 2; ++h) {
        const __m512i ql = _mm512_loadu_si512(b + 64 * h);
        const __m512i qhv = _mm512_broadcast_i64x4(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + kQ6KQhAt + 32 * h)));
        const __m512i wq[2] = {
            _mm512_or_si512(
                _mm512_and_si512(ql, k0F),
                _mm512_slli_epi64(_mm512_and_si512(_mm512_srlv_epi64(qhv, sh_lo), k03), 4)),
            _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi64(ql, 4), k0F),
                _mm512_slli_epi64(_mm512_and_si512(_mm512_srlv_epi64(qhv, sh_hi), k03), 4))};
        for (int k = 0; k < 2; ++k) {
          const int q = 2 * h + k;
          const __m512i dot = _mm512_dpbusd_epi32(cv[q], wq[k], xv[q]);
          const __m512 sc =
              _mm512_permutexvar_ps(_mm512_add_epi32(rep4, _mm512_set1_epi32(4 * q)), sc16);
          acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc[r]);
        }
      }
    }
  }
  for (size_t r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
}
#endif

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2
// Q4_K / Q5_K with AVX2 (ggml's pattern): vpmaddubsw multiplies the unsigned levels by the
// signed activations into int16 pairs (|31·127·2| fits), vpmaddwd with ones sums them into
// int32 lanes of 4 values; one fp32 multiply-add per 32-value sub-block with its broadcast
// scale d·sc_j·x.d[j]. The min term as in the VNNI kernel.
template <size_t R, bool kQ5>
void MatvecQ45KAvx2(const uint8_t* w, size_t stride, const Q8Act& x, float* y) {
  constexpr size_t BB = kQ5 ? kQ5KBytes : kQ4KBytes, QS = kQ5 ? kQ5KQsAt : kQ4KQsAt;
  const __m256i k0F = _mm256_set1_epi8(0x0F), k01 = _mm256_set1_epi8(1);
  const __m256i ones = _mm256_set1_epi16(1);
  const uintptr_t ahead = PrefetchAhead(R * stride);
  __m256 acc[R], macc[R];
  for (size_t r = 0; r < R; ++r) acc[r] = macc[r] = _mm256_setzero_ps();
  for (size_t sb = 0; sb < x.nb / 8; ++sb) {
    const int8_t* xq = x.q + 256 * sb;
    const __m256 xd = _mm256_loadu_ps(x.d + 8 * sb), xs = _mm256_loadu_ps(x.dsum + 8 * sb);
    for (size_t r = 0; r < R; ++r) {
      const uint8_t* b = w + r * stride + sb * BB;
      PrefetchBlock<BB>(b, ahead);
      const __m128i smv = UnpackK4Scales(b + kK45ScalesAt);
      alignas(32) float s8[8];
      _mm256_store_ps(s8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(smv)),
                                        _mm256_mul_ps(_mm256_set1_ps(F16At(b)), xd)));
      const __m256 mnf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(smv, 8)));
      macc[r] =
          _mm256_fmadd_ps(mnf, _mm256_mul_ps(_mm256_set1_ps(F16At(b + kK45DminAt)), xs), macc[r]);
      __m256i qh = _mm256_setzero_si256();
      if constexpr (kQ5) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + kQ5KQhAt));
      for (int c = 0; c < 4; ++c) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + QS + 32 * c));
        __m256i lo = _mm256_and_si256(raw, k0F);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), k0F);
        if constexpr (kQ5) {
          const __m128i s0 = _mm_cvtsi32_si128(2 * c), s1 = _mm_cvtsi32_si128(2 * c + 1);
          lo = _mm256_or_si256(
              lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, s0), k01), 4));
          hi = _mm256_or_si256(
              hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, s1), k01), 4));
        }
        const __m256i xl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 64 * c));
        const __m256i xh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 64 * c + 32));
        const __m256i il = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), ones);
        const __m256i ih = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), ones);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(il), _mm256_broadcast_ss(s8 + 2 * c), acc[r]);
        acc[r] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(ih), _mm256_broadcast_ss(s8 + 2 * c + 1), acc[r]);
      }
    }
  }
  for (size_t r = 0; r < R; ++r) y[r] = Hsum256(acc[r]) - Hsum256(macc[r]);
}

// Q6_K with AVX2: per half, the four 32-value groups (ql low / ql+32 low / ql high / ql+32
// high nibbles, with qh bits 0-1 / 2-3 / 4-5 / 6-7 as bits 4-5) through vpmaddubsw into int16
// pairs, less 32·(pair sum of x) (the offset 32, from vpmaddubsw of 32s with the activations,
// made once per super-block for all R rows: |63·127·2| + 32·254 fits int16), then vpmaddwd
// with the 16-value scales (sc_2q in the low 128 bits, sc_2q+1 in the high: one byte
// shuffle per block) into exact int32 lanes; one fp32 multiply-add per block by d·x.d[q].
template <size_t R>
void MatvecQ6KAvx2(const uint8_t* w, size_t stride, const Q8Act& x, float* y) {
  const __m256i k0F = _mm256_set1_epi8(0x0F), k30 = _mm256_set1_epi8(0x30);
  const __m256i k32 = _mm256_set1_epi8(32);
  // Byte shuffles picking int16 scale 2q' (low 128 bits) and 2q'+1 (high) of [sc × 8 | same],
  // q' = q mod 4.
  const __m256i pick[4] = {
      _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
                       2, 3, 2, 3, 2, 3),
      _mm256_setr_epi8(4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7,
                       6, 7, 6, 7, 6, 7),
      _mm256_setr_epi8(8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10,
                       11, 10, 11, 10, 11, 10, 11, 10, 11),
      _mm256_setr_epi8(12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 14, 15, 14,
                       15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15)};
  const uintptr_t ahead = PrefetchAhead(R * stride);
  __m256 acc[R];
  for (size_t r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (size_t sb = 0; sb < x.nb / 8; ++sb) {
    const int8_t* xq = x.q + 256 * sb;
    const __m256 xd = _mm256_loadu_ps(x.d + 8 * sb);
    __m256i xv[8], off[8];  // the activations and 32·(pair sums) of the 8 blocks
    for (int q = 0; q < 8; ++q) {
      xv[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32 * q));
      off[q] = _mm256_maddubs_epi16(k32, xv[q]);
    }
    for (size_t r = 0; r < R; ++r) {
      const uint8_t* b = w + r * stride + sb * kQ6KBytes;
      PrefetchBlock<kQ6KBytes>(b, ahead);
      alignas(32) float dxd[8];  // d·x.d[q]
      _mm256_store_ps(dxd, _mm256_mul_ps(_mm256_set1_ps(F16At(b + kQ6KDAt)), xd));
      const __m256i sc16 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + kQ6KScalesAt)));
      const __m256i sc_half[2] = {_mm256_permute4x64_epi64(sc16, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm256_permute4x64_epi64(sc16, _MM_SHUFFLE(3, 2, 3, 2))};
      for (int h = 0; h < 2; ++h) {
        const __m256i qla = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h));
        const __m256i qlb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h + 32));
        const __m256i qh =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + kQ6KQhAt + 32 * h));
        const __m256i e[4] = {_mm256_or_si256(_mm256_and_si256(qla, k0F),
                                              _mm256_and_si256(_mm256_slli_epi16(qh, 4), k30)),
                              _mm256_or_si256(_mm256_and_si256(qlb, k0F),
                                              _mm256_and_si256(_mm256_slli_epi16(qh, 2), k30)),
                              _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qla, 4), k0F),
                                              _mm256_and_si256(qh, k30)),
                              _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qlb, 4), k0F),
                                              _mm256_and_si256(_mm256_srli_epi16(qh, 2), k30))};
        for (int g = 0; g < 4; ++g) {
          const int q = 4 * h + g;  // 32-block within the super-block
          const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(e[g], xv[q]), off[q]);
          const __m256i sc = _mm256_shuffle_epi8(sc_half[h], pick[g]);
          const __m256i i32 = _mm256_madd_epi16(p16, sc);
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), _mm256_broadcast_ss(dxd + q), acc[r]);
        }
      }
    }
  }
  for (size_t r = 0; r < R; ++r) y[r] = Hsum256(acc[r]);
}
#endif

#if HWY_TARGET == HWY_AVX3_DL || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2
// Q5_0 / Q5_1 with AVX2, one row: per block the 16 qs bytes give levels 0-15 (low nibbles)
// and 16-31 (high), the 32 qh bits become 0x10 per byte (broadcast, byte shuffle, bit test),
// vpmaddubsw + vpmaddwd against the activations; Q5_0's offset 16 comes off with
// 16·(-lane sum), Q5_1's m·dsum is added per block.
template <bool kQ51>
float DotRowQ5Avx2(const uint8_t* row, const Q8Act& x) {
  constexpr size_t BB = kQ51 ? 24 : 22, QH = kQ51 ? 4 : 2;
  const __m256i k0F = _mm256_set1_epi8(0x0F), k10 = _mm256_set1_epi8(0x10);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                          2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201ull));
  __m256 acc = _mm256_setzero_ps();
  float mins = 0;
  for (size_t b = 0; b < x.nb; ++b) {
    const uint8_t* blk = row + b * BB;
    const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + QH + 4));
    __m256i lv = _mm256_and_si256(
        _mm256_inserti128_si256(_mm256_castsi128_si256(qs), _mm_srli_epi16(qs, 4), 1), k0F);
    int32_t qh;
    std::memcpy(&qh, blk + QH, 4);
    const __m256i hb = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread);
    lv = _mm256_or_si256(lv,
                         _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, bit), bit), k10));
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + 32 * b));
    __m256i i32 = _mm256_madd_epi16(_mm256_maddubs_epi16(lv, xv), ones);
    if constexpr (!kQ51) {
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.neg_s4 + 8 * b));
      i32 = _mm256_add_epi32(i32, _mm256_slli_epi32(c, 4));
    } else {
      mins += F16At(blk + 2) * x.dsum[b];
    }
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32), _mm256_set1_ps(F16At(blk) * x.d[b]), acc);
  }
  return Hsum256(acc) + mins;
}
#endif

// Rows in groups of 4 (then 3, 2, 1) through K::Run<R>.
template <class K>
void RunRows(const uint8_t* w, size_t stride, size_t rows, const Q8Act& x, float* y) {
  size_t r = 0;
  for (; r + 4 <= rows; r += 4) K::template Run<4>(w + r * stride, stride, x, y + r);
  switch (rows - r) {
    case 3:
      return K::template Run<3>(w + r * stride, stride, x, y + r);
    case 2:
      return K::template Run<2>(w + r * stride, stride, x, y + r);
    case 1:
      return K::template Run<1>(w + r * stride, stride, x, y + r);
    default:
      return;
  }
}

#if HWY_TARGET == HWY_AVX3_DL
template <bool kQ5>
struct Q45K {
  template <size_t R>
  static void Run(const uint8_t* w, size_t s, const Q8Act& x, float* y) {
    MatvecQ45KVnni<R, kQ5>(w, s, x, y);
  }
};
struct Q6K {
  template <size_t R>
  static void Run(const uint8_t* w, size_t s, const Q8Act& x, float* y) {
    MatvecQ6KVnni<R>(w, s, x, y);
  }
};
#elif HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2
template <bool kQ5>
struct Q45K {
  template <size_t R>
  static void Run(const uint8_t* w, size_t s, const Q8Act& x, float* y) {
    MatvecQ45KAvx2<R, kQ5>(w, s, x, y);
  }
};
struct Q6K {
  template <size_t R>
  static void Run(const uint8_t* w, size_t s, const Q8Act& x, float* y) {
    MatvecQ6KAvx2<R>(w, s, x, y);
  }
};
#endif

void MatvecKQuant(DType t, const uint8_t* w, size_t stride, size_t rows, const Q8Act& x, float* y) {
#if HWY_TARGET == HWY_AVX3_DL || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2
  if (t == DType::Q4_K) return RunRows<Q45K<false>>(w, stride, rows, x, y);
  if (t == DType::Q5_K) return RunRows<Q45K<true>>(w, stride, rows, x, y);
  if (t == DType::Q6_K) return RunRows<Q6K>(w, stride, rows, x, y);
#endif
#if HWY_TARGET == HWY_AVX3_DL || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2
  if (t == DType::Q5_0 || t == DType::Q5_1) {
    for (size_t r = 0; r < rows; ++r)
      y[r] = t == DType::Q5_0 ? DotRowQ5Avx2<false>(w + r * stride, x)
                              : DotRowQ5Avx2<true>(w + r * stride, x);
    return;
  }
#endif
  float (*dot)(DType, const uint8_t*, const Q8Act&) = DotRowGeneric<DType::F32>;
  if (t == DType::Q5_0) dot = DotRowGeneric<DType::Q5_0>;
  if (t == DType::Q5_1) dot = DotRowGeneric<DType::Q5_1>;
  if (t == DType::IQ4_NL) dot = DotRowGeneric<DType::IQ4_NL>;
  for (size_t r = 0; r < rows; ++r) y[r] = dot(t, w + r * stride, x);
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(MatvecKQuant);

bool matvec_kquant_supports(DType t) {
  return t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K || t == DType::Q5_0 ||
         t == DType::Q5_1 || t == DType::IQ4_NL;
}

void decode_block32(DType t, const uint8_t* row, size_t b, int16_t* w, float* ws, float* wm) {
  *wm = 0;
  if (is_k_quant(t)) {
    const uint8_t* blk = row + (b / 8) * quant_block_bytes(t);
    const int j = int(b % 8);  // 32-block within the super-block
    if (t == DType::Q6_K) {
      const auto* sc = reinterpret_cast<const int8_t*>(blk + kQ6KScalesAt);
      *ws = f16_at(blk + kQ6KDAt);
      for (int i = 0; i < 32; ++i) {
        const int e = 32 * j + i;
        w[i] = int16_t((q6k_level(blk, e) - 32) * sc[e / 16]);
      }
      return;
    }
    uint8_t s, m;
    k4_scale_min(j, blk + kK45ScalesAt, &s, &m);
    *ws = f16_at(blk) * float(s);
    *wm = -(f16_at(blk + kK45DminAt) * float(m));
    for (int i = 0; i < 32; ++i) w[i] = int16_t(q45k_level(blk, 32 * j + i, t == DType::Q5_K));
    return;
  }
  const uint8_t* blk = row + b * quant_block_bytes(t);
  *ws = f16_at(blk);
  const uint8_t* qs = blk + (t == DType::Q5_0 ? 6 : t == DType::Q5_1 ? 8 : 2);
  uint32_t qh = 0;
  if (t != DType::IQ4_NL) std::memcpy(&qh, blk + (t == DType::Q5_0 ? 2 : 4), 4);
  for (int i = 0; i < 32; ++i) {
    const int nib = i < 16 ? qs[i] & 0x0F : qs[i - 16] >> 4;
    const int q = nib | int((qh >> i) & 1u) << 4;
    w[i] = int16_t(t == DType::IQ4_NL ? kIq4nlValues[nib] : t == DType::Q5_0 ? q - 16 : q);
  }
  if (t == DType::Q5_1) *wm = f16_at(blk + 2);
}

void matvec_kquant(DType t, const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x,
                   float* y) {
  if (!matvec_kquant_supports(t))
    throw Error("matvec_kquant: " + dtype_name(t) + " is not one of its types");
  if (!x.dsum) throw Error("matvec_kquant: the activation's block sums (dsum) are missing");
  if (is_k_quant(t) && x.nb % 8 != 0)
    throw Error("matvec_kquant: " + dtype_name(t) + " rows need a multiple of 256 columns");
  HWY_DYNAMIC_DISPATCH(MatvecKQuant)(t, w, row_bytes, rows, x, y);
}

void matvec_kquant_ref(DType t, const uint8_t* w, size_t row_bytes, size_t rows, const Q8Act& x,
                       float* y) {
  int16_t q[32];
  for (size_t r = 0; r < rows; ++r) {
    float acc = 0;
    for (size_t b = 0; b < x.nb; ++b) {
      float ws, wm;
      decode_block32(t, w + r * row_bytes, b, q, &ws, &wm);
      int32_t sum = 0;
      for (size_t i = 0; i < 32; ++i) sum += int32_t(q[i]) * x.q[32 * b + i];
      acc += ws * x.d[b] * float(sum) + wm * x.dsum[b];
    }
    y[r] = acc;
  }
}

}  // namespace rwkv7::cpu
#endif
