// Every fast kernel against its reference twin on random shapes (DESIGN: dtype-derived
// tolerances: the weights are identical in both, so only fp32 accumulation order differs).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iterator>
#include <random>
#include <tuple>
#include <vector>

#include "backends/cpu/kquant_kernels.hpp"
#include "backends/cpu/quant_kernels.hpp"
#include "core/dtype.hpp"
#include "core/quant.hpp"
#include "core/thread_pool.hpp"
#include "every_target.hpp"
#include "ops/ops.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

// Stores `values` in dtype t; returns the raw buffer (as uint16 or float words).
std::vector<uint32_t> store(const std::vector<float>& values, DType t) {
  std::vector<uint32_t> raw((values.size() * dtype_size(t) + 3) / 4);
  auto* p = reinterpret_cast<unsigned char*>(raw.data());
  for (size_t i = 0; i < values.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(p + 4 * i, &values[i], 4);
    } else {
      uint16_t h = t == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
      std::memcpy(p + 2 * i, &h, 2);
    }
  }
  return raw;
}

struct MatmulCase {
  DType dtype;
  int64_t rows, cols, count;
};

class BackendMatmul : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(BackendMatmul, CpuEqualsReference) {
  const MatmulCase c = GetParam();
  std::mt19937 rng{unsigned(c.rows * 131 + c.cols * 7 + c.count)};
  const auto values = testing::randn(size_t(c.rows * c.cols), rng, 0.5f);
  const auto raw = store(values, c.dtype);
  const Matrix w{c.dtype, c.rows, c.cols, raw.data()};
  const auto x = testing::randn(size_t(c.count * c.cols), rng);
  std::vector<float> want(size_t(c.count * c.rows)), got(want.size(), -1.0f);
  make_reference_backend()->matmul({w, x.data(), want.data(), c.count});
  ThreadPool pool(2);
  make_cpu_backend(&pool)->matmul({w, x.data(), got.data(), c.count});
  // fp32 accumulation of `cols` products of size ~|w||x|: relative error ~ cols · 2^-24.
  const double tol = 1e-6 * std::sqrt(double(c.cols)) * 8 + 1e-6;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * std::max(1.0, std::fabs(double(want[i])))) << "at " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, BackendMatmul,
    ::testing::Values(MatmulCase{DType::F32, 1, 1, 1}, MatmulCase{DType::F32, 7, 13, 3},
                      MatmulCase{DType::F32, 64, 64, 8}, MatmulCase{DType::F32, 100, 37, 9},
                      MatmulCase{DType::F32, 130, 96, 70}, MatmulCase{DType::F32, 48, 256, 200},
                      MatmulCase{DType::BF16, 97, 64, 1}, MatmulCase{DType::BF16, 200, 160, 33},
                      MatmulCase{DType::F16, 50, 72, 4}, MatmulCase{DType::F16, 33, 100, 1},
                      MatmulCase{DType::BF16, 300, 769, 1}, MatmulCase{DType::F16, 113, 200, 130},
                      MatmulCase{DType::F32, 16, 3000, 11}, MatmulCase{DType::F32, 301, 130, 1},
                      MatmulCase{DType::F32, 7, 64, 1}),
    // Names from the values (the default prints the struct's bytes, padding included, which
    // differ from run to run, so ctest's discovered names would not match the run's).
    [](const ::testing::TestParamInfo<MatmulCase>& info) {
      const MatmulCase& c = info.param;
      return std::string(dtype_name(c.dtype)) + "_" + std::to_string(c.rows) + "x" +
             std::to_string(c.cols) + "_n" + std::to_string(c.count);
    });

