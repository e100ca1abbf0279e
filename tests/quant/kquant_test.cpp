// K-quants (Q4_K, Q5_K, Q6_K) and Q5_0 / Q5_1 / IQ4_NL: the block layouts against blocks
// built here from ggml's documented layout (not by our quantiser), known-answer blocks of
// the reference quantisers derived by hand, round-trip error bounds, bad lengths.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/quant.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

void put_half(unsigned char* p, uint16_t bits) { std::memcpy(p, &bits, 2); }

std::vector<float> dequant(DType t, const std::vector<unsigned char>& blocks, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(t, blocks.data(), out.data(), n);
  return out;
}

void expect_all_readers(DType t, const std::vector<unsigned char>& blocks,
                        const std::vector<float>& want) {
  const auto got = dequant(t, blocks, int64_t(want.size()));
  for (size_t e = 0; e < want.size(); ++e) {
    ASSERT_EQ(got[e], want[e]) << dtype_name(t) << " element " << e;
    ASSERT_EQ(dequantize_element(t, blocks.data(), e), want[e]) << dtype_name(t) << " " << e;
    ASSERT_EQ(load_as_f32(t, blocks.data(), e), want[e]) << dtype_name(t) << " " << e;
  }
}

TEST(KQuantFormat, SizesAndNames) {
  EXPECT_EQ(row_bytes(DType::Q4_K, 512), 288u);
  EXPECT_EQ(row_bytes(DType::Q5_K, 256), 176u);
  EXPECT_EQ(row_bytes(DType::Q6_K, 768), 630u);
  EXPECT_EQ(row_bytes(DType::Q5_0, 64), 44u);
  EXPECT_EQ(row_bytes(DType::Q5_1, 64), 48u);
  EXPECT_EQ(row_bytes(DType::IQ4_NL, 64), 36u);
  EXPECT_EQ(quant_block_elems(DType::Q6_K), 256);
  EXPECT_EQ(quant_block_elems(DType::Q5_1), 32);
  EXPECT_EQ(dtype_name(DType::Q4_K), "q4_k");
  EXPECT_EQ(dtype_name(DType::IQ4_NL), "iq4_nl");
  EXPECT_TRUE(is_quantized(DType::Q6_K));
  EXPECT_THROW(row_bytes(DType::Q4_K, 128), Error);  // not a whole super-block
  std::vector<float> x(128);
  std::vector<unsigned char> out(1024);
  EXPECT_THROW(quantize_row(DType::Q5_K, x.data(), out.data(), 128), Error);
  EXPECT_THROW(dequantize_row(DType::Q6_K, out.data(), x.data(), 100), Error);
  EXPECT_THROW(quantize_row(DType::IQ4_NL, x.data(), out.data(), 48), Error);
}

// Q4_K / Q5_K: d = 1, dmin = 0.5; sub-block j has scale sc_j and min m_j, some above 15 so
// that the top-two-bit packing of sub-blocks 4-7 is exercised; level of element e =
// (7e + 3) mod 16 (Q4_K) or (11e + 5) mod 32 (Q5_K).
TEST(KQuantFormat, Q45KHandBuiltBlocksDecode) {
  const int sc[8] = {1, 63, 17, 5, 33, 48, 2, 60}, mn[8] = {0, 7, 63, 16, 35, 1, 50, 12};
  for (bool five : {false, true}) {
    const DType t = five ? DType::Q5_K : DType::Q4_K;
    std::vector<unsigned char> b(quant_block_bytes(t), 0);
    put_half(&b[0], 0x3C00);  // 1.0
    put_half(&b[2], 0x3800);  // 0.5
    unsigned char* s = &b[4];
    for (int j = 0; j < 4; ++j) {
      s[j] = uint8_t(sc[j] & 63);
      s[j + 4] = uint8_t(mn[j] & 63);
    }
    for (int j = 4; j < 8; ++j) {
      s[j + 4] = uint8_t((sc[j] & 15) | (mn[j] & 15) << 4);
      s[j - 4] |= uint8_t((sc[j] >> 4) << 6);
      s[j] |= uint8_t((mn[j] >> 4) << 6);
    }
    std::vector<float> want(256);
    for (int e = 0; e < 256; ++e) {
      const int level = five ? (11 * e + 5) % 32 : (7 * e + 3) % 16;
      const int c = e / 64, l = e % 32;
      const bool high = e % 64 >= 32;
      unsigned char& q = b[(five ? 48 : 16) + 32 * c + l];
      q |= uint8_t(high ? (level & 15) << 4 : level & 15);
      if (five && level >= 16) b[16 + l] |= uint8_t(1 << (2 * c + (high ? 1 : 0)));
      want[size_t(e)] = float(sc[e / 32]) * float(level) - 0.5f * float(mn[e / 32]);
    }
    expect_all_readers(t, b, want);
  }
}

