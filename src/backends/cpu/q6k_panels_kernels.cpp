// AVX2 products over Q6_K panels (see q6k_panels_kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/q6k_panels_kernels.cpp"
#include "backends/cpu/q6k_panels_kernels.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "backends/cpu/position_tiles.hpp"
#include "core/dtype.hpp"
#include "core/quant.hpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#ifndef RWKV7_Q6K_PANELS_LAYOUT
#define RWKV7_Q6K_PANELS_LAYOUT
namespace rwkv7::cpu {
// Bytes of one 32-block of a panel of w outputs, and of one super-block (layout in the header).
constexpr size_t q6k_block_bytes(size_t w) { return w * 26; }
constexpr size_t q6k_super_bytes(size_t w) { return 2 * w + 8 * q6k_block_bytes(w); }
constexpr size_t kQ6KLowAt = 0, kQ6KHighAt = 16, kQ6KScaleAt = 24;  // × w bytes into a block

// Per position t and 16-input sub-block s: the int16 pair -32·(x[4g] + x[4g + 1]) and
// -32·(x[4g + 2] + x[4g + 3]) summed over its 4 groups g (|·| ≤ 32·8·127), as one int32 (low
// half first): the offset -32·x that vpmaddubsw's pair lanes start from.
inline void q6k_offsets(const int8_t* q, size_t T, size_t cols, int32_t* off) {
  for (size_t t = 0; t < T; ++t)
    for (size_t s = 0; s < cols / 16; ++s) {
      const int8_t* x = q + t * cols + 16 * s;
      int lo = 0, hi = 0;
      for (size_t g = 0; g < 4; ++g) {
        lo += x[4 * g] + x[4 * g + 1];
        hi += x[4 * g + 2] + x[4 * g + 3];
      }
      off[t * (cols / 16) + s] = int32_t(uint32_t(uint16_t(int16_t(-32 * lo))) |
                                         uint32_t(uint16_t(int16_t(-32 * hi))) << 16);
    }
}
}  // namespace rwkv7::cpu
#endif

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3
constexpr size_t kWidth = 8;
size_t Q6KPanelWidth() { return kWidth; }