// Quantised weights for decode batches (8 .. 64 positions: rows dequantised in order, positions
// packed, cpu::small_gemm) and around the edges of that path, against the reference backend
// on the same weights: only fp32 accumulation order differs.
TEST(BackendMatmul, QuantisedDecodeBatchesEqualReference) {
  struct Case {
    DType dtype;
    int64_t rows, cols, count;
  };
  const Case cases[] = {
      {DType::Q8_0, 130, 96, 8},   {DType::Q8_0, 200, 160, 33}, {DType::Q4_0, 97, 64, 64},
      {DType::Q4_0, 50, 96, 17},   {DType::Q8_0, 61, 256, 16},  {DType::Q8_0, 25, 64, 65},
      {DType::Q4_0, 301, 128, 47}, {DType::Q4_K, 130, 256, 8},  {DType::Q6_K, 97, 512, 3},
      {DType::Q5_K, 50, 768, 70},  {DType::Q4_K, 33, 256, 200}, {DType::Q5_0, 40, 96, 5},
      {DType::Q5_1, 70, 160, 12},  {DType::Q6_K, 20, 256, 2},   {DType::Q6_K, 70, 768, 9}};
  for (const Case& c : cases) {
    std::mt19937 rng{unsigned(c.rows * 31 + c.cols + c.count)};
    const auto values = testing::randn(size_t(c.rows * c.cols), rng, 0.5f);
    const size_t rb = row_bytes(c.dtype, c.cols);
    std::vector<unsigned char> raw(rb * size_t(c.rows));
    for (int64_t o = 0; o < c.rows; ++o)
      quantize_row(c.dtype, &values[size_t(o * c.cols)], raw.data() + size_t(o) * rb, c.cols);
    const Matrix w{c.dtype, c.rows, c.cols, raw.data()};
    const auto x = testing::randn(size_t(c.count * c.cols), rng);
    std::vector<float> want(size_t(c.count * c.rows)), got(want.size(), -1.0f);
    make_reference_backend()->matmul({w, x.data(), want.data(), c.count});
    ThreadPool pool(2);
    make_cpu_backend(&pool)->matmul({w, x.data(), got.data(), c.count});
    const double tol = 1e-6 * std::sqrt(double(c.cols)) * 8 + 1e-6;
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], want[i], tol * std::max(1.0, std::fabs(double(want[i]))))
          << dtype_name(c.dtype) << " " << c.rows << "x" << c.cols << " count " << c.count << " at "
          << i;
  }
}

// Decode runs a layer's independent products in one parallel region (matmul_many, rows split
// between threads by bytes): a mix of dtypes and sizes whose row costs differ, each output
// against an independent oracle — the reference backend for plain dtypes, and for Q8_0/Q4_0
// the scalar twin of the decode kernels fed by ggml's scalar activation quantiser.
TEST(BackendMatmulMany, OneRegionEqualsTheOracles) {
  std::mt19937 rng{17};
  struct Spec {
    DType dtype;
    int64_t rows, cols;
  };
  const Spec specs[] = {{DType::F32, 37, 100},  {DType::BF16, 300, 64}, {DType::Q8_0, 130, 96},
                        {DType::Q4_0, 77, 256}, {DType::F16, 5, 32},    {DType::F32, 1, 3},
                        {DType::Q4_K, 61, 512}, {DType::Q5_K, 9, 256},  {DType::Q6_K, 45, 768},
                        {DType::Q5_0, 13, 64},  {DType::Q5_1, 30, 96}};
  std::vector<std::vector<unsigned char>> raws;
  std::vector<std::vector<float>> xs;
  for (const Spec& sp : specs) {
    const auto values = testing::randn(size_t(sp.rows * sp.cols), rng, 0.5f);
    std::vector<unsigned char> raw(size_t(sp.rows) * row_bytes(sp.dtype, sp.cols));
    if (is_quantized(sp.dtype)) {
      for (int64_t r = 0; r < sp.rows; ++r)
        quantize_row(sp.dtype, &values[size_t(r * sp.cols)],
                     raw.data() + size_t(r) * row_bytes(sp.dtype, sp.cols), sp.cols);
    } else {
      const auto words = store(values, sp.dtype);
      std::memcpy(raw.data(), words.data(), raw.size());
    }
    raws.push_back(std::move(raw));
    xs.push_back(testing::randn(size_t(sp.cols), rng));
  }
  std::vector<Matrix> mats;
  for (size_t i = 0; i < std::size(specs); ++i)
    mats.push_back(Matrix{specs[i].dtype, specs[i].rows, specs[i].cols, raws[i].data()});
  std::vector<std::vector<float>> want(mats.size()), got(mats.size());
  std::vector<MatmulArgs> list;
  auto reference = make_reference_backend();
  for (size_t i = 0; i < mats.size(); ++i) {
    const Matrix& w = mats[i];
    want[i].assign(size_t(w.rows), 0.0f);
    got[i].assign(size_t(w.rows), -1.0f);
    if (is_quantized(w.dtype)) {
      const size_t nb = size_t(w.cols / 32);
      std::vector<unsigned char> blocks(row_bytes(DType::Q8_0, w.cols));
      std::vector<int8_t> q(size_t(w.cols));
      std::vector<float> d(nb);
      std::vector<int32_t> neg_s4(8 * nb);
      quantize_row_q8_0(xs[i].data(), blocks.data(), w.cols);
      unpack_row_i8(DType::Q8_0, blocks.data(), q.data(), d.data(), w.cols);
      cpu::q8_act_lane_sums(q.data(), nb, neg_s4.data());
      std::vector<float> dsum(nb);
      cpu::q8_act_block_sums(d.data(), neg_s4.data(), nb, dsum.data());
      const cpu::Q8Act act{q.data(), d.data(), neg_s4.data(), nb, dsum.data()};
      const auto* wp = static_cast<const uint8_t*>(w.data);
      const size_t rb = row_bytes(w.dtype, w.cols);
      if (w.dtype == DType::Q8_0 || w.dtype == DType::Q4_0) {
        const auto twin = w.dtype == DType::Q8_0 ? cpu::matvec_q8_0_ref : cpu::matvec_q4_0_ref;
        twin(wp, rb, size_t(w.rows), act, want[i].data());
      } else {
        cpu::matvec_kquant_ref(w.dtype, wp, rb, size_t(w.rows), act, want[i].data());
      }
    } else {
      reference->matmul({w, xs[i].data(), want[i].data(), 1});
    }
    list.push_back({w, xs[i].data(), got[i].data(), 1});
  }
  ThreadPool pool(2);
  make_cpu_backend(&pool)->matmul_many(list);
  for (size_t i = 0; i < mats.size(); ++i) {
    // fp32 sums of `cols` products in another order (the twins' integer block sums are exact).
    const double tol = 1e-6 * std::sqrt(double(mats[i].cols)) * 8 + 1e-6;
    for (size_t r = 0; r < got[i].size(); ++r) {
      ASSERT_NEAR(got[i][r], want[i][r], tol * std::max(1.0, std::fabs(double(want[i][r]))))
          << "product " << i << " (" << dtype_name(mats[i].dtype) << ") row " << r;
    }
  }
}