// Q6_K: d = 0.25, sixteen signed scales, level of element e = (13e + 9) mod 64.
TEST(KQuantFormat, Q6KHandBuiltBlockDecodes) {
  std::vector<unsigned char> b(kQ6KBytes, 0);
  const int8_t sc[16] = {1, -1, 127, -128, 5, 9, -30, 64, 2, 3, -4, 100, -100, 7, 0, 33};
  std::memcpy(&b[192], sc, 16);
  put_half(&b[208], 0x3400);  // 0.25
  std::vector<float> want(256);
  for (int e = 0; e < 256; ++e) {
    const int level = (13 * e + 9) % 64;
    const int h = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
    // Quarters 0/1 in the low nibbles of ql[l] / ql[32 + l], 2/3 in the high nibbles; the
    // two top bits in bits 2·quarter of qh[l].
    b[size_t(64 * h + (quarter % 2) * 32 + l)] |=
        uint8_t(quarter < 2 ? level & 15 : (level & 15) << 4);
    b[size_t(128 + 32 * h + l)] |= uint8_t((level >> 4) << (2 * quarter));
    want[size_t(e)] = 0.25f * float(sc[e / 16]) * float(level - 32);
  }
  expect_all_readers(DType::Q6_K, b, want);
}

TEST(KQuantFormat, Block32HandBuiltBlocksDecode) {
  // Q5_0: d = 2, level j = (5j + 1) mod 32, value d·(level - 16).
  std::vector<unsigned char> b0(22, 0), b1(24, 0), bn(18, 0);
  put_half(&b0[0], 0x4000);
  put_half(&b1[0], 0x3800);  // Q5_1: d = 0.5, m = -3
  put_half(&b1[2], 0xC200);
  put_half(&bn[0], 0x3C00);  // IQ4_NL: d = 1
  uint32_t qh0 = 0, qh1 = 0;
  std::vector<float> w0(32), w1(32), wn(32);
  for (int j = 0; j < 32; ++j) {
    const int l0 = (5 * j + 1) % 32, l1 = (9 * j + 30) % 32, ln = (3 * j + 2) % 16;
    const int byte = j % 16, shift = j < 16 ? 0 : 4;
    b0[size_t(6 + byte)] |= uint8_t((l0 & 15) << shift);
    b1[size_t(8 + byte)] |= uint8_t((l1 & 15) << shift);
    bn[size_t(2 + byte)] |= uint8_t(ln << shift);
    qh0 |= uint32_t(l0 >> 4) << j;
    qh1 |= uint32_t(l1 >> 4) << j;
    w0[size_t(j)] = 2.0f * float(l0 - 16);
    w1[size_t(j)] = 0.5f * float(l1) - 3.0f;
    wn[size_t(j)] = float(kIq4nlValues[ln]);
  }
  std::memcpy(&b0[2], &qh0, 4);
  std::memcpy(&b1[4], &qh1, 4);
  expect_all_readers(DType::Q5_0, b0, w0);
  expect_all_readers(DType::Q5_1, b1, w1);
  expect_all_readers(DType::IQ4_NL, bn, wn);
}

std::vector<unsigned char> quantize(DType t, const std::vector<float>& x) {
  std::vector<unsigned char> out(row_bytes(t, int64_t(x.size())));
  quantize_row(t, x.data(), out.data(), int64_t(x.size()));
  return out;
}

