#pragma once
// ggml's block-quantised weight formats, bit-exact with ggml's layout and its reference
// quantisation (quantize_row_*_ref, what llama-quantize runs without an importance matrix),
// so GGUF files move both ways. f16 = IEEE half, little-endian; "nibble" = 4 bits.
//
// Blocks of 32 (value x[j], level q_j):
//   Q8_0   (34 bytes): f16 d, int8 q[32]             x = d * q
//   Q4_0   (18 bytes): f16 d, u8 qs[16]              x = d * (nib - 8)
//   Q5_0   (22 bytes): f16 d, u32 qh, u8 qs[16]      x = d * (q5 - 16)
//   Q5_1   (24 bytes): f16 d, f16 m, u32 qh, u8 qs   x = d * q5 + m
//   IQ4_NL (18 bytes): f16 d, u8 qs[16]              x = d * kIq4nlValues[nib]
//     nib of j: j < 16 low nibble of qs[j], else high nibble of qs[j - 16];
//     q5 of j: nib | (bit j of qh) << 4.
// Super-blocks of 256 (K-quants), sub-blocks of 32 (Q4_K/Q5_K) or 16 (Q6_K):
//   Q4_K (144 bytes): f16 d, f16 dmin, u8 scales[12], u8 qs[128]
//   Q5_K (176 bytes): f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]
//     sub-block s (elements 32s..32s+31) has 6-bit scale sc_s and min m_s (k4_scale_min):
//       x = d * sc_s * q - dmin * m_s, q = 4 (Q4_K) or 5 (Q5_K) bits.
//     qs is 4 runs of 32 bytes; run c holds elements 64c + l (low nibble) and 64c + 32 + l
//     (high nibble), l < 32. Q5_K's fifth bit of element 64c + l is bit 2c of qh[l], of
//     64c + 32 + l bit 2c + 1.
//   Q6_K (210 bytes): u8 ql[128], u8 qh[64], int8 scales[16], f16 d
//     x = d * scales[e / 16] * (q - 32), q 6 bits. Per half h (elements 128h + ...), with
//     L = ql + 64h, H = qh + 32h, l < 32: element l: low nib L[l], bits 0-1 of H[l];
//     32 + l: low nib L[32 + l], bits 2-3; 64 + l: high nib L[l], bits 4-5;
//     96 + l: high nib L[32 + l], bits 6-7 (the two bits are q's bits 4-5).
//
// A row of a quantised [rows, cols] matrix is cols / block consecutive blocks.
#include <cstddef>
#include <cstdint>

#include "core/dtype.hpp"

namespace rwkv7 {

constexpr int64_t kQuantBlock = 32;   // elements per block of the 32-types (QK8_0 = QK4_0 = 32)
constexpr int64_t kSuperBlock = 256;  // elements per K-quant super-block (QK_K)
constexpr size_t kQ8Bytes = 34;
constexpr size_t kQ4Bytes = 18;
constexpr size_t kQ4KBytes = 144;
constexpr size_t kQ5KBytes = 176;
constexpr size_t kQ6KBytes = 210;
// Byte offsets inside the K-quant super-blocks (ggml's block_q4_K / block_q5_K / block_q6_K):
//   Q4_K: d (f16) @0, dmin (f16) @2, 12 bytes of 6-bit scales and mins @4, 128 qs @16
//   Q5_K: as Q4_K up to @16, then 32 qh @16 and 128 qs @48
//   Q6_K: 128 ql @0, 64 qh @128, 16 int8 scales @192, d (f16) @208
constexpr size_t kK45DminAt = 2, kK45ScalesAt = 4;
constexpr size_t kQ4KQsAt = 16, kQ5KQhAt = 16, kQ5KQsAt = 48;
constexpr size_t kQ6KQhAt = 128, kQ6KScalesAt = 192, kQ6KDAt = 208;

// IQ4_NL's 16 levels (ggml's kvalues_iq4nl).
inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// Bytes / elements of one block of a quantised type; Error for plain types.
size_t quant_block_bytes(DType t);
int64_t quant_block_elems(DType t);  // 32 or 256
bool is_k_quant(DType t);            // Q4_K, Q5_K, Q6_K

// Sub-block j < 8 of a Q4_K/Q5_K super-block: its 6-bit scale and min from scales[12]
// (j < 4: low 6 bits of bytes j and j + 4; else nibbles of byte j + 4 and the top two bits
// of bytes j - 4 and j).
inline void k4_scale_min(int j, const uint8_t* s, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = uint8_t((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
    *m = uint8_t((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// Element e < 256 of a Q4_K / Q5_K super-block b as its level (0..15 / 0..31).
inline int q45k_level(const uint8_t* b, int e, bool five) {
  const int c = e / 64, l = e % 32;
  const bool high = e % 64 >= 32;
  const uint8_t byte = b[(five ? kQ5KQsAt : kQ4KQsAt) + 32 * c + l];
  int q = high ? byte >> 4 : byte & 0x0F;
  if (five) q |= ((b[kQ5KQhAt + l] >> (2 * c + int(high))) & 1) << 4;
  return q;
}

// Element e < 256 of a Q6_K super-block b as its 6-bit level (0..63; the value is q - 32).
inline int q6k_level(const uint8_t* b, int e) {
  const int h = e / 128, quarter = e % 128 / 32, l = e % 32;
  const uint8_t nib = b[64 * h + (quarter & 1) * 32 + l];
  const int low = quarter < 2 ? nib & 0x0F : nib >> 4;
  return low | (((b[kQ6KQhAt + 32 * h + l] >> (2 * quarter)) & 3) << 4);
}

// n (multiple of the block) floats → n/block blocks, as ggml's reference quantiser does it.
void quantize_row_q8_0(const float* x, void* out, int64_t n);
void quantize_row_q4_0(const float* x, void* out, int64_t n);
void quantize_row(DType t, const float* x, void* out, int64_t n);

// n/block blocks → n floats.
void dequantize_row(DType t, const void* in, float* out, int64_t n);

// Element i of consecutive blocks of type t.
float dequantize_element(DType t, const void* data, size_t i);

// Decodes n/32 blocks of Q8_0 or Q4_0 into int8 values q (Q4_0: nibble - 8, in [-8, 7]) and
// one fp32 scale per block: x[j] = d[j / 32] * q[j]. The integer form the fast matmul uses.
void unpack_row_i8(DType t, const void* in, int8_t* q, float* d, int64_t n);

// The K-quant and 5-bit / IQ4_NL halves of the above (core/quant_k.cpp, quant_32.cpp).
namespace detail {
void quantize_row_k(DType t, const float* x, void* out, int64_t n);
void dequantize_row_k(DType t, const void* in, float* out, int64_t n);
float dequantize_element_k(DType t, const void* data, size_t i);
void quantize_row_32(DType t, const float* x, void* out, int64_t n);    // Q5_0, Q5_1, IQ4_NL
void dequantize_block_32(DType t, const unsigned char* b, float* out);  // one block of 32
}  // namespace detail

}  // namespace rwkv7