// WKV-7 inputs of T positions and H heads of size N as the graph makes them: a = -kk,
// b = kk * rate with |kk| = 1 per head, decay in (0.55, 1), and a random starting state.
struct WkvCase {
  int64_t T, H, N;
  std::vector<float> r, k, v, decay, a, b, state, y;
  WkvCase(int64_t T_, int64_t H_, int64_t N_, unsigned seed) : T(T_), H(H_), N(N_) {
    const int64_t C = H * N;
    std::mt19937 rng{seed};
    std::uniform_real_distribution<float> u01(0.55f, 1.0f);
    r = testing::randn(size_t(T * C), rng), k = testing::randn(size_t(T * C), rng, 0.3f);
    v = testing::randn(size_t(T * C), rng);
    const auto kk = testing::randn(size_t(T * C), rng);
    decay.resize(size_t(T * C)), a.resize(size_t(T * C)), b.resize(size_t(T * C));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        double norm = 0;
        for (int64_t j = 0; j < N; ++j)
          norm += kk[size_t(t * C + h * N + j)] * kk[size_t(t * C + h * N + j)];
        for (int64_t j = 0; j < N; ++j) {
          const size_t i = size_t(t * C + h * N + j);
          const float unit = float(kk[i] / std::sqrt(norm)), rate = u01(rng);
          a[i] = -unit;
          b[i] = unit * rate;
          decay[i] = u01(rng);
        }
      }
    }
    state.resize(size_t(H * N * N));
    for (float& x : state) x = std::normal_distribution<float>(0, 0.1f)(rng);
    y.assign(size_t(T * C), NAN);
  }
  Wkv7Args args() {
    return {T,        H,        N,        r.data(),     decay.data(), k.data(),
            v.data(), a.data(), b.data(), state.data(), y.data()};
  }
};