std::vector<unsigned char> bytes(std::initializer_list<int> v) {
  std::vector<unsigned char> out;
  for (int b : v) out.push_back(uint8_t(b));
  return out;
}

// Known answers of ggml's reference quantisers for 256 ones, worked by hand from
// quantize_row_q{4,5,6}_K_ref (not produced by this code):
//  Q4_K: every sub-block fits min 0, scale 1/15 (levels 15; the 21 trial scales all give
//    D = 0); scales quantised to 63 against d = f16(1/945) = 0x1456, mins to 0 (dmin 0);
//    sc bytes 0-3 = 63 | (63 >> 4) << 6 = 0xFF, 4-7 = 0, 8-11 = 63 & 15 = 0x0F; qs all 0xFF.
//  Q5_K: scale 1/31, d = f16(1/1953) = 0x1032, same scale bytes, levels 31: ql 0xFF, qh 0xFF.
//  Q6_K: make_qx_quants gives -1/32 (level -32; no trial does better), d = f16(2^-12) =
//    0x0C00, scales nearest(4096 · -1/32) = -128, levels -32 + 32 = 0: ql = qh = 0.
TEST(KQuantFormat, ReferenceQuantiserKnownAnswers) {
  const std::vector<float> ones(256, 1.0f);
  const auto scales = bytes({0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0x0F, 0x0F, 0x0F, 0x0F});
  std::vector<unsigned char> q4 = bytes({0x56, 0x14, 0, 0});
  q4.insert(q4.end(), scales.begin(), scales.end());
  q4.resize(kQ4KBytes, 0xFF);
  EXPECT_EQ(quantize(DType::Q4_K, ones), q4);
  std::vector<unsigned char> q5 = bytes({0x32, 0x10, 0, 0});
  q5.insert(q5.end(), scales.begin(), scales.end());
  q5.resize(kQ5KBytes, 0xFF);
  EXPECT_EQ(quantize(DType::Q5_K, ones), q5);
  std::vector<unsigned char> q6(kQ6KBytes, 0);
  for (int i = 0; i < 16; ++i) q6[size_t(192 + i)] = 0x80;
  q6[209] = 0x0C;
  EXPECT_EQ(quantize(DType::Q6_K, ones), q6);
  for (DType t : {DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    const auto back = dequant(t, quantize(t, ones), 256);
    for (float v : back) ASSERT_NEAR(v, 1.0f, 0.01f) << dtype_name(t);
  }
  // All zero: zero bytes (Q6_K: the group-max guard; Q4_K/Q5_K: scale 0, levels 0).
  const std::vector<float> zeros(256, 0.0f);
  for (DType t : {DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    const auto q = quantize(t, zeros);
    EXPECT_EQ(q, std::vector<unsigned char>(q.size(), 0)) << dtype_name(t);
  }
  // Q5_0 of x_j = j - 16: d = -16 / -16 = 1, levels j (qh = bits 16-31); Q5_1 of x_j = j/2:
  // d = 15.5 / 31 = 0.5, m = 0, levels j.
  std::vector<float> x0(32), x1(32);
  for (int j = 0; j < 32; ++j) {
    x0[size_t(j)] = float(j - 16);
    x1[size_t(j)] = float(j) * 0.5f;
  }
  std::vector<unsigned char> w0 = bytes({0x00, 0x3C, 0x00, 0x00, 0xFF, 0xFF});
  std::vector<unsigned char> w1 = bytes({0x00, 0x38, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF});
  for (int j = 0; j < 16; ++j) {
    w0.push_back(uint8_t(j | j << 4));
    w1.push_back(uint8_t(j | j << 4));
  }
  EXPECT_EQ(quantize(DType::Q5_0, x0), w0);
  EXPECT_EQ(quantize(DType::Q5_1, x1), w1);
}

// Gaussian rows: every element whose level is not at the edge of its range is within half a
// step (d·sc) of the input, plus the f16 rounding of the scales; the RMS error relative to
// the signal is within the usual figures for each width.
TEST(KQuantFormat, RoundTripErrorBounds) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int64_t n = 256 * 16;
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = dist(rng);
  for (size_t i = 0; i < 256; ++i) x[i] *= 1e-3f;  // a small-valued super-block
  const struct {
    DType t;
    double rms;
  } cases[] = {{DType::IQ4_NL, 0.12}, {DType::Q4_K, 0.12}, {DType::Q5_K, 0.06},
               {DType::Q6_K, 0.03},   {DType::Q5_0, 0.07}, {DType::Q5_1, 0.07}};
  for (const auto& c : cases) {
    const auto q = quantize(c.t, x);
    const auto back = dequant(c.t, q, n);
    double err2 = 0, sig2 = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      err2 += double(back[i] - x[i]) * (back[i] - x[i]);
      sig2 += double(x[i]) * x[i];
      ASSERT_TRUE(std::isfinite(back[i]));
    }
    EXPECT_LT(std::sqrt(err2 / sig2), c.rms) << dtype_name(c.t);
    // Reading what we wrote the same way twice: quantising the dequantised row again gives
    // values at least as close (no drift).
    const auto again = dequant(c.t, quantize(c.t, back), n);
    double err3 = 0;
    for (size_t i = 0; i < x.size(); ++i) err3 += double(again[i] - back[i]) * (again[i] - back[i]);
    EXPECT_LE(std::sqrt(err3 / sig2), c.rms) << dtype_name(c.t);
  }
  // Per-element bound for Q6_K: |x - x̂| ≤ |d·sc|/2 (plus f32 rounding) unless clamped.
  const auto q6 = quantize(DType::Q6_K, x);
  const auto b6 = dequant(DType::Q6_K, q6, n);
  for (int64_t sb = 0; sb < n / 256; ++sb) {
    const unsigned char* blk = &q6[size_t(sb) * kQ6KBytes];
    uint16_t h;
    std::memcpy(&h, blk + 208, 2);
    const float d = f16_to_f32(h);
    for (int e = 0; e < 256; ++e) {
      const size_t i = size_t(sb * 256 + e);
      const float step = std::fabs(d * float(int8_t(blk[192 + e / 16])));
      if (step == 0) continue;
      if (std::fabs(b6[i] - x[i]) > step * 0.5f * 1.0001f) {
        // Only a value beyond the last level may be further (clamped to -32 or 31).
        const float level = b6[i] / (d * float(int8_t(blk[192 + e / 16])));
        ASSERT_TRUE(std::fabs(std::fabs(level) - 32) < 1.01f) << "element " << i;
      }
    }
  }
}