// MR positions × the panel's 8 outputs (one ymm of lanes): per 32-block the 8 level vectors are
// assembled once (low nibbles | top 2 bits at bits 4-5) and shared by the positions; per
// position and sub-block 4 vpmaddubsw summed in int16 from the offset (exact: header), one
// vpmaddwd by the scales, then acc += sums · d·x.d.
template <size_t MR>
void Q6KPanelRows(const uint8_t* panel, size_t nsb, const int8_t* q, const float* d,
                  const int32_t* off, size_t cols, float* y, size_t ldy, size_t nn) {
  constexpr size_t kBlock = q6k_block_bytes(kWidth), kSuper = q6k_super_bytes(kWidth);
  const size_t nb = nsb * 8, ns = nsb * 16;
  const __m256i low4 = _mm256_set1_epi8(0x0F), top2 = _mm256_set1_epi8(0x30);
  __m256 acc[MR];
  for (size_t t = 0; t < MR; ++t) acc[t] = _mm256_setzero_ps();
  for (size_t s = 0; s < nsb; ++s) {
    const uint8_t* sup = panel + s * kSuper;
    const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sup)));
    for (size_t j = 0; j < 8; ++j) {
      const uint8_t* blk = sup + 2 * kWidth + j * kBlock;
      // Decode (MR = 1) ~5 KB ahead, as the Q4_K panels; more positions re-read from cache.
      for (size_t line = 0; line < kBlock; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(blk) + (MR == 1 ? 24 : 6) * kBlock + line,
                     _MM_HINT_T0);
      const __m256i h0 =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQ6KHighAt * kWidth));
      const __m256i h1 =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQ6KHighAt * kWidth + 32));
      // Top 2 bits at bits 4-5 for inputs 4g.. (g < 4) and 16 + 4g.. (g + 4).
      const __m256i top[8] = {_mm256_and_si256(_mm256_slli_epi16(h0, 4), top2),
                              _mm256_and_si256(_mm256_slli_epi16(h1, 4), top2),
                              _mm256_and_si256(h0, top2),
                              _mm256_and_si256(h1, top2),
                              _mm256_and_si256(_mm256_slli_epi16(h0, 2), top2),
                              _mm256_and_si256(_mm256_slli_epi16(h1, 2), top2),
                              _mm256_and_si256(_mm256_srli_epi16(h0, 2), top2),
                              _mm256_and_si256(_mm256_srli_epi16(h1, 2), top2)};
      __m256i v[8];
      for (size_t g = 0; g < 4; ++g) {
        const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + g * 32));
        v[g] = _mm256_or_si256(_mm256_and_si256(bytes, low4), top[g]);
        v[g + 4] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4), top[g + 4]);
      }
      // int16 lanes 2o, 2o + 1 = sc_o of the sub-block (the pair sums of output o).
      const __m128i sc =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kQ6KScaleAt * kWidth));
      const __m256i sc0 = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(sc, sc));
      const __m256i sc1 = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(sc, sc));
      const size_t b = s * 8 + j;
      for (size_t t = 0; t < MR; ++t) {
        const int8_t* xb = q + t * cols + b * 32;
        __m256i p0 = _mm256_set1_epi32(off[t * ns + 2 * b]);
        __m256i p1 = _mm256_set1_epi32(off[t * ns + 2 * b + 1]);
        for (size_t g = 0; g < 4; ++g) {
          int32_t four;
          std::memcpy(&four, xb + 4 * g, 4);
          p0 = _mm256_add_epi16(p0, _mm256_maddubs_epi16(v[g], _mm256_set1_epi32(four)));
          std::memcpy(&four, xb + 16 + 4 * g, 4);
          p1 = _mm256_add_epi16(p1, _mm256_maddubs_epi16(v[g + 4], _mm256_set1_epi32(four)));
        }
        const __m256i sums =
            _mm256_add_epi32(_mm256_madd_epi16(p0, sc0), _mm256_madd_epi16(p1, sc1));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums),
                                 _mm256_mul_ps(dv, _mm256_set1_ps(d[t * nb + b])), acc[t]);
      }
    }
  }
  alignas(32) float tmp[kWidth];
  for (size_t t = 0; t < MR; ++t) {
    if (nn >= kWidth) {
      _mm256_storeu_ps(y + t * ldy, acc[t]);
    } else {
      _mm256_store_ps(tmp, acc[t]);
      std::memcpy(y + t * ldy, tmp, nn * sizeof(float));
    }
  }
}

void GemmQ6KPanels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                   const int8_t* q, const float* d, size_t T, float* y, size_t ldy) {
  const size_t nsb = cols / 256, nb = cols / 32, ns = cols / 16;
  thread_local std::vector<int32_t> off;
  off.resize(T * ns);
  q6k_offsets(q, T, cols, off.data());
  constexpr size_t MR = 4;
  for (size_t p = p0; p < p1; ++p) {
    const uint8_t* panel = panels + p * nsb * q6k_super_bytes(kWidth);
    const size_t o0 = p * kWidth, nn = std::min(kWidth, rows - o0);
    for_position_tiles<MR>(T, [&]<size_t R>(size_t t) {
      Q6KPanelRows<R>(panel, nsb, q + t * cols, d + t * nb, off.data() + t * ns, cols,
                      y + t * ldy + o0, ldy, nn);
    });
  }
}
#else
size_t Q6KPanelWidth() { return 0; }

void GemmQ6KPanels(const uint8_t*, size_t, size_t, size_t, size_t, const int8_t*, const float*,
                   size_t, float*, size_t) {
  // No panels are made for these targets (their width is 0): reaching here is a bug.
  HWY_ABORT("Q6_K panel product on a target without Q6_K panels");
}
#endif

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(Q6KPanelWidth);
HWY_EXPORT(GemmQ6KPanels);

size_t q6k_panel_width() { return HWY_DYNAMIC_DISPATCH(Q6KPanelWidth)(); }

size_t q6k_panels_bytes(size_t rows, size_t cols) {
  const size_t w = q6k_panel_width();
  return w == 0 ? 0 : (rows + w - 1) / w * (cols / 256) * q6k_super_bytes(w);
}

