// AVX-512 VNNI and AVX2 products over Q4_K panels, AVX2 over Q5_K panels (q4k_panels_kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/q4k_panels_kernels.cpp"
#include "backends/cpu/q4k_panels_kernels.hpp"

#include <algorithm>
#include <cstring>

#include "backends/cpu/position_tiles.hpp"
#include "core/dtype.hpp"
#include "core/quant.hpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#ifndef RWKV7_Q4K_PANELS_LAYOUT
#define RWKV7_Q4K_PANELS_LAYOUT
namespace rwkv7::cpu {
// Bytes of one 32-block of a panel of w outputs, and of one super-block (layout in the header;
// five: Q5_K, with the plane of fifth bits after the scales and mins).
constexpr size_t q4k_block_bytes(size_t w, bool five = false) { return w * (five ? 22 : 18); }
constexpr size_t q4k_super_bytes(size_t w, bool five = false) {
  return 4 * w + 8 * q4k_block_bytes(w, five);
}
}  // namespace rwkv7::cpu
#endif

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3_DL
// 16 outputs per panel: one zmm of int32 lanes; per 32-block vpdpbusd adds each group of 4
// products of the 16 outputs' nibbles and 4 broadcast activation bytes straight into the lanes
// (exact Σ level·q), then one fp32 step by d·sc·x.d (d·sc exact in fp32: f16 × 6 bits) and
// the min term, as on AVX2.
constexpr size_t kWidth = 16;
size_t Q4KPanelWidth() { return kWidth; }
size_t Q5KPanelWidth() { return 0; }  // the vpdpbusd row kernels serve Q5_K here

template <size_t MR>
__attribute__((target(HWY_TARGET_STR ",avx512vnni"))) void Q4KPanelRows(
    const uint8_t* panel, size_t nsb, const int8_t* q, const float* d, const float* dsum,
    size_t cols, float* y, size_t ldy, size_t nn) {
  constexpr size_t kBlock = q4k_block_bytes(kWidth), kSuper = q4k_super_bytes(kWidth);
  const size_t nb = nsb * 8;
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512 acc[MR], macc[MR];
  for (size_t t = 0; t < MR; ++t) acc[t] = macc[t] = _mm512_setzero_ps();
  for (size_t s = 0; s < nsb; ++s) {
    const uint8_t* sup = panel + s * kSuper;
    const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sup)));
    const __m512 dminv =
        _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sup + 2 * kWidth)));
    for (size_t j = 0; j < 8; ++j) {
      const uint8_t* blk = sup + 4 * kWidth + j * kBlock;
      // Decode (MR = 1) ~4.6 KB ahead: a decode step does little work per block, and 4 blocks
      // ahead left 0.4B decode ~20% behind the row kernels (16: level with them); more
      // positions re-read the panel from cache.
      for (size_t line = 0; line < kBlock; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(blk) + (MR == 1 ? 16 : 4) * kBlock + line,
                     _MM_HINT_T0);
      __m512i v[8];
      for (size_t g = 0; g < 4; ++g) {
        const __m512i bytes = _mm512_loadu_si512(blk + g * 64);
        v[g] = _mm512_and_si512(bytes, low4);
        v[g + 4] = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low4);
      }
      const __m512 scales = _mm512_mul_ps(
          dv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                  _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * kWidth)))));
      const __m512 mins =
          _mm512_mul_ps(dminv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                                   reinterpret_cast<const __m128i*>(blk + 16 * kWidth + kWidth)))));
      const size_t b = s * 8 + j;
      for (size_t t = 0; t < MR; ++t) {
        const int8_t* xb = q + t * cols + b * 32;
        __m512i sums = _mm512_setzero_si512();
        for (size_t g = 0; g < 8; ++g) {  // inputs 4g.. for g < 4, 16 + 4(g - 4).. after
          int32_t four;
          std::memcpy(&four, xb + (g < 4 ? 4 * g : 16 + 4 * (g - 4)), 4);
          sums = _mm512_dpbusd_epi32(sums, v[g], _mm512_set1_epi32(four));
        }
        const float xd = d[t * nb + b];
        const float xsum = dsum[t * nb + b];  // x.d · Σq
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums),
                                 _mm512_mul_ps(scales, _mm512_set1_ps(xd)), acc[t]);
        macc[t] = _mm512_fmadd_ps(mins, _mm512_set1_ps(xsum), macc[t]);
      }
    }
  }
  const __mmask16 m = nn >= kWidth ? __mmask16(0xFFFF) : __mmask16((1u << nn) - 1);
  for (size_t t = 0; t < MR; ++t)
    _mm512_mask_storeu_ps(y + t * ldy, m, _mm512_sub_ps(acc[t], macc[t]));
}
constexpr bool kQ5KPanels = false;
template <bool kFive, size_t MR>
void Rows(const uint8_t* panel, size_t nsb, const int8_t* q, const float* d, const float* dsum,
          size_t cols, float* y, size_t ldy, size_t nn) {
  static_assert(!kFive, "no Q5_K panels with VNNI");
  Q4KPanelRows<MR>(panel, nsb, q, d, dsum, cols, y, ldy, nn);
}
#elif HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3
constexpr size_t kWidth = 8;
size_t Q4KPanelWidth() { return kWidth; }
size_t Q5KPanelWidth() { return kWidth; }

