// The bf16 product kernels (see gemm_bf16_kernels.hpp). Highway 1.0 has no target with
// AVX512_BF16, so the VDPBF16PS path is plain intrinsics under a target attribute, chosen at
// run time; the fallback rounds with round_to_bf16 (gemm_packed_kernels.hpp).
#include "backends/cpu/gemm_bf16_kernels.hpp"

#include <cstring>

#include "backends/cpu/transpose16_avx512.hpp"
#include "backends/cpu_isa.hpp"
#include "core/dtype.hpp"
#include "hwy/targets.h"
#include "rwkv7/error.hpp"

namespace rwkv7::cpu {

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)

#define RWKV7_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))

namespace {

constexpr size_t NR = kBf16PanelWidth;
constexpr int kRows = 6;

// 32 consecutive floats → 16 pairs in memory order (VCVTNE2PS2BF16 puts its second operand's
// values first).
RWKV7_BF16_TARGET inline __m512i pairs_of_run(const float* p) {
  return __m512i(_mm512_cvtne2ps_pbh(_mm512_loadu_ps(p + 16), _mm512_loadu_ps(p)));
}

// Lane j = (first[j], second[j]): two rows of 16 floats interleaved into 16 pairs.
RWKV7_BF16_TARGET inline __m512i pairs_of_rows(const float* first, const float* second) {
  const __m512i words =
      __m512i(_mm512_cvtne2ps_pbh(_mm512_loadu_ps(second), _mm512_loadu_ps(first)));
  // words: first's 16 values, then second's; word 2j ← j, word 2j + 1 ← 16 + j.
  const __m512i interleave =
      _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                       21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, words);
}

// 16 vectors of 16 pairs transposed and stored: out + q * ld_out (in uint32 units) ← column q.
RWKV7_BF16_TARGET inline void store_transposed(__m512i v[16], uint32_t* out, size_t ld_out) {
  __m512 r[16];
  for (int j = 0; j < 16; ++j) r[j] = _mm512_castsi512_ps(v[j]);
  transpose16x16(r);
  for (int q = 0; q < 16; ++q) _mm512_storeu_ps(reinterpret_cast<float*>(out + q * ld_out), r[q]);
}

template <int MR>
RWKV7_BF16_TARGET inline void micro(const uint16_t* xb, size_t ldxb, const uint16_t* panel,
                                    size_t pairs, float* y, size_t ldy, bool accumulate) {
  __m512 acc[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_ps();
  const uint16_t* p = panel;
  for (size_t i = 0; i < pairs; ++i, p += 2 * NR) {
    __m512i b[4];
    for (int v = 0; v < 4; ++v) b[v] = _mm512_load_si512(p + v * 32);
    for (int r = 0; r < MR; ++r) {
      uint32_t bits;
      std::memcpy(&bits, xb + r * ldxb + 2 * i, 4);
      const __m512bh a = __m512bh(_mm512_set1_epi32(int(bits)));
      for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, __m512bh(b[v]));
    }
  }
  for (int r = 0; r < MR; ++r) {
    float* yr = y + r * ldy;
    for (int v = 0; v < 4; ++v) {
      const __m512 out =
          accumulate ? _mm512_add_ps(_mm512_loadu_ps(yr + v * 16), acc[r][v]) : acc[r][v];
      _mm512_storeu_ps(yr + v * 16, out);
    }
  }
}

template <int MR>
RWKV7_BF16_TARGET inline void micro_any(const uint16_t* xb, size_t ldxb, const uint16_t* panel,
                                        size_t pairs, float* y, size_t ldy, size_t nn,
                                        bool accumulate) {
  if (nn == NR) return micro<MR>(xb, ldxb, panel, pairs, y, ldy, accumulate);
  alignas(64) float tile[kRows * NR];  // a partial panel: whole tile here, nn columns out
  micro<MR>(xb, ldxb, panel, pairs, tile, NR, false);
  for (int r = 0; r < MR; ++r)
    for (size_t j = 0; j < nn; ++j)
      y[r * ldy + j] = (accumulate ? y[r * ldy + j] : 0.0f) + tile[r * NR + j];
}