// A decode batch's stage: several products of `count` positions over bf16, f16 and fp32 panels
// in one parallel region (LoRA-sized ones of one panel among them, plus an fp32 one without
// panels that runs on its own; one of several blocks of inputs) give what the oracle gives for each
// product alone. From 64 positions on (a prefill chunk) the products read X packed in tiles.
void panel_products_of_a_batch(int64_t count) {
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(&pool);
  auto ref = make_reference_backend();
  std::mt19937 rng{unsigned(77 + count)};
  struct Product {
    std::vector<uint32_t> raw;
    Matrix w, plain;
    std::vector<float> x, want, got;
    std::shared_ptr<const void> owner;
  };
  std::vector<Product> ps;
  for (auto [rows, cols, dtype, mapped] :
       {std::tuple<int64_t, int64_t, DType, bool>{256, 128, DType::BF16, false},
        {32, 128, DType::BF16, false},
        {129, 64, DType::BF16, false},
        {70, 96, DType::F16, false},
        {100, 64, DType::F32, true},
        {48, 300, DType::F16, false},  // inputs in three blocks of the packed depth
        {40, 72, DType::F32, false}}) {
    Product& p = ps.emplace_back();
    p.raw = store(testing::randn(size_t(rows * cols), rng, 0.5f), dtype);
    p.w = Matrix{dtype, rows, cols, p.raw.data()};
    p.plain = p.w;
    p.owner = prepare_cpu_panels(p.w, pool, mapped);
    ASSERT_EQ(p.w.cpu_panels != nullptr, dtype != DType::F32 || mapped);
    p.x = testing::randn(size_t(count * cols), rng);
    p.want.assign(size_t(count * rows), 0.0f);
    p.got.assign(size_t(count * rows), -1.0f);
  }
  std::vector<MatmulArgs> list;
  for (Product& p : ps) list.push_back({p.w, p.x.data(), p.got.data(), count});
  cpu->matmul_many(list);
  for (Product& p : ps) {
    ref->matmul({p.plain, p.x.data(), p.want.data(), count});
    const double tol = 1e-6 * std::sqrt(double(p.w.cols)) * 8 + 1e-6;
    for (size_t i = 0; i < p.got.size(); ++i)
      ASSERT_NEAR(p.got[i], p.want[i], tol * std::max(1.0, std::fabs(double(p.want[i]))))
          << p.w.rows << "x" << p.w.cols << " at " << i;
  }
}

TEST(BackendMatmulMany, PanelProductsOfABatchInOneRegionEqualTheOracle) {
  testing::on_every_target([] {
    for (int64_t count : {32, 70}) panel_products_of_a_batch(count);
  });
}

// A decode batch's sequences in one parallel region (one unit per sequence and head) give what
// the oracle gives for each sequence alone, with both the per-step and the sequence kernels.
TEST(BackendWkv7, ManySequencesInOneRegionEqualEachAlone) {
  std::vector<WkvCase> want, got;
  int64_t seed = 0;
  for (int64_t T : {1, 2, 5, 37, 1, 1}) want.emplace_back(T, 3, 64, unsigned(++seed));
  got = want;
  std::vector<Wkv7Args> list;
  for (WkvCase& c : got) list.push_back(c.args());
  ThreadPool pool(2);
  make_cpu_backend(&pool)->wkv7_many(list);
  auto ref = make_reference_backend();
  for (size_t s = 0; s < want.size(); ++s) {
    ref->wkv7(want[s].args());
    for (size_t i = 0; i < want[s].y.size(); ++i)
      ASSERT_NEAR(got[s].y[i], want[s].y[i], 1e-4 * std::max(1.0f, std::fabs(want[s].y[i])))
          << "sequence " << s << " y " << i;
    for (size_t i = 0; i < want[s].state.size(); ++i)
      ASSERT_NEAR(got[s].state[i], want[s].state[i],
                  1e-4 * std::max(1.0f, std::fabs(want[s].state[i])))
          << "sequence " << s << " S " << i;
  }
}

