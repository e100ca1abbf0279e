// Highway multi-target packed-panel product kernel (see gemm_packed_kernels.hpp).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/gemm_packed_kernels.cpp"
#include "backends/cpu/gemm_packed_kernels.hpp"

#include <algorithm>

#include "backends/cpu/transpose16_avx512.hpp"
#include "core/dtype.hpp"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
// (after highway.h: a per-target header)
#include "backends/cpu/panel_vecs-inl.hpp"

#ifndef RWKV7_GEMM_PACKED_HALF
#define RWKV7_GEMM_PACKED_HALF
namespace rwkv7::cpu {
struct Half {  // an f16 weight as stored (bf16 weights are plain uint16_t)
  uint16_t bits;
};
}  // namespace rwkv7::cpu
#endif

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Tiles of kRows positions × kVecs vectors: 6 × 4 = 24 accumulators of 32 registers on
// AVX-512; 4 × 3 = 12 of 16 elsewhere (7 loads per 12 FMAs; the 6 × 2 tile it replaced needed
// 8 and ran ~5-10% slower on AVX2: one thread, alternating runs of the kernel alone).
constexpr int kVecs = kPanelVecs;  // panel_vecs-inl.hpp
constexpr int kRows = HWY_MAX_BYTES >= 64 ? 6 : 4;

size_t PanelWidth() { return kVecs * hn::Lanes(hn::ScalableTag<float>()); }

int64_t DispatchedTarget() { return HWY_TARGET; }

#if HWY_TARGET <= HWY_AVX3
// 16 inputs of one row as fp32: bf16 is the upper half of an fp32, so widening is a shift.
HWY_INLINE __m512 Load16(const float* p) { return _mm512_loadu_ps(p); }
// (Each value moved to the high half of its lane by one VPERMW with zero masking: GCC 12 warns,
// falsely, "may be used uninitialized" in its headers on the cvtepu16 + shift form.)
HWY_INLINE __m512 Load16(const uint16_t* p) {
  const __m512i h = _mm512_maskz_loadu_epi16(0xFFFFu, p);
  const __m512i index = _mm512_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8,
                                         7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, index, h));
}
HWY_INLINE __m512 Load16(const Half* p) {
  return _mm512_maskz_cvtph_ps(0xFFFFu, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// 16 rows × 16 inputs → 16 panel lines, transposed in registers.
template <class T>
HWY_INLINE void Transpose16(const T* rows, size_t ldr, float* out, size_t ldo, const T* next) {
  __m512 r[16];
  for (int j = 0; j < 16; ++j) {
    r[j] = Load16(rows + j * ldr);
    if (next) _mm_prefetch(reinterpret_cast<const char*>(next + j * ldr), _MM_HINT_T1);
  }
  transpose16x16(r);
  for (int q = 0; q < 16; ++q) _mm512_storeu_ps(out + q * ldo, r[q]);
}
#endif

#if HWY_TARGET == HWY_AVX2
// 8 inputs of one row as fp32 (bf16: a shift; f16: F16C).
HWY_INLINE __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
HWY_INLINE __m256 Load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
HWY_INLINE __m256 Load8(const Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// 8 rows × 8 inputs → 8 panel lines, transposed in registers: pairs interleaved, then quads
// (column c of rows 0-3 | column c + 4), then the 128-bit halves of rows 0-3 and 4-7 joined.
template <class T>
HWY_INLINE void Transpose8(const T* rows, size_t ldr, float* out, size_t ldo, const T* next) {
  __m256 r[8], t[8], q[8];
  for (int j = 0; j < 8; ++j) {
    r[j] = Load8(rows + j * ldr);
    if (next) _mm_prefetch(reinterpret_cast<const char*>(next + j * ldr), _MM_HINT_T1);
  }
  for (int j = 0; j < 8; j += 2) {
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int h = 0; h < 8; h += 4) {                                          // rows 0-3, then 4-7
    q[h] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));      // columns 0 | 4
    q[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));  // 1 | 5
    q[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));  // 2 | 6
    q[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));  // 3 | 7
  }
  for (int c = 0; c < 4; ++c) {
    _mm256_storeu_ps(out + c * ldo, _mm256_permute2f128_ps(q[c], q[c + 4], 0x20));
    _mm256_storeu_ps(out + (c + 4) * ldo, _mm256_permute2f128_ps(q[c], q[c + 4], 0x31));
  }
}
#endif