// MR positions × the panel's 8 outputs (one ymm of lanes): per 32-block the 8 nibble vectors
// (Q5_K: with the fifth bits at bit 4) are unpacked once and shared by the positions; per
// position 8 vpmaddubsw into int16 pairs, one vpmaddwd by the scales (Q5_K: one per 16 inputs,
// whose 4 pair sums reach 4·31·127·2 < 2^15: 8 would not fit), then acc += sums · d·x.d and
// macc += dmin·m · x.d·Σq.
template <bool kFive, size_t MR>
void Q45KPanelRows(const uint8_t* panel, size_t nsb, const int8_t* q, const float* d,
                   const float* dsum, size_t cols, float* y, size_t ldy, size_t nn) {
  constexpr size_t kBlock = q4k_block_bytes(kWidth, kFive);
  constexpr size_t kSuper = q4k_super_bytes(kWidth, kFive);
  const size_t nb = nsb * 8;
  const __m256i low4 = _mm256_set1_epi8(0x0F), bit4 = _mm256_set1_epi8(0x10);
  __m256 acc[MR];
  for (size_t t = 0; t < MR; ++t) acc[t] = _mm256_setzero_ps();
  for (size_t s = 0; s < nsb; ++s) {
    const uint8_t* sup = panel + s * kSuper;
    const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sup)));
    const __m256 dminv =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sup + 2 * kWidth)));
    for (size_t j = 0; j < 8; ++j) {
      const uint8_t* blk = sup + 4 * kWidth + j * kBlock;
      // Decode (MR = 1) ~4.6 KB ahead (8 blocks ahead: 0.4B decode 3-18% slower, 3 alternating
      // rounds); more positions re-read the panel from cache.
      for (size_t line = 0; line < kBlock; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(blk) + (MR == 1 ? 32 : 8) * kBlock + line,
                     _MM_HINT_T0);
      __m256i v[8];
      for (size_t g = 0; g < 4; ++g) {
        const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + g * 32));
        v[g] = _mm256_and_si256(bytes, low4);
        v[g + 4] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
      }
      if constexpr (kFive) {  // byte k of output j: bit g = input 4g + k, bit 4 + g = 16 + 4g + k
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 18 * kWidth));
        v[0] = _mm256_or_si256(v[0], _mm256_and_si256(_mm256_slli_epi16(h, 4), bit4));
        v[1] = _mm256_or_si256(v[1], _mm256_and_si256(_mm256_slli_epi16(h, 3), bit4));
        v[2] = _mm256_or_si256(v[2], _mm256_and_si256(_mm256_slli_epi16(h, 2), bit4));
        v[3] = _mm256_or_si256(v[3], _mm256_and_si256(_mm256_slli_epi16(h, 1), bit4));
        v[4] = _mm256_or_si256(v[4], _mm256_and_si256(h, bit4));
        v[5] = _mm256_or_si256(v[5], _mm256_and_si256(_mm256_srli_epi16(h, 1), bit4));
        v[6] = _mm256_or_si256(v[6], _mm256_and_si256(_mm256_srli_epi16(h, 2), bit4));
        v[7] = _mm256_or_si256(v[7], _mm256_and_si256(_mm256_srli_epi16(h, 3), bit4));
      }
      // int16 lanes 2o, 2o + 1 = sc_o (the pair sums of output o), and dmin_o·m_o in fp32.
      const __m128i scm = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 16 * kWidth));
      const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(scm, scm));
      const __m256 mins =
          _mm256_mul_ps(dminv, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                   reinterpret_cast<const __m128i*>(blk + 16 * kWidth + kWidth)))));
      const size_t b = s * 8 + j;
      for (size_t t = 0; t < MR; ++t) {
        const int8_t* xb = q + t * cols + b * 32;
        __m256i pairs[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (size_t g = 0; g < 8; ++g) {  // inputs 4g.. for g < 4, 16 + 4(g - 4).. after
          int32_t four;
          std::memcpy(&four, xb + (g < 4 ? 4 * g : 16 + 4 * (g - 4)), 4);
          __m256i& p = pairs[kFive ? g / 4 : 0];
          p = _mm256_add_epi16(p, _mm256_maddubs_epi16(v[g], _mm256_set1_epi32(four)));
        }
        __m256i sums = _mm256_madd_epi16(pairs[0], sc16);
        if constexpr (kFive) sums = _mm256_add_epi32(sums, _mm256_madd_epi16(pairs[1], sc16));
        const float xd = d[t * nb + b];
        const float xsum = dsum[t * nb + b];  // x.d · Σq
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dv, _mm256_set1_ps(xd)),
                                 acc[t]);
        acc[t] = _mm256_fnmadd_ps(mins, _mm256_set1_ps(xsum), acc[t]);
      }
    }
  }
  alignas(32) float tmp[kWidth];
  for (size_t t = 0; t < MR; ++t) {
    const __m256 r = acc[t];
    if (nn >= kWidth) {
      _mm256_storeu_ps(y + t * ldy, r);
    } else {
      _mm256_store_ps(tmp, r);
      std::memcpy(y + t * ldy, tmp, nn * sizeof(float));
    }
  }
}