// bf16, f16 and fp32 weights packed into panels at load (prepare_cpu_panels; fp32 only for a
// view of a file mapping): every product size (one position, a few, a decode batch, prefill)
// reads the panels and equals the oracle on the row-major values; rows not a multiple of the
// panel width leave a padded last panel.
void panels_equal_reference() {
  ThreadPool pool(2);
  auto cpu = make_cpu_backend(&pool);
  auto ref = make_reference_backend();
  for (const DType dtype : {DType::BF16, DType::F16, DType::F32})
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{200, 96}, {64, 33}, {7, 768}}) {
      SCOPED_TRACE(dtype_name(dtype));
      std::mt19937 rng{unsigned(rows + cols)};
      const auto raw = store(testing::randn(size_t(rows * cols), rng, 0.5f), dtype);
      Matrix w{dtype, rows, cols, raw.data()};
      const Matrix plain = w;
      auto owner = prepare_cpu_panels(w, pool, /*data_is_mapped=*/true);
      ASSERT_TRUE(owner);
      ASSERT_NE(w.cpu_panels, nullptr);
      // The panels replace the data: products poisoned through `data` would show.
      const std::vector<uint32_t> poison(raw.size(), 0x7fc00000u);  // NaN in every format
      w.data = poison.data();
      for (int64_t count : {1, 3, 5, 6, 8, 9, 10, 32, 100}) {
        const auto x = testing::randn(size_t(count * cols), rng);
        std::vector<float> want(size_t(count * rows)), got(want.size(), -1.0f);
        ref->matmul({plain, x.data(), want.data(), count});
        cpu->matmul({w, x.data(), got.data(), count});
        const double tol = 1e-6 * std::sqrt(double(cols)) * 8 + 1e-6;
        for (size_t i = 0; i < got.size(); ++i)
          ASSERT_NEAR(got[i], want[i], tol * std::max(1.0, std::fabs(double(want[i]))))
              << rows << "x" << cols << " count " << count << " at " << i;
      }
    }
  // fp32 panels would be a second copy of a buffer in memory: only made for a file's pages.
  std::vector<float> f(64 * 64, 1.0f);
  Matrix m{DType::F32, 64, 64, f.data()};
  EXPECT_FALSE(prepare_cpu_panels(m, pool, /*data_is_mapped=*/false));
  EXPECT_EQ(m.cpu_panels, nullptr);
  // Unless the caller accepts the copy (a small LoRA factor); the values stay where they were.
  const auto copy = prepare_cpu_panels(m, pool, /*data_is_mapped=*/false, /*fp32_copy_ok=*/true);
  EXPECT_TRUE(copy);
  EXPECT_NE(m.cpu_panels, nullptr);
  EXPECT_EQ(m.data, f.data());
}

TEST(BackendMatmul, PanelsEqualReference) { testing::on_every_target(panels_equal_reference); }

TEST(BackendWkv7, CpuEqualsReferenceOverManySteps) {
  // T = 2 takes the per-step kernel, T = 37 the transposed-state sequence kernel; N = 4 and
  // 24 leave padded lanes.
  for (auto [N, T] : {std::pair<int64_t, int64_t>{4, 37},
                      {16, 37},
                      {24, 37},
                      {32, 37},
                      {64, 37},
                      {64, 2},
                      {24, 2}}) {
    const int64_t H = 3, C = H * N;
    std::mt19937 rng{unsigned(N + T)};
    std::uniform_real_distribution<float> u01(0.55f, 1.0f);
    auto r = testing::randn(size_t(T * C), rng), k = testing::randn(size_t(T * C), rng, 0.3f),
         v = testing::randn(size_t(T * C), rng), kk = testing::randn(size_t(T * C), rng);
    std::vector<float> decay(size_t(T * C)), a(size_t(T * C)), b(size_t(T * C));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {  // a = -kk, b = kk * rate with |kk| = 1 per head
        double norm = 0;
        for (int64_t j = 0; j < N; ++j)
          norm += kk[size_t(t * C + h * N + j)] * kk[size_t(t * C + h * N + j)];
        for (int64_t j = 0; j < N; ++j) {
          const size_t i = size_t(t * C + h * N + j);
          const float unit = float(kk[i] / std::sqrt(norm)), rate = u01(rng);
          a[i] = -unit;
          b[i] = unit * rate;
          decay[i] = u01(rng);
        }
      }
    }
    std::vector<float> s_ref(size_t(H * N * N)), s_cpu, y_ref(size_t(T * C)), y_cpu(size_t(T * C));
    for (float& s : s_ref) s = std::normal_distribution<float>(0, 0.1f)(rng);
    s_cpu = s_ref;
    make_reference_backend()->wkv7({T, H, N, r.data(), decay.data(), k.data(), v.data(), a.data(),
                                    b.data(), s_ref.data(), y_ref.data()});
    ThreadPool pool(2);
    make_cpu_backend(&pool)->wkv7({T, H, N, r.data(), decay.data(), k.data(), v.data(), a.data(),
                                   b.data(), s_cpu.data(), y_cpu.data()});
    for (size_t i = 0; i < y_ref.size(); ++i)
      ASSERT_NEAR(y_cpu[i], y_ref[i], 1e-4 * std::max(1.0f, std::fabs(y_ref[i])))
          << N << " y " << i;
    for (size_t i = 0; i < s_ref.size(); ++i)
      ASSERT_NEAR(s_cpu[i], s_ref[i], 1e-4 * std::max(1.0f, std::fabs(s_ref[i])))
          << N << " S " << i;
  }
}

}  // namespace
}  // namespace rwkv7