HWY_INLINE float Widen(float v) { return v; }
HWY_INLINE float Widen(Half v) { return rwkv7::f16_to_f32(v.bits); }
HWY_INLINE float Widen(uint16_t v) {
  const uint32_t bits = uint32_t(v) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

template <class T>
void PackPanelT(const T* rows, size_t ldr, size_t nn, size_t kc, const T* next, float* panel) {
  const size_t nr = PanelWidth();
  (void)next;                     // only the register transpose streams rows
  size_t j_done = 0, i_done = 0;  // [0, j_done) × [0, i_done) is packed by the fast path
#if HWY_TARGET <= HWY_AVX3
  j_done = nn / 16 * 16;
  i_done = kc / 16 * 16;
  for (size_t j = 0; j < j_done; j += 16)
    for (size_t i = 0; i < i_done; i += 16)
      Transpose16(rows + j * ldr + i, ldr, panel + i * nr + j, nr,
                  next ? next + j * ldr + i : nullptr);
#elif HWY_TARGET == HWY_AVX2
  j_done = nn / 8 * 8;
  i_done = kc / 8 * 8;
  for (size_t j = 0; j < j_done; j += 8)
    for (size_t i = 0; i < i_done; i += 8)
      Transpose8(rows + j * ldr + i, ldr, panel + i * nr + j, nr,
                 next ? next + j * ldr + i : nullptr);
#endif
  // Whatever the fast path left (edges, other ISAs); 8 inputs at a time keep 8 panel lines
  // open while one weight row is read.
  for (size_t i0 = 0; i0 < kc; i0 += 8) {
    const size_t ie = i0 + 8 < kc ? i0 + 8 : kc;
    // (i_done is a multiple of 8: a block of inputs is wholly inside the fast part or not.)
    for (size_t j = i0 < i_done ? j_done : 0; j < nn; ++j) {
      const T* src = rows + j * ldr;
      for (size_t i = i0; i < ie; ++i) panel[i * nr + j] = Widen(src[i]);
    }
    for (size_t i = i0; i < ie; ++i)
      for (size_t j = nn; j < nr; ++j) panel[i * nr + j] = 0.0f;
  }
}

void PackPanel(const float* rows, size_t ldr, size_t nn, size_t kc, const float* next,
               float* panel) {
  PackPanelT(rows, ldr, nn, kc, next, panel);
}

void PackPanelBf16(const uint16_t* rows, size_t ldr, size_t nn, size_t kc, const uint16_t* next,
                   float* panel) {
  PackPanelT(rows, ldr, nn, kc, next, panel);
}

void PackPanelF16(const uint16_t* rows, size_t ldr, size_t nn, size_t kc, const uint16_t* next,
                  float* panel) {
  PackPanelT(reinterpret_cast<const Half*>(rows), ldr, nn, kc, reinterpret_cast<const Half*>(next),
             panel);
}

// Source already input-major: each panel line is a copy of a source row, zero-padded.
void PackPanelInputMajor(const float* src, size_t lds, size_t nn, size_t kc, float* panel) {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d), nr = kVecs * L;
  for (size_t i = 0; i < kc; ++i, src += lds, panel += nr) {
    if (nn == nr) {  // a whole panel line: kVecs vectors, no call per row
      for (int v = 0; v < kVecs; ++v) hn::Store(hn::LoadU(d, src + v * L), d, panel + v * L);
      continue;
    }
    for (size_t j = 0; j < nn; ++j) panel[j] = src[j];
    for (size_t j = nn; j < nr; ++j) panel[j] = 0.0f;
  }
}

// The same from bf16 values (bits), widened on the way: a weight's bf16 copy kept by
// mixed-precision training, read in half the bytes.
void PackPanelInputMajorBf16(const uint16_t* src, size_t lds, size_t nn, size_t kc, float* panel) {
  const hn::ScalableTag<float> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const hn::Rebind<uint16_t, decltype(d)> d16;  // as many 16-bit lanes as d has floats
  const size_t L = hn::Lanes(d), nr = kVecs * L;
  for (size_t i = 0; i < kc; ++i, src += lds, panel += nr) {
    if (nn == nr) {
      for (int v = 0; v < kVecs; ++v)
        hn::Store(hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, src + v * L)))),
                  d, panel + v * L);
      continue;
    }
    for (size_t j = 0; j < nn; ++j) panel[j] = Widen(src[j]);
    for (size_t j = nn; j < nr; ++j) panel[j] = 0.0f;
  }
}