RWKV7_BF16_TARGET void gemm_panel_avx512bf16(const uint16_t* xb, size_t ldxb, size_t T,
                                             const uint16_t* panel, size_t kn, float* y, size_t ldy,
                                             size_t nn, bool accumulate) {
  const size_t pairs = (kn + 1) / 2;
  size_t t = 0;
  for (; t + kRows <= T; t += kRows) {
    // The next tile's outputs, fetched while this one computes: rows ldy apart (the head's:
    // 256 KB) defeat the hardware prefetchers, and each tile would otherwise wait on 24 misses.
    if (t + 2 * kRows <= T)
      for (int r = 0; r < kRows; ++r)
        for (size_t j = 0; j < nn; j += 16)
          _mm_prefetch(reinterpret_cast<const char*>(y + (t + kRows + r) * ldy + j), _MM_HINT_T0);
    micro_any<kRows>(xb + t * ldxb, ldxb, panel, pairs, y + t * ldy, ldy, nn, accumulate);
  }
  const uint16_t* xt = xb + t * ldxb;
  float* yt = y + t * ldy;
  switch (T - t) {
    case 5:
      return micro_any<5>(xt, ldxb, panel, pairs, yt, ldy, nn, accumulate);
    case 4:
      return micro_any<4>(xt, ldxb, panel, pairs, yt, ldy, nn, accumulate);
    case 3:
      return micro_any<3>(xt, ldxb, panel, pairs, yt, ldy, nn, accumulate);
    case 2:
      return micro_any<2>(xt, ldxb, panel, pairs, yt, ldy, nn, accumulate);
    case 1:
      return micro_any<1>(xt, ldxb, panel, pairs, yt, ldy, nn, accumulate);
    default:
      return;
  }
}

RWKV7_BF16_TARGET void pack_x_avx512bf16(const float* x, size_t ldx, bool transposed, size_t rows,
                                         size_t K, uint16_t* xb, size_t ldxb) {
  const size_t pairs = K / 2;
  if (!transposed) {
    for (size_t m = 0; m < rows; ++m) {
      const float* src = x + m * ldx;
      uint16_t* dst = xb + m * ldxb;
      size_t k = 0;
      for (; k + 32 <= K; k += 32) _mm512_storeu_si512(dst + k, pairs_of_run(src + k));
      for (; k < K; ++k) dst[k] = f32_to_bf16(src[k]);
      if (K % 2) dst[K] = 0;
    }
    return;
  }
  // X stored [K, M]: 16 pairs of inputs × 16 rows at a time, interleaved then transposed.
  // Along the rows inside a group of 32 inputs, so that each input's row is read as one
  // stream (down the columns first, every line of the head's dlogits [T, 65,536] was a miss in
  // a different page).
  const size_t m_fast = rows / 16 * 16, p_fast = pairs / 16 * 16;
  for (size_t p0 = 0; p0 < p_fast; p0 += 16)
    for (size_t m0 = 0; m0 < m_fast; m0 += 16) {
      __m512i v[16];
      for (int q = 0; q < 16; ++q) {
        const float* first = x + (2 * (p0 + q)) * ldx + m0;
        v[q] = pairs_of_rows(first, first + ldx);
      }
      store_transposed(v, reinterpret_cast<uint32_t*>(xb + m0 * ldxb) + p0, ldxb / 2);
    }
  for (size_t m = 0; m < rows; ++m) {
    uint16_t* dst = xb + m * ldxb;
    const size_t from = m < m_fast ? 2 * p_fast : 0;
    for (size_t k = from; k < K; ++k) dst[k] = f32_to_bf16(x[k * ldx + m]);
    if (K % 2) dst[K] = 0;
  }
}

// Words [16 * half, 16 * half + 16) of h (bf16 values) widened back to floats: word j moved to
// the high half of lane j, the low half zeroed (one VPERMW; GCC 12 warns on the 256-bit
// extract-and-convert form, a false "may be used uninitialized" in its headers).
template <int half>
RWKV7_BF16_TARGET inline __m512 widen(__m512i h) {
  constexpr short o = 16 * half;
  const __m512i index = _mm512_set_epi16(
      o + 15, o + 15, o + 14, o + 14, o + 13, o + 13, o + 12, o + 12, o + 11, o + 11, o + 10,
      o + 10, o + 9, o + 9, o + 8, o + 8, o + 7, o + 7, o + 6, o + 6, o + 5, o + 5, o + 4, o + 4,
      o + 3, o + 3, o + 2, o + 2, o + 1, o + 1, o, o);
  return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, index, h));
}