// IQ4_NL: an all-zero block stores d = 0 and index 8 (the level nearest 0, as ggml's
// best_index_int8 gives for 0); otherwise every stored index is the table level nearest
// x / d for the stored (f16) d, up to the f16 rounding of d.
TEST(KQuantFormat, Iq4nlPicksTheNearestLevel) {
  std::vector<unsigned char> zero = quantize(DType::IQ4_NL, std::vector<float>(32, 0.0f));
  EXPECT_EQ(zero, bytes({0, 0, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88,
                         0x88, 0x88, 0x88, 0x88, 0x88}));
  std::mt19937 rng(8);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(32 * 64);
  for (float& v : x) v = dist(rng);
  const auto q = quantize(DType::IQ4_NL, x);
  for (size_t b = 0; b < 64; ++b) {
    uint16_t h;
    std::memcpy(&h, &q[18 * b], 2);
    const float d = f16_to_f32(h);
    ASSERT_NE(d, 0.0f);
    for (size_t j = 0; j < 32; ++j) {
      const int nib = j < 16 ? q[18 * b + 2 + j] & 15 : q[18 * b + 2 + j - 16] >> 4;
      const float t = x[32 * b + j] / d;
      float best = 1e30f;
      for (int l = 0; l < 16; ++l) best = std::min(best, std::fabs(float(kIq4nlValues[l]) - t));
      // f16 rounding of d moves t by at most 2^-11 relative: 0.1 level of slack.
      ASSERT_LE(std::fabs(float(kIq4nlValues[nib]) - t), best + 0.1f) << "block " << b << " " << j;
    }
  }
}

}  // namespace
}  // namespace rwkv7