// x[i] ← the nearest-even bf16 value, as f32_to_bf16 rounds (NaN stays a quiet NaN), in
// vectors: the scalar loop was ~20% of a 64-row bf16 product on the fallback (callgrind).
void RoundToBf16(float* x, size_t n) {
  const hn::ScalableTag<float> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const hn::RebindToSigned<decltype(d)> di;
  const size_t L = hn::Lanes(d);
  const auto high = hn::Set(du, 0xFFFF0000u), bias = hn::Set(du, 0x7FFFu), one = hn::Set(du, 1u);
  const auto quiet = hn::Set(du, 0x00400000u), magnitude = hn::Set(du, 0x7FFFFFFFu);
  const auto inf = hn::Set(di, 0x7F800000);
  auto round = [&](auto v) {
    const auto bits = hn::BitCast(du, v);
    const auto lsb = hn::And(hn::ShiftRight<16>(bits), one);
    const auto rounded = hn::And(hn::Add(bits, hn::Add(bias, lsb)), high);
    // |x| above +inf's bits (as signed: both below 2^31) is a NaN: kept, made quiet.
    const auto nan = hn::RebindMask(du, hn::Gt(hn::BitCast(di, hn::And(bits, magnitude)), inf));
    return hn::BitCast(d, hn::IfThenElse(nan, hn::And(hn::Or(bits, quiet), high), rounded));
  };
  size_t i = 0;
  for (; i + L <= n; i += L) hn::StoreU(round(hn::LoadU(d, x + i)), d, x + i);
  for (; i < n; ++i) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
}

// How the micro-kernel reads X: rows (x[t * ldx + i]), transposed (x[i * ldx + t]: x holds
// Xᵀ), or one tile of pack_x_tiles (x[i * MR + t]).
enum class XLayout { kRows, kTransposed, kTiles };

template <XLayout kX, int MR>
HWY_INLINE float XAt(const float* x, size_t ldx, size_t t, size_t i) {
  return kX == XLayout::kTransposed ? x[i * ldx + t]
         : kX == XLayout::kTiles    ? x[i * MR + t]
                                    : x[t * ldx + i];
}

// From the X of one tile to the next, kRows positions on.
template <XLayout kX>
HWY_INLINE size_t TileStep(size_t ldx, size_t kc) {
  return kX == XLayout::kTransposed ? kRows : kX == XLayout::kTiles ? kRows * kc : kRows * ldx;
}

// Lines of the caller's next block still to prefetch, handed out to the tiles of one call.
struct LineStream {
  const char* next = nullptr;
  size_t lines = 0;
};

// A panel line as kVecs vectors of floats. fp32 panels: as stored. bf16 panels (weights
// packed at load, multiplied without a widened copy): each pair of vectors is one vector of
// bf16 values read as 32-bit lanes, split into the even outputs (low halves shifted up) and
// the odd ones (high halves masked): two integer operations per pair, no shuffle; with an odd
// kVecs (AVX2's 3) the last vector is widened in order. The accumulators of a pair then hold
// the outputs even / odd; OutputOrder puts them back in order once per tile.
template <class P>
struct Line;
template <>
struct Line<float> {
  static constexpr bool kSplit = false;
  template <class D>
  static HWY_INLINE void Load(D d, const float* p, hn::Vec<D>* b) {
    const size_t L = hn::Lanes(d);
    for (int v = 0; v < kVecs; ++v) b[v] = hn::Load(d, p + v * L);
  }
};
#if HWY_TARGET <= HWY_AVX2
template <>
struct Line<uint16_t> {
  static constexpr bool kSplit = true;
  template <class D>
  static HWY_INLINE void Load(D d, const uint16_t* p, hn::Vec<D>* b) {
    const hn::RebindToUnsigned<D> du;
    const hn::Repartition<uint16_t, decltype(du)> dw;  // a whole vector of bf16
    const size_t L = hn::Lanes(d);
    const auto high = hn::Set(du, 0xFFFF0000u);
    for (int q = 0; q + 1 < kVecs; q += 2) {
      const auto u = hn::BitCast(du, hn::LoadU(dw, p + q * L));
      b[q] = hn::BitCast(d, hn::ShiftLeft<16>(u));
      b[q + 1] = hn::BitCast(d, hn::And(u, high));
    }
    if constexpr (kVecs % 2 == 1) {
      const hn::Rebind<uint16_t, decltype(du)> dh;  // lanes-many bf16
      b[kVecs - 1] =
          hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(dh, p + (kVecs - 1) * L))));
    }
  }
};