constexpr bool kQ5KPanels = true;
template <bool kFive, size_t MR>
void Rows(const uint8_t* panel, size_t nsb, const int8_t* q, const float* d, const float* dsum,
          size_t cols, float* y, size_t ldy, size_t nn) {
  Q45KPanelRows<kFive, MR>(panel, nsb, q, d, dsum, cols, y, ldy, nn);
}
#endif

#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
// Panels [p0, p1) × T positions in tiles of 4 positions (Q45KPanelRows<kFive, ·> on AVX2; the
// VNNI kernel, Q4_K only, on AVX3_DL).
template <bool kFive>
void GemmQ45KPanels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                    const int8_t* q, const float* d, const float* dsum, size_t T, float* y,
                    size_t ldy) {
  const size_t nsb = cols / 256, nb = cols / 32;
  constexpr size_t MR = 4;
  for (size_t p = p0; p < p1; ++p) {
    const uint8_t* panel = panels + p * nsb * q4k_super_bytes(kWidth, kFive);
    const size_t o0 = p * kWidth, nn = std::min(kWidth, rows - o0);
    for_position_tiles<MR>(T, [&]<size_t R>(size_t t) {
      Rows<kFive, R>(panel, nsb, q + t * cols, d + t * nb, dsum + t * nb, cols, y + t * ldy + o0,
                     ldy, nn);
    });
  }
}

void GemmQ4KPanels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                   const int8_t* q, const float* d, const float* dsum, size_t T, float* y,
                   size_t ldy) {
  GemmQ45KPanels<false>(panels, rows, cols, p0, p1, q, d, dsum, T, y, ldy);
}
void GemmQ5KPanels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                   const int8_t* q, const float* d, const float* dsum, size_t T, float* y,
                   size_t ldy) {
  if constexpr (kQ5KPanels)
    GemmQ45KPanels<true>(panels, rows, cols, p0, p1, q, d, dsum, T, y, ldy);
  else  // no Q5_K panels are made with VNNI (the row kernels serve): reaching here is a bug
    HWY_ABORT("Q5_K panel product on a target without Q5_K panels");
}
#else
size_t Q4KPanelWidth() { return 0; }
size_t Q5KPanelWidth() { return 0; }