RWKV7_BF16_TARGET void pack_x_split_avx512bf16(const float* x, size_t ldx, size_t rows, size_t K,
                                               uint16_t* hi, uint16_t* lo, size_t ldxb) {
  for (size_t m = 0; m < rows; ++m) {
    const float* src = x + m * ldx;
    uint16_t *dh = hi + m * ldxb, *dl = lo + m * ldxb;
    size_t k = 0;
    for (; k + 32 <= K; k += 32) {
      const __m512 a = _mm512_loadu_ps(src + k), b = _mm512_loadu_ps(src + k + 16);
      const __m512i h = __m512i(_mm512_cvtne2ps_pbh(b, a));
      const __m512 ra = _mm512_sub_ps(a, widen<0>(h));
      const __m512 rb = _mm512_sub_ps(b, widen<1>(h));
      _mm512_storeu_si512(dh + k, h);
      _mm512_storeu_si512(dl + k, __m512i(_mm512_cvtne2ps_pbh(rb, ra)));
    }
    for (; k < K; ++k) {
      dh[k] = f32_to_bf16(src[k]);
      dl[k] = f32_to_bf16(src[k] - bf16_to_f32(dh[k]));
    }
    if (K % 2) dh[K] = dl[K] = 0;
  }
}

// B's value at (k, n) of a block as bf16 bits (zero past kn: the odd block's padding).
uint16_t bf16_bits(float v) { return f32_to_bf16(v); }
uint16_t bf16_bits(uint16_t v) { return v; }

// 32 consecutive values of one row as 16 pairs in memory order: bf16 values already are.
RWKV7_BF16_TARGET inline __m512i pairs_of_run(const uint16_t* p) { return _mm512_loadu_si512(p); }

// Lane j = (first[j], second[j]) from two rows of 16 bf16 values: word 2j ← first's j, word
// 2j + 1 ← second's j (index 32 + j), one VPERMT2W. (Masked loads: GCC 12 warns, falsely, on
// the 256-bit load-and-widen form.)
RWKV7_BF16_TARGET inline __m512i pairs_of_rows(const uint16_t* first, const uint16_t* second) {
  const __m512i interleave =
      _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6,
                       37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  return _mm512_permutex2var_epi16(_mm512_maskz_loadu_epi16(0xFFFFu, first), interleave,
                                   _mm512_maskz_loadu_epi16(0xFFFFu, second));
}

// One pair panel block (gemm_bf16_kernels.hpp's layout) from fp32 values (rounded) or bf16
// values (copied): B(k, n) = b[k * ldb + n], or b[n * ldb + k] when `transposed`.
template <class T>
RWKV7_BF16_TARGET void pack_pairs(const T* b, size_t ldb, bool transposed, size_t nn, size_t kn,
                                  const T* next, uint16_t* panel) {
  constexpr size_t kRun = 64 / sizeof(T);  // values of one row per cache line
  const size_t pairs = (kn + 1) / 2, full_pairs = kn / 2;
  auto* lines = reinterpret_cast<uint32_t*>(panel);  // [pairs][NR] pairs
  auto B = [&](size_t k, size_t n) -> uint32_t {
    return k < kn ? bf16_bits(transposed ? b[n * ldb + k] : b[k * ldb + n]) : 0u;
  };
  size_t n_fast = nn / 16 * 16, p_fast = full_pairs;
  if (transposed) {
    // Each output's inputs are consecutive: 32 values of 16 outputs, transposed.
    p_fast = full_pairs / 16 * 16;
    for (size_t n0 = 0; n0 < n_fast; n0 += 16)
      for (size_t p0 = 0; p0 < p_fast; p0 += 16) {
        __m512i v[16];
        for (int j = 0; j < 16; ++j) {
          const size_t at = (n0 + j) * ldb + 2 * p0;  // 32 values: two lines of floats, one of bf16
          v[j] = pairs_of_run(b + at);
          if (next)
            for (size_t line = 0; line < 32; line += kRun)
              _mm_prefetch(reinterpret_cast<const char*>(next + at + line), _MM_HINT_T1);
        }
        store_transposed(v, lines + p0 * NR + n0, NR);
      }
  } else {
    // Each input's outputs are consecutive: two input rows interleaved.
    for (size_t p = 0; p < p_fast; ++p)
      for (size_t n0 = 0; n0 < n_fast; n0 += 16) {
        const size_t at = 2 * p * ldb + n0;  // 16 values of two rows
        _mm512_store_si512(lines + p * NR + n0, pairs_of_rows(b + at, b + at + ldb));
        if (next) {
          _mm_prefetch(reinterpret_cast<const char*>(next + at), _MM_HINT_T1);
          _mm_prefetch(reinterpret_cast<const char*>(next + at + ldb), _MM_HINT_T1);
        }
      }
  }
  // What the fast paths left: edges, zero padding past nn outputs (only those visited: a loop
  // over every lane that skipped the fast ones was ~45% of this function's time in a bf16
  // training step).
  for (size_t p = 0; p < pairs; ++p)
    for (size_t n = p < p_fast ? n_fast : 0; n < NR; ++n)
      lines[p * NR + n] = n < nn ? B(2 * p, n) | B(2 * p + 1, n) << 16 : 0u;
}