// Accumulators of outputs [0, 2, 4, ...] and [1, 3, 5, ...] of 2 · lanes outputs → the outputs
// in order: interleaved within 128-bit blocks, then the blocks put in place.
template <class D>
HWY_INLINE void OutputOrder(D d, hn::Vec<D>& even, hn::Vec<D>& odd) {
  using V = hn::Vec<D>;
  const V lo = hn::InterleaveLower(d, even, odd), hi = hn::InterleaveUpper(d, even, odd);
#if HWY_TARGET <= HWY_AVX3
  // lo = [0-3 | 8-11 | 16-19 | 24-27], hi = [4-7 | 12-15 | 20-23 | 28-31] (blocks of 4)
  const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i second =
      _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  even = V{_mm512_permutex2var_ps(lo.raw, first, hi.raw)};
  odd = V{_mm512_permutex2var_ps(lo.raw, second, hi.raw)};
#else
  // lo = [0-3 | 8-11], hi = [4-7 | 12-15]
  even = hn::ConcatLowerLower(d, hi, lo);
  odd = hn::ConcatUpperUpper(d, hi, lo);
#endif
}
#else  // no bf16 panel products on these targets (bf16_panel_product_available)
template <class D>
void OutputOrder(D, hn::Vec<D>&, hn::Vec<D>&) {}
#endif