// No panels are made for these targets (their widths are 0): reaching these is a bug.
void GemmQ4KPanels(const uint8_t*, size_t, size_t, size_t, size_t, const int8_t*, const float*,
                   const float*, size_t, float*, size_t) {
  HWY_ABORT("Q4_K panel product on a target without Q4_K panels");
}
void GemmQ5KPanels(const uint8_t*, size_t, size_t, size_t, size_t, const int8_t*, const float*,
                   const float*, size_t, float*, size_t) {
  HWY_ABORT("Q5_K panel product on a target without Q5_K panels");
}
#endif

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(Q4KPanelWidth);
HWY_EXPORT(Q5KPanelWidth);
HWY_EXPORT(GemmQ4KPanels);
HWY_EXPORT(GemmQ5KPanels);

size_t q4k_panel_width() { return HWY_DYNAMIC_DISPATCH(Q4KPanelWidth)(); }
size_t q5k_panel_width() { return HWY_DYNAMIC_DISPATCH(Q5KPanelWidth)(); }

size_t q4k_panels_bytes(size_t rows, size_t cols) {
  const size_t w = q4k_panel_width();
  return w == 0 ? 0 : (rows + w - 1) / w * (cols / 256) * q4k_super_bytes(w);
}

size_t q5k_panels_bytes(size_t rows, size_t cols) {
  const size_t w = q5k_panel_width();
  return w == 0 ? 0 : (rows + w - 1) / w * (cols / 256) * q4k_super_bytes(w, true);
}

namespace {

// Q4_K (five = false) or Q5_K panels of the kernels in use (layout in the header).
void pack_k45_panels(const uint8_t* w, size_t rows, size_t cols, size_t p0, size_t p1, uint8_t* out,
                     bool five) {
  const DType type = five ? DType::Q5_K : DType::Q4_K;
  const size_t nsb = cols / 256, rb = size_t(row_bytes(type, int64_t(cols)));
  const size_t width = five ? q5k_panel_width() : q4k_panel_width();
  const size_t block_bytes = q4k_block_bytes(width, five),
               super_bytes = q4k_super_bytes(width, five);
  const size_t block_src = five ? kQ5KBytes : kQ4KBytes, qs_at = five ? kQ5KQsAt : kQ4KQsAt;
  for (size_t p = p0; p < p1; ++p) {
    for (size_t s = 0; s < nsb; ++s) {
      uint8_t* sup = out + (p * nsb + s) * super_bytes;
      for (size_t j = 0; j < width; ++j) {
        const size_t o = p * width + j;
        const uint8_t* src = o < rows ? w + o * rb + s * block_src : nullptr;
        // Padding outputs: levels 0 and scales 0 (weight 0).
        if (src) {
          std::memcpy(sup + 2 * j, src, 2);                           // d
          std::memcpy(sup + 2 * width + 2 * j, src + kK45DminAt, 2);  // dmin
        } else {
          std::memset(sup + 2 * j, 0, 2);
          std::memset(sup + 2 * width + 2 * j, 0, 2);
        }
        for (int b = 0; b < 8; ++b) {
          uint8_t* blk = sup + 4 * width + size_t(b) * block_bytes;
          uint8_t sc = 0, m = 0;
          if (src) k4_scale_min(b, src + kK45ScalesAt, &sc, &m);
          blk[16 * width + j] = sc;
          blk[16 * width + width + j] = m;
          // Block b's levels are the low (b even) or high (b odd) nibbles of the 32 qs bytes of
          // run b / 2 (core/quant.hpp); the panel byte of input i < 16 holds inputs i, 16 + i.
          const uint8_t* qs = src ? src + qs_at + 32 * (b / 2) : nullptr;
          const int shift = 4 * (b % 2);
          for (size_t g = 0; g < 4; ++g)
            for (size_t k = 0; k < 4; ++k) {
              const size_t i = 4 * g + k;
              const int lo = qs ? (qs[i] >> shift) & 15 : 0;
              const int hi = qs ? (qs[16 + i] >> shift) & 15 : 0;
              blk[g * width * 4 + j * 4 + k] = uint8_t(lo | (hi << 4));
            }
          if (!five) continue;
          // Q5_K: the fifth bit of input i of block b is bit b of qh[i] (core/quant.hpp); plane
          // byte k of output j: bit g = input 4g + k, bit 4 + g = input 16 + 4g + k.
          const uint8_t* qh = src ? src + kQ5KQhAt : nullptr;
          for (size_t k = 0; k < 4; ++k) {
            int bits = 0;
            for (size_t g = 0; g < 4 && qh; ++g)
              bits |= ((qh[4 * g + k] >> b) & 1) << g | ((qh[16 + 4 * g + k] >> b) & 1) << (4 + g);
            blk[18 * width + j * 4 + k] = uint8_t(bits);
          }
        }
      }
    }
  }
}

}  // namespace