void pack_q6k_panels(const uint8_t* w, size_t rows, size_t cols, size_t p0, size_t p1,
                     uint8_t* out) {
  const size_t nsb = cols / 256, rb = size_t(row_bytes(DType::Q6_K, int64_t(cols)));
  const size_t width = q6k_panel_width(), block_bytes = q6k_block_bytes(width);
  int levels[256];
  for (size_t p = p0; p < p1; ++p) {
    for (size_t s = 0; s < nsb; ++s) {
      uint8_t* sup = out + (p * nsb + s) * q6k_super_bytes(width);
      for (size_t j = 0; j < width; ++j) {
        const size_t o = p * width + j;
        const uint8_t* src = o < rows ? w + o * rb + s * kQ6KBytes : nullptr;
        // Padding outputs: d 0, scales 0, levels 32 (weight 0 either way).
        if (src)
          std::memcpy(sup + 2 * j, src + kQ6KDAt, 2);
        else
          std::memset(sup + 2 * j, 0, 2);
        for (int e = 0; e < 256; ++e) levels[e] = src ? q6k_level(src, e) : 32;
        for (size_t b = 0; b < 8; ++b) {
          uint8_t* blk = sup + 2 * width + b * block_bytes;
          const int* lv = levels + 32 * b;
          for (size_t half = 0; half < 2; ++half)
            blk[kQ6KScaleAt * width + half * width + j] =
                src ? src[kQ6KScalesAt + 2 * b + half] : 0;
          for (size_t g = 0; g < 4; ++g)
            for (size_t k = 0; k < 4; ++k)
              blk[kQ6KLowAt * width + g * width * 4 + j * 4 + k] =
                  uint8_t((lv[4 * g + k] & 15) | (lv[16 + 4 * g + k] & 15) << 4);
          for (size_t h = 0; h < 2; ++h)
            for (size_t k = 0; k < 4; ++k)
              blk[kQ6KHighAt * width + h * width * 4 + j * 4 + k] =
                  uint8_t((lv[4 * h + k] >> 4) | (lv[16 + 4 * h + k] >> 4) << 2 |
                          (lv[4 * (h + 2) + k] >> 4) << 4 | (lv[16 + 4 * (h + 2) + k] >> 4) << 6);
        }
      }
    }
  }
}

void gemm_q6k_panels(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                     const int8_t* q, const float* d, const int32_t* corr, size_t T, float* y,
                     size_t ldy) {
  (void)corr;  // the offsets are taken from q per 16 inputs (q6k_offsets)
  HWY_DYNAMIC_DISPATCH(GemmQ6KPanels)(panels, rows, cols, p0, p1, q, d, T, y, ldy);
}

void gemm_q6k_panels_scalar(const uint8_t* panels, size_t rows, size_t cols, size_t p0, size_t p1,
                            const int8_t* q, const float* d, size_t T, double* y, size_t ldy) {
  const size_t nsb = cols / 256, nb = cols / 32, width = q6k_panel_width();
  const size_t block_bytes = q6k_block_bytes(width);
  for (size_t p = p0; p < p1; ++p)
    for (size_t j = 0; j < width && p * width + j < rows; ++j)
      for (size_t t = 0; t < T; ++t) {
        double sum = 0;
        for (size_t s = 0; s < nsb; ++s) {
          const uint8_t* sup = panels + (p * nsb + s) * q6k_super_bytes(width);
          uint16_t h;
          std::memcpy(&h, sup + 2 * j, 2);
          const double dw = f16_to_f32(h);
          for (size_t b = 0; b < 8; ++b) {
            const uint8_t* blk = sup + 2 * width + b * block_bytes;
            const int8_t* xb = q + t * cols + (s * 8 + b) * 32;
            int64_t dot = 0;
            for (size_t i = 0; i < 32; ++i) {
              const size_t k = i % 4, g = (i % 16) / 4;
              const uint8_t low = blk[kQ6KLowAt * width + g * width * 4 + j * 4 + k];
              const uint8_t top = blk[kQ6KHighAt * width + (g % 2) * width * 4 + j * 4 + k];
              const int shift = 2 * (i >= 16) + 4 * (g >= 2);
              const int level = (i < 16 ? low & 15 : low >> 4) | ((top >> shift) & 3) << 4;
              const auto sc = int8_t(blk[kQ6KScaleAt * width + (i / 16) * width + j]);
              dot += int64_t(sc) * (level - 32) * xb[i];
            }
            sum += double(d[t * nb + s * 8 + b]) * dw * double(dot);
          }
        }
        y[t * ldy + p * width + j] = sum;
      }
}

}  // namespace rwkv7::cpu
#endif