template <int MR, XLayout kX, class P>
HWY_INLINE void Micro(const float* x, size_t ldx, const P* panel, size_t kc, float* y, size_t ldy,
                      bool accumulate, LineStream pf) {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d);
  const size_t nr = kVecs * L;
  using V = hn::Vec<decltype(d)>;
  V acc[MR][kVecs];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < kVecs; ++v) acc[r][v] = hn::Zero(d);
  // pf.lines prefetches spread evenly over the kc inputs (more than one per input when there
  // are more lines than inputs): after input i, (i + 1) · lines / kc have been issued.
  const size_t lines = pf.lines;
  size_t owed = 0;  // lines · (i + 1) mod kc, carried
  const P* p = panel;
  for (size_t i = 0; i < kc; ++i, p += nr) {
    if (lines) {
      owed += lines;
      for (; owed >= kc; owed -= kc, pf.next += 64) hwy::Prefetch(pf.next);
    }
    V b[kVecs];
    Line<P>::Load(d, p, b);
    for (int r = 0; r < MR; ++r) {
      const V a = hn::Set(d, XAt<kX, MR>(x, ldx, size_t(r), i));
      for (int v = 0; v < kVecs; ++v) acc[r][v] = hn::MulAdd(a, b[v], acc[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    if constexpr (Line<P>::kSplit)
      for (int q = 0; q + 1 < kVecs; q += 2) OutputOrder(d, acc[r][q], acc[r][q + 1]);
    float* yr = y + r * ldy;
    for (int v = 0; v < kVecs; ++v) {
      const V out = accumulate ? hn::Add(hn::LoadU(d, yr + v * L), acc[r][v]) : acc[r][v];
      hn::StoreU(out, d, yr + v * L);
    }
  }
}

template <int MR, XLayout kX, class P>
HWY_INLINE void MicroAny(const float* x, size_t ldx, const P* panel, size_t kc, float* y,
                         size_t ldy, size_t nn, bool accumulate, LineStream pf) {
  const size_t nr = PanelWidth();
  if (nn == nr) return Micro<MR, kX>(x, ldx, panel, kc, y, ldy, accumulate, pf);
  // Partial panel (the last one of a matrix): full tile into a buffer, then nn columns out.
  HWY_ALIGN float tile[MR * kVecs * HWY_MAX_BYTES / sizeof(float)] = {};
  Micro<MR, kX>(x, ldx, panel, kc, tile, nr, false, pf);
  for (int r = 0; r < MR; ++r)
    for (size_t j = 0; j < nn; ++j)
      y[r * ldy + j] = (accumulate ? y[r * ldy + j] : 0.0f) + tile[r * nr + j];
}

// Without prefetching: tiles of kRows positions, then one of the rest. Kept apart from the
// prefetching form below: there the line count is not a constant, and its check in the inner
// loop (plus the tile bookkeeping) cost 5-8% of an AVX2 prefill.
template <XLayout kX, class P>
void GemmPanelPlain(const float* x, size_t ldx, size_t T, const P* panel, size_t kc, float* y,
                    size_t ldy, size_t nn, bool accumulate) {
  const LineStream none{};
  const size_t x_step = TileStep<kX>(ldx, kc);
  size_t t = 0;
  for (; t + kRows <= T; t += kRows, x += x_step)
    MicroAny<kRows, kX, P>(x, ldx, panel, kc, y + t * ldy, ldy, nn, accumulate, none);
  float* yt = y + t * ldy;
  switch (T - t) {
    case 5:
      return MicroAny<5, kX, P>(x, ldx, panel, kc, yt, ldy, nn, accumulate, none);
    case 4:
      return MicroAny<4, kX, P>(x, ldx, panel, kc, yt, ldy, nn, accumulate, none);
    case 3:
      return MicroAny<3, kX, P>(x, ldx, panel, kc, yt, ldy, nn, accumulate, none);
    case 2:
      return MicroAny<2, kX, P>(x, ldx, panel, kc, yt, ldy, nn, accumulate, none);
    case 1:
      return MicroAny<1, kX, P>(x, ldx, panel, kc, yt, ldy, nn, accumulate, none);
    default:
      return;
  }
}

// With prefetching (decode batches): tiles of kRows positions; a remainder of 1 or 2 joins the last
// full tile and the two split evenly (AVX-512, tiles of 6: 7 = 4 + 3, 8 = 4 + 4; AVX2, tiles of
// 4: 5 = 3 + 2, 6 = 3 + 3): a 1- or 2-row tile of 6 has too few accumulators to keep the FMA
// units busy (a 32-sequence decode batch ended in one). The prefetch lines are shared out over
// the tiles in proportion to their rows. Packed tiles (kTiles) keep pack_x_tiles' split: no join.
template <XLayout kX, class P = float>
void GemmPanelT(const float* x, size_t ldx, size_t T, const P* panel, size_t kc, float* y,
                size_t ldy, size_t nn, bool accumulate, PrefetchRange prefetch) {
  if (!prefetch.begin || prefetch.bytes == 0)
    return GemmPanelPlain<kX, P>(x, ldx, T, panel, kc, y, ldy, nn, accumulate);
  // From X's first position to position t (a tile's first, for kTiles).
  const size_t x_step = kX == XLayout::kTransposed ? 1 : kX == XLayout::kTiles ? kc : ldx;
  const size_t lines = (prefetch.bytes + 63) / 64;
  const char* next = static_cast<const char*>(prefetch.begin);
  size_t t = 0;
  const auto tile = [&](size_t rows) {
    const size_t first = lines * t / T, last = lines * (t + rows) / T;
    const LineStream pf{next + first * 64, last - first};
    const float* xt = x + t * x_step;
    float* yt = y + t * ldy;
    switch (rows) {
      case 6:
        MicroAny<6, kX, P>(xt, ldx, panel, kc, yt, ldy, nn, accumulate, pf);
        break;
      case 5:
        MicroAny<5, kX, P>(xt, ldx, panel, kc, yt, ldy, nn, accumulate, pf);
        break;
      case 4:
        MicroAny<4, kX, P>(xt, ldx, panel, kc, yt, ldy, nn, accumulate, pf);
        break;
      case 3:
        MicroAny<3, kX, P>(xt, ldx, panel, kc, yt, ldy, nn, accumulate, pf);
        break;
      case 2:
        MicroAny<2, kX, P>(xt, ldx, panel, kc, yt, ldy, nn, accumulate, pf);
        break;
      default:
        MicroAny<1, kX, P>(xt, ldx, panel, kc, yt, ldy, nn, accumulate, pf);
        break;
    }
    t += rows;
  };
  static_assert(kRows <= 6, "the tile switch above lists 1..6 rows");
  const size_t rem = T % kRows;
  const bool join = kX != XLayout::kTiles && rem != 0 && rem <= 2 && T > kRows;
  const size_t full = T / kRows - (join ? 1 : 0);
  for (size_t i = 0; i < full; ++i) tile(kRows);
  const size_t left = T - t;  // below kRows, or kRows + 1..2 split in two
  if (left > kRows) {
    tile(left - left / 2);
    tile(left / 2);
  } else if (left > 0) {
    tile(left);
  }
}

void GemmPanel(const float* x, size_t ldx, size_t T, const float* panel, size_t kc, float* y,
               size_t ldy, size_t nn, bool accumulate, PrefetchRange prefetch) {
  GemmPanelT<XLayout::kRows>(x, ldx, T, panel, kc, y, ldy, nn, accumulate, prefetch);
}

// bf16 panels as made at load, read without a widened copy (AVX2 and AVX-512; elsewhere the
// caller widens: bf16_panel_product_available()).
void GemmPanelBf16(const float* x, size_t ldx, size_t T, const uint16_t* panel, size_t kc, float* y,
                   size_t ldy, size_t nn, bool accumulate, PrefetchRange prefetch) {
#if HWY_TARGET <= HWY_AVX2
  GemmPanelT<XLayout::kRows, uint16_t>(x, ldx, T, panel, kc, y, ldy, nn, accumulate, prefetch);
#else
  (void)x, (void)ldx, (void)T, (void)panel, (void)kc, (void)y, (void)ldy, (void)nn;
  (void)accumulate, (void)prefetch;
  HWY_ABORT("gemm_panel_bf16 on a target without it");
#endif
}

bool Bf16PanelProductAvailable() { return HWY_TARGET <= HWY_AVX2; }

void GemmPanelXT(const float* xt, size_t ldxt, size_t T, const float* panel, size_t kc, float* y,
                 size_t ldy, size_t nn, bool accumulate, PrefetchRange prefetch) {
  GemmPanelT<XLayout::kTransposed>(xt, ldxt, T, panel, kc, y, ldy, nn, accumulate, prefetch);
}

void GemmPanelTiles(const float* xp, size_t T, const float* panel, size_t kc, float* y, size_t ldy,
                    size_t nn, bool accumulate, PrefetchRange prefetch) {
  GemmPanelT<XLayout::kTiles>(xp, 0, T, panel, kc, y, ldy, nn, accumulate, prefetch);
}

size_t TileRows() { return kRows; }

// Rows of 4-position tiles (AVX2) go through StoreInterleaved4, a vector of inputs of each of
// the 4 rows at a time; other tiles (AVX-512's 6, the last tile) value by value. Each value of X
// is copied once per product; the kernel reads it once per panel of outputs.
void PackXTiles(const float* x, size_t ldx, bool transposed, size_t T, size_t kc, float* out) {
  const hn::ScalableTag<float> d;
  const size_t L = hn::Lanes(d);
  for (size_t t = 0; t < T; t += kRows) {
    const size_t mr = std::min<size_t>(kRows, T - t);
    float* o = out + t * kc;
    if (transposed) {
      for (size_t i = 0; i < kc; ++i)
        for (size_t r = 0; r < mr; ++r) o[i * mr + r] = x[i * ldx + t + r];
      continue;
    }
    const float* row = x + t * ldx;
    size_t i = 0;
    if (mr == 4) {
      for (; i + L <= kc; i += L)
        hn::StoreInterleaved4(hn::LoadU(d, row + i), hn::LoadU(d, row + ldx + i),
                              hn::LoadU(d, row + 2 * ldx + i), hn::LoadU(d, row + 3 * ldx + i), d,
                              o + i * 4);
    }
    for (; i < kc; ++i)
      for (size_t r = 0; r < mr; ++r) o[i * mr + r] = row[r * ldx + i];
  }
}

}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace rwkv7::cpu {

HWY_EXPORT(PanelWidth);
HWY_EXPORT(DispatchedTarget);
HWY_EXPORT(PackPanel);
HWY_EXPORT(PackPanelBf16);
HWY_EXPORT(PackPanelF16);
HWY_EXPORT(PackPanelInputMajor);
HWY_EXPORT(PackPanelInputMajorBf16);
HWY_EXPORT(RoundToBf16);
HWY_EXPORT(GemmPanel);
HWY_EXPORT(GemmPanelXT);
HWY_EXPORT(GemmPanelBf16);
HWY_EXPORT(Bf16PanelProductAvailable);
HWY_EXPORT(GemmPanelTiles);
HWY_EXPORT(TileRows);
HWY_EXPORT(PackXTiles);

size_t panel_width() { return HWY_DYNAMIC_DISPATCH(PanelWidth)(); }

int64_t dispatched_target() { return HWY_DYNAMIC_DISPATCH(DispatchedTarget)(); }

void pack_panel(const float* rows, size_t ldr, size_t nn, size_t kc, const float* next,
                float* panel) {
  HWY_DYNAMIC_DISPATCH(PackPanel)(rows, ldr, nn, kc, next, panel);
}

void pack_panel_bf16(const uint16_t* rows, size_t ldr, size_t nn, size_t kc, const uint16_t* next,
                     float* panel) {
  HWY_DYNAMIC_DISPATCH(PackPanelBf16)(rows, ldr, nn, kc, next, panel);
}

void pack_panel_f16(const uint16_t* rows, size_t ldr, size_t nn, size_t kc, const uint16_t* next,
                    float* panel) {
  HWY_DYNAMIC_DISPATCH(PackPanelF16)(rows, ldr, nn, kc, next, panel);
}

void pack_panel_input_major(const float* src, size_t lds, size_t nn, size_t kc, float* panel) {
  HWY_DYNAMIC_DISPATCH(PackPanelInputMajor)(src, lds, nn, kc, panel);
}

void pack_panel_input_major(const uint16_t* src, size_t lds, size_t nn, size_t kc, float* panel) {
  HWY_DYNAMIC_DISPATCH(PackPanelInputMajorBf16)(src, lds, nn, kc, panel);
}

void round_to_bf16(float* x, size_t n) { HWY_DYNAMIC_DISPATCH(RoundToBf16)(x, n); }

void gemm_panel(const float* x, size_t ldx, size_t T, const float* panel, size_t kc, float* y,
                size_t ldy, size_t nn, bool accumulate, PrefetchRange prefetch) {
  HWY_DYNAMIC_DISPATCH(GemmPanel)(x, ldx, T, panel, kc, y, ldy, nn, accumulate, prefetch);
}

void gemm_panel_bf16(const float* x, size_t ldx, size_t T, const uint16_t* panel, size_t kc,
                     float* y, size_t ldy, size_t nn, bool accumulate, PrefetchRange prefetch) {
  HWY_DYNAMIC_DISPATCH(GemmPanelBf16)(x, ldx, T, panel, kc, y, ldy, nn, accumulate, prefetch);
}

bool bf16_panel_product_available() { return HWY_DYNAMIC_DISPATCH(Bf16PanelProductAvailable)(); }

void gemm_panel_xt(const float* xt, size_t ldxt, size_t T, const float* panel, size_t kc, float* y,
                   size_t ldy, size_t nn, bool accumulate, PrefetchRange prefetch) {
  HWY_DYNAMIC_DISPATCH(GemmPanelXT)(xt, ldxt, T, panel, kc, y, ldy, nn, accumulate, prefetch);
}

size_t gemm_tile_rows() { return HWY_DYNAMIC_DISPATCH(TileRows)(); }

void pack_x_tiles(const float* x, size_t ldx, bool transposed, size_t T, size_t kc, float* out) {
  HWY_DYNAMIC_DISPATCH(PackXTiles)(x, ldx, transposed, T, kc, out);
}

void gemm_panel_tiles(const float* xp, size_t T, const float* panel, size_t kc, float* y,
                      size_t ldy, size_t nn, bool accumulate, PrefetchRange prefetch) {
  HWY_DYNAMIC_DISPATCH(GemmPanelTiles)(xp, T, panel, kc, y, ldy, nn, accumulate, prefetch);
}

void gemm_panel_scalar(const float* x, size_t ldx, bool x_transposed, size_t T, const float* panel,
                       size_t nr, size_t kc, float* y, size_t ldy, size_t nn, bool accumulate) {
  for (size_t t = 0; t < T; ++t) {
    for (size_t j = 0; j < nn; ++j) {
      float s = 0;
      for (size_t i = 0; i < kc; ++i)
        s += (x_transposed ? x[i * ldx + t] : x[t * ldx + i]) * panel[i * nr + j];
      y[t * ldy + j] = (accumulate ? y[t * ldy + j] : 0.0f) + s;
    }
  }
}

}  // namespace rwkv7::cpu
#endif