bool cpu_has_avx512bf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16");
}

}  // namespace

bool bf16_dot_available() {
  // AVX-512 kernels in use (Cooper Lake has BF16 without Highway's AVX3_DL); `--isa avx2`
  // measures the fallback.
  static const bool has = cpu_has_avx512bf16();
  return has && cpu_target_at_least(HWY_AVX3);
}

void pack_x_bf16(const float* x, size_t ldx, bool transposed, size_t rows, size_t K, uint16_t* xb,
                 size_t ldxb) {
  pack_x_avx512bf16(x, ldx, transposed, rows, K, xb, ldxb);
}

void pack_x_bf16_split(const float* x, size_t ldx, size_t rows, size_t K, uint16_t* hi,
                       uint16_t* lo, size_t ldxb) {
  pack_x_split_avx512bf16(x, ldx, rows, K, hi, lo, ldxb);
}

void pack_panel_bf16_pairs(const float* b, size_t ldb, bool transposed, size_t nn, size_t kn,
                           const float* next, uint16_t* panel) {
  pack_pairs(b, ldb, transposed, nn, kn, next, panel);
}

void pack_panel_bf16_pairs(const uint16_t* b, size_t ldb, bool transposed, size_t nn, size_t kn,
                           const uint16_t* next, uint16_t* panel) {
  pack_pairs(b, ldb, transposed, nn, kn, next, panel);
}

void gemm_panel_bf16(const uint16_t* xb, size_t ldxb, size_t T, const uint16_t* panel, size_t kn,
                     float* y, size_t ldy, size_t nn, bool accumulate) {
  gemm_panel_avx512bf16(xb, ldxb, T, panel, kn, y, ldy, nn, accumulate);
}

#else  // no AVX512_BF16 kernels in this build: callers take the fp32 fallback

bool bf16_dot_available() { return false; }

void pack_x_bf16(const float*, size_t, bool, size_t, size_t, uint16_t*, size_t) {
  throw Error("pack_x_bf16: no AVX512_BF16 kernels in this build");
}
void pack_x_bf16_split(const float*, size_t, size_t, size_t, uint16_t*, uint16_t*, size_t) {
  throw Error("pack_x_bf16_split: no AVX512_BF16 kernels in this build");
}
void pack_panel_bf16_pairs(const float*, size_t, bool, size_t, size_t, const float*, uint16_t*) {
  throw Error("pack_panel_bf16_pairs: no AVX512_BF16 kernels in this build");
}
void pack_panel_bf16_pairs(const uint16_t*, size_t, bool, size_t, size_t, const uint16_t*,
                           uint16_t*) {
  throw Error("pack_panel_bf16_pairs: no AVX512_BF16 kernels in this build");
}
void gemm_panel_bf16(const uint16_t*, size_t, size_t, const uint16_t*, size_t, float*, size_t,
                     size_t, bool) {
  throw Error("gemm_panel_bf16: no AVX512_BF16 kernels in this build");
}

#endif

}  // namespace rwkv7::cpu