void pack_q4k_panels(const uint8_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                     uint8_t* out) {
  pack_k45_panels(w, rows, cols, p0, p1, out, false);
}

void pack_q5k_panels(const uint8_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                     uint8_t* out) {
  pack_k45_panels(w, rows, cols, p0, p1, out, true);
}

void gemm_q5k_panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                     const int8_t* q, const float* d, const float* dsum, size_t T, float* y,
                     size_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemmQ5KPanels)(panels, rows, cols, p0, p1, q, d, dsum, T, y, ldy);
}

void gemm_q4k_panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                     const int8_t* q, const float* d, const float* dsum, size_t T, float* y,
                     size_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemmQ4KPanels)(panels, rows, cols, p0, p1, q, d, dsum, T, y, ldy);
}

static void gemm_q45k_panels_scalar(const uint8_t* panels, size_t rows, size_t cols, size_t p0,
                                    size_t p1, const int8_t* q, const float* d, const float* dsum,
                                    size_t T, double* y, size_t ldy, bool five) {
  (void)dsum;  // the activation sums are taken directly here
  const size_t nsb = cols / 256, nb = cols / 32;
  const size_t width = five ? q5k_panel_width() : q4k_panel_width();
  const size_t block_bytes = q4k_block_bytes(width, five),
               super_bytes = q4k_super_bytes(width, five);
  for (size_t p = p0; p < p1; ++p)
    for (size_t j = 0; j < width && p * width + j < rows; ++j)
      for (size_t t = 0; t < T; ++t) {
        double sum = 0;
        for (size_t s = 0; s < nsb; ++s) {
          const uint8_t* sup = panels + (p * nsb + s) * super_bytes;
          uint16_t h;
          std::memcpy(&h, sup + 2 * j, 2);
          const double dw = f16_to_f32(h);
          std::memcpy(&h, sup + 2 * width + 2 * j, 2);
          const double dmin = f16_to_f32(h);
          for (size_t b = 0; b < 8; ++b) {
            const uint8_t* blk = sup + 4 * width + b * block_bytes;
            const int8_t* xb = q + t * cols + (s * 8 + b) * 32;
            int64_t dot = 0, xsum = 0;
            for (size_t i = 0; i < 32; ++i) {
              const uint8_t byte = blk[(i % 16) / 4 * width * 4 + j * 4 + i % 4];
              int level = i < 16 ? byte & 15 : byte >> 4;
              if (five)
                level |= ((blk[18 * width + j * 4 + i % 4] >> ((i % 16) / 4 + 4 * (i >= 16))) & 1)
                         << 4;
              dot += int64_t(level) * xb[i];
              xsum += xb[i];
            }
            const double xd = d[t * nb + s * 8 + b];
            sum += xd * (dw * blk[16 * width + j] * double(dot) -
                         dmin * blk[16 * width + width + j] * double(xsum));
          }
        }
        y[t * ldy + p * width + j] = sum;
      }
}

void gemm_q4k_panels_scalar(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                            const int8_t* q, const float* d, const float* dsum, size_t T, double* y,
                            size_t ldy) {
  gemm_q45k_panels_scalar(panels, rows, cols, p0, p1, q, d, dsum, T, y, ldy, false);
}

void gemm_q5k_panels_scalar(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                            const int8_t* q, const float* d, const float* dsum, size_t T, double* y,
                            size_t ldy) {
  gemm_q45k_panels_scalar(panels, rows, cols, p0, p1, q, d, dsum, T, y, ldy, true);
}

}  // namespace rwkv7::cpu
#endif
