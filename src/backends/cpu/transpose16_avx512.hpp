#pragma once
// A 16 × 16 transpose of 32-bit values held in 16 AVX-512 registers (unpack, shuffle within
// 128-bit lanes, then two rounds of 128-bit lane shuffles): the packers of the products
// (fp32 panels, bf16 pair panels) turn rows of a matrix into panel lines with it.
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

namespace rwkv7::cpu {

// GCC 12 reports the intrinsics' own undefined-vector idiom (_mm512_undefined_ps) once they are
// inlined here as "may be used uninitialized" (GCC bug 105593; "is used uninitialized" in the
// sanitizer builds): not a real read. (Clang has neither warning group.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

// On return r[q] holds what was column q: r[q][j] = old r[j][q].
__attribute__((target("avx512f"), always_inline)) inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int j = 0; j < 16; j += 2) {
    t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int j = 0; j < 16; j += 4) {
    r[j] = _mm512_shuffle_ps(t[j], t[j + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[j + 1] = _mm512_shuffle_ps(t[j], t[j + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[j + 2] = _mm512_shuffle_ps(t[j + 1], t[j + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[j + 3] = _mm512_shuffle_ps(t[j + 1], t[j + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int q = 0; q < 4; ++q) {
    t[q] = _mm512_shuffle_f32x4(r[q], r[q + 4], 0x88);
    t[q + 4] = _mm512_shuffle_f32x4(r[q], r[q + 4], 0xdd);
    t[q + 8] = _mm512_shuffle_f32x4(r[q + 8], r[q + 12], 0x88);
    t[q + 12] = _mm512_shuffle_f32x4(r[q + 8], r[q + 12], 0xdd);
  }
  for (int q = 0; q < 8; ++q) {
    r[q] = _mm512_shuffle_f32x4(t[q], t[q + 8], 0x88);
    r[q + 8] = _mm512_shuffle_f32x4(t[q], t[q + 8], 0xdd);
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace rwkv7::cpu
#endif
