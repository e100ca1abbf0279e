// CPU backend: SIMD kernels (kernels.cpp) spread over a thread pool.
#include <algorithm>
#include <vector>

#include "backends/backend.hpp"
#include "backends/cpu/bf16_product.hpp"
#include "backends/cpu/dequant_kernels.hpp"
#include "backends/cpu/gemm_bf16_kernels.hpp"
#include "backends/cpu/gemm_packed_kernels.hpp"
#include "backends/cpu/gemm_small_kernels.hpp"
#include "backends/cpu/kernels.hpp"
#include "backends/cpu/kquant_kernels.hpp"
#include "backends/cpu/pair_panels.hpp"
#include "backends/cpu/pointwise_kernels.hpp"
#include "backends/cpu/product_tiling.hpp"
#include "backends/cpu/q4_panels_kernels.hpp"
#include "backends/cpu/q4k_panels_kernels.hpp"
#include "backends/cpu/q6k_panels_kernels.hpp"
#include "backends/cpu/q8_panels_kernels.hpp"
#include "backends/cpu/quant_kernels.hpp"
#include "backends/cpu/weight_panels_kernels.hpp"
#include "backends/cpu/wkv7_backward_kernels.hpp"
#include "backends/reference/wkv7_train_scalar.hpp"
#include "core/quant.hpp"
#include "core/thread_pool.hpp"
#include "hwy/aligned_allocator.h"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

constexpr int64_t kRowTile = 64;     // positions per pass over a weight row: x tile stays in L2
constexpr int64_t kGemmMinRows = 8;  // below this the products are memory-bound: dot rows
constexpr int64_t kWkvSeqMinSteps = 4;
constexpr int64_t kPanelDepth = 128;  // inputs per packed panel: 128 × 64 floats = 32 KB of L1

class CpuBackend final : public Backend {
 public:
  CpuBackend(ThreadPool* pool, ProductPrecision precision)
      : pool_(pool), precision_(precision), parts_(size_t(pool->size())) {}
  std::string name() const override { return "cpu"; }
  const PointwiseOps& pointwise() const override { return cpu::simd_pointwise_ops(); }
  void parallel_rows(int64_t rows, FunctionRef<void(int64_t, int64_t)> fn) const override {
    pool_->parallel_for(rows, 2, fn);
  }

  void matmul(const MatmulArgs& a) const override {
    const Matrix& w = a.w;
    check_panel_layout(w);
    const MatmulArgs* ap = &a;
    // bf16 pair panels made at load: every product over them in bf16, whatever the count.
    if (w.cpu_pair_panels) return pair_products(std::span<const MatmulArgs>(&a, 1));
    if (precision_ == ProductPrecision::BF16 && w.dtype == DType::F32 && a.count > 0 &&
        w.cols > 0)  // (an empty sum goes the fp32 way: zeros)
      return gemm_bf16(GemmOperand{a.x, w.cols, false}, a.count, w.rows, w.cols,
                       GemmOperand{static_cast<const float*>(w.data), w.cols, true, w.bf16_rows},
                       a.y, w.rows, false);
    if (a.count == 1) return matvec_many(std::span<const MatmulArgs>(&a, 1));
    // Integer panels: positions quantised once, every panel multiplied in integers.
    if (w.cpu_int_panels) return panel_products(std::span<const MatmulArgs* const>(&ap, 1));
    // Panels packed at load: widened line by line into the L1 panel (fp32: read in place), no
    // transpose per call.
    if (w.cpu_panels) return matmul_gemm(a);
    if (is_quantized(w.dtype)) {
      // 2-7 positions: integer dots; decode batches: rows dequantised in order, positions
      // packed (measured faster than dequantising into packed panels: rwkv7 bench --batch).
      // The other block types have no int8 + scale form: rows dequantised for them too.
      const bool int8_form = w.dtype == DType::Q8_0 || w.dtype == DType::Q4_0;
      if (a.count < kGemmMinRows && int8_form) return matmul_quantized(a);
      if (size_t(a.count) <= cpu::small_gemm_max_positions()) return matmul_small(a);
    }
    // bf16/f16/f32 from 8 positions on: packed panels (bf16 widened while packed), measured
    // faster than matmul_small for them at 16, 32 and 64 positions.
    if (a.count >= kGemmMinRows) return matmul_gemm(a);
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, w.cols));
    pool_->parallel_parts(w.rows, grain, [&](int part, int64_t begin, int64_t end) {
      std::vector<float>& row = parts_[size_t(part)].row;
      row.resize(w.dtype == DType::F32 ? 0 : size_t(w.cols));
      for (int64_t t0 = 0; t0 < a.count; t0 += kRowTile) {
        const int64_t tn = std::min(kRowTile, a.count - t0);
        for (int64_t o = begin; o < end; ++o) {
          const float* wrow = widen_row(w, o, row.data());
          cpu::dot_rows(wrow, a.x + t0 * w.cols, size_t(w.cols), size_t(tn), a.y + t0 * w.rows + o,
                        size_t(w.rows));
        }
      }
    });
  }

  // Decode-sized products (one position each) share one parallel region; so do the products
  // of several positions over panels made at load (a decode batch's stage); the others run one by
  // one.
  void matmul_many(std::span<const MatmulArgs> list) const override {
    for (const MatmulArgs& a : list) check_panel_layout(a.w);
    if (std::any_of(list.begin(), list.end(),
                    [](const MatmulArgs& a) { return a.w.cpu_pair_panels != nullptr; })) {
      // The bf16 products in one region of their own, the others as usual.
      std::vector<MatmulArgs>&pairs = decode_.pair_args, &rest = decode_.rest_args;
      pairs.clear();
      rest.clear();
      for (const MatmulArgs& a : list) (a.w.cpu_pair_panels ? pairs : rest).push_back(a);
      pair_products(pairs);
      if (!rest.empty()) matmul_many(rest);
      return;
    }
    if (precision_ == ProductPrecision::BF16) {  // the fp32 weights' products are not fp32
      for (const MatmulArgs& a : list) matmul(a);
      return;
    }
    const bool one_position =
        std::all_of(list.begin(), list.end(), [](const MatmulArgs& a) { return a.count == 1; });
    if (one_position) return matvec_many(list);
    std::vector<const MatmulArgs*>& panel_list = decode_.panel_list;
    panel_list.clear();
    for (const MatmulArgs& a : list) {
      if ((a.w.cpu_panels || a.w.cpu_int_panels) && a.count > 1)
        panel_list.push_back(&a);
      else
        matmul(a);
    }
    if (panel_list.size() == 1 && panel_list[0]->w.cpu_panels) return matmul(*panel_list[0]);
    if (!panel_list.empty()) panel_products(panel_list);
  }

  // Products over bf16 pair panels (LoadOptions::precision "bf16"), all in one region.
  void pair_products(std::span<const MatmulArgs> list) const {
    std::vector<cpu::PairProduct>& products = decode_.pair_products;
    products.clear();
    for (const MatmulArgs& a : list) {
      if (a.count <= 0) continue;
      if (a.w.cols <= 0) {  // an empty sum
        std::fill_n(a.y, a.count * a.w.rows, 0.0f);
        continue;
      }
      products.push_back(
          {a.w.cpu_pair_panels, a.w.rows, a.w.cols, a.x, a.count, a.y, a.w.cpu_pairs_split_x});
    }
    if (!products.empty()) cpu::pair_panel_products(*pool_, pair_scratch_, products);
  }

  // The packed product with the operands read through their transpose flags: B's panels are
  // packed from B's rows (copied) or from its columns (transposed in registers), A's rows
  // are read down A's columns when A is transposed. No transposed copy, nothing allocated.
  void gemm(const GemmArgs& g) const override {
    if (g.M <= 0 || g.N <= 0) return;
    if (g.K <= 0) {  // an empty sum
      if (!g.accumulate)
        for (int64_t m = 0; m < g.M; ++m) std::fill_n(g.c + m * g.ldc, g.N, 0.0f);
      return;
    }
    if (precision_ == ProductPrecision::BF16)
      return gemm_bf16(g.a, g.M, g.N, g.K, g.b, g.c, g.ldc, g.accumulate);
    pack_then_product(g.a, g.M, g.N, g.K, g.b, g.c, g.ldc, g.accumulate, false);
  }

  void wkv7(const Wkv7Args& p) const override { wkv7_many(std::span<const Wkv7Args>(&p, 1)); }

  // Every (sequence, head) pair of the list is one unit of one parallel region.
  void wkv7_many(std::span<const Wkv7Args> list) const override {
    if (list.empty()) return;
    const int64_t H = list[0].H;
    for (const Wkv7Args& p : list)
      if (p.H != H) {  // mixed head counts do not come from one model: one region each
        for (const Wkv7Args& q : list) wkv7_many(std::span<const Wkv7Args>(&q, 1));
        return;
      }
    pool_->parallel_for(int64_t(list.size()) * H, 1, [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) wkv7_head(list[size_t(u / H)], u % H);
    });
  }

  // Every (sequence, head) pair is one unit of one parallel region; the SIMD kernel, or the
  // scalar recurrence for heads too wide for it.
  void wkv7_backward(std::span<const Wkv7TrainArgs<float>> list) const override {
    if (list.empty()) return;
    const int64_t H = list[0].H;
    for (const Wkv7TrainArgs<float>& p : list)
      if (p.H != H) {  // mixed head counts do not come from one model: one region each
        for (const Wkv7TrainArgs<float>& q : list) wkv7_backward({&q, 1});
        return;
      }
    pool_->parallel_for(int64_t(list.size()) * H, 1, [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const Wkv7TrainArgs<float>& p = list[size_t(u / H)];
        if (!cpu::wkv7_head_backward(p, u % H)) wkv7_scalar::head_backward<float>(p, u % H);
      }
    });
  }

 private:
  struct PartScratch;  // below: buffers kept between calls

  void wkv7_head(const Wkv7Args& p, int64_t h) const {
    const int64_t C = p.H * p.N, o = h * p.N;
    float* S = p.state + h * p.N * p.N;
    // The sequence form transposes the state in and out: worth it from a few steps on.
    if (p.T >= kWkvSeqMinSteps &&
        cpu::wkv7_head_seq(S, p.r + o, p.decay + o, p.k + o, p.v + o, p.a + o, p.b + o, size_t(p.N),
                           size_t(p.T), size_t(C), p.y + o))
      return;
    for (int64_t t = 0; t < p.T; ++t) {
      const int64_t ot = t * C + o;
      cpu::wkv7_head_step(S, p.r + ot, p.decay + ot, p.k + ot, p.v + ot, p.a + ot, p.b + ot,
                          size_t(p.N), p.y + ot);
    }
  }

  // One block of B to pack: outputs [n0, n0 + nn), inputs [k0, k0 + kn).
  struct PanelBlock {
    int64_t n0, nn, k0, kn;
    bool next_panel_mine;  // this thread packs the next panel (n0 + NR) after this one
  };
  // A packed block as the product reads it: the part's panel buffer the packer filled, or a
  // block of fp32 panels made at load, read in place; and what to prefetch during the product.
  struct PackedBlock {
    const float* panel;
    cpu::PrefetchRange next;
    const uint16_t* bf16 = nullptr;  // instead of panel: a bf16 panel made at load, read in place
  };

  // y (+)= the rows of X (x[t · ldx + i]) times block b, whichever form it has.
  static void rows_times_block(const PackedBlock& b, const float* x, size_t ldx, size_t T,
                               size_t kn, float* y, size_t ldy, size_t nn, bool accumulate) {
    if (b.bf16) return cpu::gemm_panel_bf16(x, ldx, T, b.bf16, kn, y, ldy, nn, accumulate, b.next);
    cpu::gemm_panel(x, ldx, T, b.panel, kn, y, ldy, nn, accumulate, b.next);
  }

  // Where the block packed after `pb` starts, for B(k, n) = src-of-pb[n·ld + k] (a weight
  // [out, in]): further along these rows, else the next panel's first rows. Only a block at
  // least as large as this one (pack prefetches this block's footprint); nullptr = none.
  template <class T>
  static const T* next_block(const T* src, int64_t ld, int64_t N, int64_t K, const PanelBlock& pb) {
    const int64_t nr = int64_t(cpu::panel_width());
    if (pb.k0 + 2 * pb.kn <= K) return src + pb.kn;
    if (pb.next_panel_mine && pb.n0 + 2 * nr <= N) return src - pb.k0 + nr * ld;
    return nullptr;
  }

  // The fp32 packed product of GemmArgs' operands; with `round_to_bf16` every panel is rounded
  // to bf16 values once packed (op(X) the caller rounded), or widened from b.bf16 when given:
  // the bf16 product's fallback.
  void pack_then_product(const GemmOperand& x, int64_t M, int64_t N, int64_t K,
                         const GemmOperand& b, float* c, int64_t ldc, bool accumulate,
                         bool round_to_bf16) const {
    packed_product(x, M, N, K, c, ldc, accumulate,
                   [&](PartScratch&, const PanelBlock& pb, float* panel) -> PackedBlock {
                     // B's values already in bf16 (a kept copy): widened on the way in.
                     const bool from_bf16 = round_to_bf16 && b.bf16;
                     const int64_t at = b.transposed
                                            ? pb.n0 * b.ld + pb.k0  // B(k, n) = b[n·ld + k]
                                            : pb.k0 * b.ld + pb.n0;
                     if (!b.transposed) {
                       if (from_bf16)
                         cpu::pack_panel_input_major(b.bf16 + at, size_t(b.ld), size_t(pb.nn),
                                                     size_t(pb.kn), panel);
                       else
                         cpu::pack_panel_input_major(b.data + at, size_t(b.ld), size_t(pb.nn),
                                                     size_t(pb.kn), panel);
                     } else if (from_bf16) {  // a weight [out, in] as matmul reads it
                       const uint16_t* src = b.bf16 + at;
                       cpu::pack_panel_bf16(src, size_t(b.ld), size_t(pb.nn), size_t(pb.kn),
                                            next_block(src, b.ld, N, K, pb), panel);
                     } else {
                       const float* src = b.data + at;
                       cpu::pack_panel(src, size_t(b.ld), size_t(pb.nn), size_t(pb.kn),
                                       next_block(src, b.ld, N, K, pb), panel);
                     }
                     if (round_to_bf16 && !from_bf16)
                       cpu::round_to_bf16(panel, size_t(pb.kn) * cpu::panel_width());
                     return {panel, {}};  // pack_panel prefetches the next block itself; the
                                          // input-major copy reads rows in order
                   });
  }

  // C [M, N] (+)= op(X) · op(B) with both operands rounded to bf16, summed in fp32: on
  // VDPBF16PS where available, else the fp32 kernels over a rounded copy of op(X) and rounded
  // panels. The copy is made per block of rows and of kBf16CopyDepth inputs (at most 16 MB:
  // op(X) whole was 128 MB for the head's dX, K = 65,536); the kernels add each block of
  // kPanelDepth inputs into C in turn, so splitting K at multiples of it changes no sum.
  void gemm_bf16(const GemmOperand& x, int64_t M, int64_t N, int64_t K, const GemmOperand& b,
                 float* c, int64_t ldc, bool accumulate) const {
    if (cpu::bf16_dot_available())
      return cpu::bf16_product(*pool_, bf16_, x, M, N, K, b, c, ldc, accumulate);
    constexpr int64_t kBf16CopyDepth = 32 * kPanelDepth;
    std::vector<float>& xr = decode_.xd;
    for (int64_t m0 = 0; m0 < M; m0 += cpu::kProductRowBlock) {
      const int64_t rows = std::min(cpu::kProductRowBlock, M - m0);
      for (int64_t k0 = 0; k0 < K; k0 += kBf16CopyDepth) {
        const int64_t kn = std::min(kBf16CopyDepth, K - k0);
        // op(X) [m0, +rows) × [k0, +kn) in X's own layout: [rows, kn], or [kn, rows] transposed.
        const int64_t outer = x.transposed ? kn : rows, inner = x.transposed ? rows : kn;
        xr.resize(size_t(outer * inner));
        pool_->parallel_for(outer, 16, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) {
            const float* src =
                x.transposed ? x.data + (k0 + i) * x.ld + m0 : x.data + (m0 + i) * x.ld + k0;
            float* dst = xr.data() + i * inner;
            std::copy_n(src, inner, dst);
            cpu::round_to_bf16(dst, size_t(inner));
          }
        });
        const int64_t b_at = b.transposed ? k0 : k0 * b.ld;  // B's rows from input k0
        const GemmOperand bk{b.data + b_at, b.ld, b.transposed, b.bf16 ? b.bf16 + b_at : nullptr};
        pack_then_product(GemmOperand{xr.data(), inner, x.transposed}, rows, N, kn, bk,
                          c + m0 * ldc, ldc, accumulate || k0 > 0, true);
      }
    }
  }

  // Prefill (matmul from kGemmMinRows positions): op(B) = Wᵀ, W [out, in] in any dtype,
  // widened to fp32 while packed.
  void matmul_gemm(const MatmulArgs& a) const {
    const Matrix& w = a.w;
    // A span serves the panel blocks of this call only (another matrix may take w's address).
    for (PartScratch& ps : parts_) ps.span.weights = nullptr;
    const PanelRead read = panel_read(w, a.count);
    packed_product(
        GemmOperand{a.x, w.cols, false}, a.count, w.rows, w.cols, a.y, w.rows, false,
        [&](PartScratch& ps, const PanelBlock& pb, float* panel) -> PackedBlock {
          if (w.cpu_panels)
            return panel_block(w, pb.n0, pb.k0, pb.kn, pb.k0 + pb.kn < w.cols || pb.next_panel_mine,
                               read, panel);
          // The packers below prefetch the next block themselves (interleaved with their loads).
          const int64_t offset = pb.n0 * w.cols + pb.k0;
          if (w.dtype == DType::BF16 || w.dtype == DType::F16) {
            const auto* rows = static_cast<const uint16_t*>(w.data) + offset;
            const auto pack = w.dtype == DType::BF16 ? cpu::pack_panel_bf16 : cpu::pack_panel_f16;
            pack(rows, size_t(w.cols), size_t(pb.nn), size_t(pb.kn),
                 next_block(rows, w.cols, w.rows, w.cols, pb), panel);
            return {panel, {}};
          }
          if (w.dtype == DType::F32) {
            const float* rows = static_cast<const float*>(w.data) + offset;
            cpu::pack_panel(rows, size_t(w.cols), size_t(pb.nn), size_t(pb.kn),
                            next_block(rows, w.cols, w.rows, w.cols, pb), panel);
            return {panel, {}};
          }
          const DequantizedSpan& span = dequantized_span(ps.span, w, pb);
          cpu::pack_panel(span.values.data() + (pb.k0 - span.k0), size_t(span.width), size_t(pb.nn),
                          size_t(pb.kn), nullptr, panel);
          return {panel, {}};
        });
  }

  // Rows [n0, n0 + nn) of a quantised weight dequantised over inputs [k0, k0 + width): whole
  // blocks, so a block that a panel block cuts (a 256-value K-quant super-block holds two
  // blocks of kPanelDepth inputs) is decoded once, not once per panel block.
  struct DequantizedSpan {
    const void* weights = nullptr;
    int64_t n0 = -1, nn = 0, k0 = 0, width = 0;
    std::vector<float> values;  // [nn][width]
  };

  // The span holding the panel block `pb` of w: `span` itself when it does (a thread packs
  // its panel's blocks in input order), else made again from the start of the block holding
  // pb's first input to the end of the block holding its last.
  static const DequantizedSpan& dequantized_span(DequantizedSpan& span, const Matrix& w,
                                                 const PanelBlock& pb) {
    if (span.weights == w.data && span.n0 == pb.n0 && span.nn == pb.nn && span.k0 <= pb.k0 &&
        pb.k0 + pb.kn <= span.k0 + span.width)
      return span;
    const int64_t block = quant_block_elems(w.dtype);
    const int64_t k0 = pb.k0 / block * block;
    const int64_t k1 = std::min(w.cols, (pb.k0 + pb.kn + block - 1) / block * block);
    span.weights = w.data;
    span.n0 = pb.n0, span.nn = pb.nn, span.k0 = k0, span.width = k1 - k0;
    span.values.resize(size_t(pb.nn * span.width));
    for (int64_t j = 0; j < pb.nn; ++j)
      widen_part(w, pb.n0 + j, k0, span.width, &span.values[size_t(j * span.width)]);
    return span;
  }

  // C [M, N] (+)= op(X) · B, the one product of prefill and training: threads take panels of
  // panel_width() outputs (and ranges of C's rows when there are fewer panels than threads;
  // each then packs its own copy of the panel). For each block of kPanelDepth inputs, `pack`
  // fills the panel (fp32, from any source) and it is multiplied with every row of C while it
  // sits in L1. K > 0.
  void packed_product(
      const GemmOperand& x, int64_t M, int64_t N, int64_t K, float* c, int64_t ldc, bool accumulate,
      FunctionRef<PackedBlock(PartScratch&, const PanelBlock&, float*)> pack) const {
    // Every panel streams all M rows of op(X) for each block of inputs: for many rows (the
    // head's dW: M = vocabulary) that block no longer stays in L2 between panels and each panel
    // reads it from memory again, so the rows go in blocks, each over every panel (the panels
    // are packed again per block: small next to a block's products).
    cpu::for_each_row_block(M, [&](int64_t m0, int64_t rows) {
      GemmOperand block = x;
      block.data = x.transposed ? x.data + m0 : x.data + m0 * x.ld;
      packed_block(block, rows, N, K, c + m0 * ldc, ldc, accumulate, pack);
    });
  }

  // packed_product over one block of C's rows.
  void packed_block(const GemmOperand& x, int64_t M, int64_t N, int64_t K, float* c, int64_t ldc,
                    bool accumulate,
                    FunctionRef<PackedBlock(PartScratch&, const PanelBlock&, float*)> pack) const {
    const int64_t nr = int64_t(cpu::panel_width());
    const cpu::PanelTasks tasks(M, (N + nr - 1) / nr, pool_->size());
    float* xp = nullptr;
    if (M >= kTileMinRows) {
      xp = x_tiles_buffer(size_t(M * K));
      pack_x_tiles(x, M, K, tasks.row_parts, tasks.rows_per_part, xp);
    }
    pool_->parallel_parts(tasks.count, 1, [&](int part, int64_t task0, int64_t task1) {
      PartScratch& ps = parts_[size_t(part)];
      float* panel = panel_buffer(ps);
      for (int64_t task = task0; task < task1; ++task) {
        const int64_t p = tasks.panel(task), m0 = tasks.first_row(task);
        const int64_t rows = std::min(tasks.rows_per_part, M - m0);
        if (rows <= 0) continue;
        const int64_t n0 = p * nr, nn = std::min(nr, N - n0);
        const bool next_panel_mine = tasks.row_parts == 1 && task + 1 < task1;
        for (int64_t k0 = 0; k0 < K; k0 += kPanelDepth) {
          const int64_t kn = std::min(kPanelDepth, K - k0);
          const PackedBlock b = pack(ps, PanelBlock{n0, nn, k0, kn, next_panel_mine}, panel);
          float* y = c + m0 * ldc + n0;
          const bool acc = accumulate || k0 > 0;
          if (xp)
            cpu::gemm_panel_tiles(xp + k0 * M + m0 * kn, size_t(rows), b.panel, size_t(kn), y,
                                  size_t(ldc), size_t(nn), acc, b.next);
          else if (x.transposed)
            cpu::gemm_panel_xt(x.data + k0 * x.ld + m0, size_t(x.ld), size_t(rows), b.panel,
                               size_t(kn), y, size_t(ldc), size_t(nn), acc, b.next);
          else
            rows_times_block(b, x.data + m0 * x.ld + k0, size_t(x.ld), size_t(rows), size_t(kn), y,
                             size_t(ldc), size_t(nn), acc);
        }
      }
    });
  }

  // Products of at least this many positions read X packed in the kernel's tiles
  // (cpu::pack_x_tiles): a block of kPanelDepth inputs of X then outgrows L1 (64 rows × 128
  // inputs × 4 bytes = 32 KB), and read in place its rows are kernel-many streams.
  static constexpr int64_t kTileMinRows = 64;

  // bf16 panels made at load multiply products of fewer positions in place (decode batches:
  // widening a block into an fp32 copy cost about as much as multiplying it by 32 positions),
  // more from the widened copy. Below kTileMinRows, so such products read X by rows.
  static constexpr int64_t kBf16InPlaceBelow = 64;
  static_assert(kBf16InPlaceBelow <= kTileMinRows);

  // Room for `floats` values of X in tiles (decode_.x_tiles).
  float* x_tiles_buffer(size_t floats) const {
    if (decode_.x_tiles_size < floats) {
      decode_.x_tiles = hwy::AllocateAligned<float>(floats);
      decode_.x_tiles_size = floats;
    }
    return decode_.x_tiles.get();
  }

  // op(X) [M, K] into xp in tiles, in row_parts ranges of rows_per_part rows (the last may be
  // short), each tiled from its first row: rows [m0, m0 + rows) of inputs [k0, k0 + kn) at
  // xp + k0 · M + m0 · kn.
  void pack_x_tiles(const GemmOperand& x, int64_t M, int64_t K, int64_t row_parts,
                    int64_t rows_per_part, float* xp) const {
    const int64_t blocks = (K + kPanelDepth - 1) / kPanelDepth;
    pool_->parallel_for(blocks * row_parts, 1, [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t k0 = u / row_parts * kPanelDepth, kn = std::min(kPanelDepth, K - k0);
        const int64_t m0 = u % row_parts * rows_per_part, rows = std::min(rows_per_part, M - m0);
        if (rows <= 0) continue;
        const float* src = x.transposed ? x.data + k0 * x.ld + m0 : x.data + m0 * x.ld + k0;
        cpu::pack_x_tiles(src, size_t(x.ld), x.transposed, size_t(rows), size_t(kn),
                          xp + k0 * M + m0 * kn);
      }
    });
  }

  // Decode batches (2 .. small_gemm_max_positions() positions): the positions are packed
  // once; threads take blocks of weight rows, widened to fp32 in order (one pass over the
  // weights, prefetcher-friendly), each block multiplied with every position in registers.
  void matmul_small(const MatmulArgs& a) const {
    const Matrix& w = a.w;
    const size_t K = size_t(w.cols), T = size_t(a.count);
    const size_t xp_size = K * cpu::small_gemm_width(T);
    if (decode_.xp_size < xp_size) {
      decode_.xp = hwy::AllocateAligned<float>(xp_size);
      decode_.xp_size = xp_size;
    }
    float* xp = decode_.xp.get();
    cpu::small_gemm_pack_x(a.x, K, T, K, xp);
    const int64_t mr = int64_t(cpu::small_gemm_rows(T));
    const int64_t blocks = (w.rows + mr - 1) / mr;
    constexpr int64_t kRunBlocks = 32;  // blocks whose outputs are transposed into Y at once
    pool_->parallel_parts(blocks, 1, [&](int part, int64_t b0, int64_t b1) {
      PartScratch& ps = parts_[size_t(part)];
      if (w.dtype != DType::F32) ps.widened.resize(size_t(mr) * K);
      ps.row.resize(size_t(kRunBlocks * mr) * T);
      float* yt = ps.row.data();  // [rows of the run][T]
      for (int64_t r0 = b0; r0 < b1; r0 += kRunBlocks) {
        const int64_t o_begin = r0 * mr,
                      o_end = std::min(w.rows, std::min(b1, r0 + kRunBlocks) * mr);
        for (int64_t o0 = o_begin; o0 < o_end; o0 += mr) {
          const int64_t n = std::min(mr, o_end - o0);
          const float* rows = static_cast<const float*>(w.data) + o0 * w.cols;
          if (w.dtype != DType::F32) {
            for (int64_t j = 0; j < n; ++j)
              widen_part(w, o0 + j, 0, w.cols, &ps.widened[size_t(j) * K]);
            rows = ps.widened.data();
          }
          cpu::small_gemm(rows, K, size_t(n), xp, K, T, yt + size_t(o0 - o_begin) * T, T);
        }
        for (size_t t = 0; t < T; ++t) {
          float* dst = a.y + int64_t(t) * w.rows;
          for (int64_t o = o_begin; o < o_end; ++o) dst[o] = yt[size_t(o - o_begin) * T + t];
        }
      }
    });
  }

  // Products of several positions over panels (bf16, f16, fp32 or Q8_0) in one parallel region: the
  // panels of all products laid end to end, split between threads by their work (inputs ×
  // positions). Q8_0 products get their positions quantised first.
  void panel_products(std::span<const MatmulArgs* const> list) const {
    std::vector<int64_t>&cost_begin = decode_.cost_begin, &unit_cost = decode_.row_cost;
    cost_begin.assign(list.size() + 1, 0);
    unit_cost.assign(list.size(), 0);
    if (decode_.q8.size() < list.size()) decode_.q8.resize(list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      const MatmulArgs& a = *list[i];
      if (a.w.cpu_int_panels) decode_.q8[i].resize(a.count, a.w.cols);
      unit_cost[i] = a.w.cols * a.count;
      cost_begin[i + 1] = cost_begin[i] + panels_of(a.w) * unit_cost[i];
    }
    quantize_positions(list);
    // fp32 panel products of many positions read X in tiles, packed per product.
    std::vector<int64_t>& tiles_at = decode_.tiles_at;
    tiles_at.assign(list.size() + 1, 0);
    for (size_t i = 0; i < list.size(); ++i) {
      const MatmulArgs& a = *list[i];
      const bool tiles = a.w.cpu_panels && a.count >= kTileMinRows;
      tiles_at[i + 1] = tiles_at[i] + (tiles ? a.count * a.w.cols : 0);
    }
    float* xp = tiles_at.back() > 0 ? x_tiles_buffer(size_t(tiles_at.back())) : nullptr;
    for (size_t i = 0; i < list.size(); ++i)
      if (tiles_at[i + 1] > tiles_at[i])
        pack_x_tiles(GemmOperand{list[i]->x, list[i]->w.cols, false}, list[i]->count,
                     list[i]->w.cols, 1, list[i]->count, xp + tiles_at[i]);
    const int64_t nr = int64_t(cpu::panel_width());
    // Chunks of 1/8 of a thread's share, as matvec_many's: on a shared machine a descheduled
    // vCPU's tail goes to the other threads instead of every thread waiting for it.
    const int64_t chunk = std::max<int64_t>(1 << 14, cost_begin.back() / (8 * pool_->size()));
    pool_->parallel_balanced(cost_begin.back(), chunk, [&](int part, int64_t b, int64_t e) {
      each_unit_range(cost_begin, unit_cost, b, e, [&](size_t i, int64_t u0, int64_t u1) {
        const MatmulArgs& a = *list[i];
        const Matrix& w = a.w;
        if (w.cpu_int_panels) {
          return int_panel_product(a, decode_.q8[i], u0, u1);
        }
        float* panel = panel_buffer(parts_[size_t(part)]);
        const PanelRead read = panel_read(w, a.count);
        for (int64_t p = u0; p < u1; ++p) {
          const int64_t n0 = p * nr, nn = std::min(nr, w.rows - n0);
          for (int64_t k0 = 0; k0 < w.cols; k0 += kPanelDepth) {
            const int64_t kn = std::min(kPanelDepth, w.cols - k0);
            const PackedBlock b =
                panel_block(w, n0, k0, kn, k0 + kn < w.cols || p + 1 < u1, read, panel);
            if (tiles_at[i + 1] > tiles_at[i])
              cpu::gemm_panel_tiles(xp + tiles_at[i] + k0 * a.count, size_t(a.count), b.panel,
                                    size_t(kn), a.y + n0, size_t(w.rows), size_t(nn), k0 > 0,
                                    b.next);
            else
              rows_times_block(b, a.x + k0, size_t(w.cols), size_t(a.count), size_t(kn), a.y + n0,
                               size_t(w.rows), size_t(nn), k0 > 0);
          }
        }
      });
    });
  }

  // The positions of every Q8_0 product of the list quantised (into decode_.q8, resized), in
  // one parallel region over all their rows: done on the calling thread, a 32-sequence decode
  // step's quantisation left the other threads waiting.
  void quantize_positions(std::span<const MatmulArgs* const> list) const {
    std::vector<int64_t>& row_begin = decode_.quant_rows;
    row_begin.assign(list.size() + 1, 0);
    for (size_t i = 0; i < list.size(); ++i)
      row_begin[i + 1] = row_begin[i] + (list[i]->w.cpu_int_panels ? list[i]->count : 0);
    if (row_begin.back() == 0) return;
    pool_->parallel_for(row_begin.back(), 4, [&](int64_t b, int64_t e) {
      for (size_t i = 0; i < list.size(); ++i) {
        const int64_t lo = std::max(b, row_begin[i]), hi = std::min(e, row_begin[i + 1]);
        if (lo < hi)
          decode_.q8[i].quantize_rows(list[i]->x, lo - row_begin[i], hi - row_begin[i],
                                      list[i]->w.cols);
      }
    });
  }

  // How a product of `positions` rows reads w's panels: decided once per product (the bf16
  // kernels' availability is a dispatched call), not per block.
  struct PanelRead {
    bool burst;          // prefetch the next block in one burst while widening
    bool bf16_in_place;  // bf16 blocks multiplied as they are (gemm_panel_bf16)
  };
  static PanelRead panel_read(const Matrix& w, int64_t positions) {
    constexpr int64_t kBurstFromPositions = 64;
    return {positions >= kBurstFromPositions, w.dtype == DType::BF16 &&
                                                  positions < kBf16InPlaceBelow &&
                                                  cpu::bf16_panel_product_available()};
  }

  // Block [k0, k0 + kn) of the panel made at load whose first output is n0, for a product
  // read as `read` says: fp32 read in place, bf16 / f16 widened into `panel`. With `more`, the
  // block this thread reads next (the following one in memory: panels lie end to end) is
  // prefetched: for many positions in one burst while widening (prefill; fp32 panels are left
  // to the hardware prefetcher, which follows the contiguous stream), else returned for
  // gemm_panel to spread over the product (a decode batch's product is too short to absorb the
  // burst: measured 14% of a 32-sequence step).
  static PackedBlock panel_block(const Matrix& w, int64_t n0, int64_t k0, int64_t kn, bool more,
                                 PanelRead read, float* panel) {
    const size_t at = size_t(n0 * w.cols + k0 * int64_t(cpu::panel_width()));
    const size_t values = size_t(kn) * cpu::panel_width();
    const bool burst = more && read.burst;
    if (w.dtype == DType::F32) {
      const float* src = static_cast<const float*>(w.cpu_panels) + at;
      if (!more || burst) return {src, {}};
      return {src, cpu::PrefetchRange{src + values, values * sizeof(float)}};
    }
    const uint16_t* src = static_cast<const uint16_t*>(w.cpu_panels) + at;
    if (read.bf16_in_place)
      return {
          nullptr,
          more ? cpu::PrefetchRange{src + values, values * sizeof(uint16_t)} : cpu::PrefetchRange{},
          src};
    const auto widen = w.dtype == DType::F16 ? cpu::widen_f16 : cpu::widen_bf16;
    widen(src, values, panel, burst ? src + values : nullptr);
    if (!more || burst) return {panel, {}};
    return {panel, cpu::PrefetchRange{src + values, values * sizeof(uint16_t)}};
  }

  // The part's fp32 panel (kPanelDepth × panel_width()), allocated on first use.
  static float* panel_buffer(PartScratch& ps) {
    const size_t size = size_t(kPanelDepth) * cpu::panel_width();
    if (ps.panel_size < size) {
      ps.panel_size = size;
      ps.panel = hwy::AllocateAligned<float>(size);
    }
    return ps.panel.get();
  }

  // Work laid end to end: item i covers [cost_begin[i], cost_begin[i + 1]) in units of
  // unit_cost[i]. Calls fn(i, u0, u1) for the units whose first cost falls in [b, e), so that
  // threads given disjoint cost ranges take disjoint units.
  template <class Fn>
  static void each_unit_range(const std::vector<int64_t>& cost_begin,
                              const std::vector<int64_t>& unit_cost, int64_t b, int64_t e,
                              const Fn& fn) {
    for (size_t i = 0; i + 1 < cost_begin.size(); ++i) {
      const int64_t lo = std::max(b, cost_begin[i]), hi = std::min(e, cost_begin[i + 1]);
      if (lo >= hi) continue;
      const int64_t u0 = (lo - cost_begin[i] + unit_cost[i] - 1) / unit_cost[i];
      const int64_t u1 = (hi - cost_begin[i] + unit_cost[i] - 1) / unit_cost[i];
      if (u0 < u1) fn(i, u0, u1);
    }
  }

  // Output panels of a matrix that has them (of w.cpu_panel_outputs outputs each, which
  // check_panel_layout has compared with the kernels').
  static int64_t panels_of(const Matrix& w) {
    const int64_t nr = int64_t(w.cpu_panel_outputs);
    return (w.rows + nr - 1) / nr;
  }

  // Panels made at load follow the kernels in use then; a later ISA cap (set_cpu_isa) would
  // read them with another layout.
  static void check_panel_layout(const Matrix& w) {
    if (w.cpu_pair_panels && !cpu::bf16_dot_available())
      throw Error(
          "cpu backend: a weight was packed for bf16 products (AVX512_BF16), which the kernels "
          "in use now do not run: load the model again after changing the ISA");
    if (!w.cpu_panels && !w.cpu_int_panels) return;
    const size_t now = w.cpu_panels ? cpu::panel_width() : size_t(int_panel_width(w.dtype));
    if (now != w.cpu_panel_outputs)
      throw Error("cpu backend: a " + dtype_name(w.dtype) +
                  " weight was packed for the kernels of "
                  "another instruction set (" +
                  std::to_string(w.cpu_panel_outputs) +
                  " outputs per panel; the kernels in use want " + std::to_string(now) +
                  "): load the model again after changing the ISA");
  }

  // Outputs per integer panel of the kernels in use now (Q4_0: 8 or 16, Q4_K: 8 or 16, Q5_K and
  // Q6_K: 8 without VNNI, Q8_0: 8 or 32; 0: none).
  static int64_t int_panel_width(DType t) {
    return int64_t(t == DType::Q4_0   ? cpu::q4_panel_width()
                   : t == DType::Q4_K ? cpu::q4k_panel_width()
                   : t == DType::Q5_K ? cpu::q5k_panel_width()
                   : t == DType::Q6_K ? cpu::q6k_panel_width()
                                      : cpu::q8_panel_width());
  }

  // Bytes of one integer panel of w (the decode split's cost of a unit); after
  // check_panel_layout, so the width it was packed with is the kernels'.
  static int64_t int_panel_bytes(const Matrix& w) {
    const size_t width = w.cpu_panel_outputs, cols = size_t(w.cols);
    return int64_t(w.dtype == DType::Q4_0   ? cpu::q4_panels_bytes(width, cols)
                   : w.dtype == DType::Q4_K ? cpu::q4k_panels_bytes(width, cols)
                   : w.dtype == DType::Q5_K ? cpu::q5k_panels_bytes(width, cols)
                   : w.dtype == DType::Q6_K ? cpu::q6k_panels_bytes(width, cols)
                                            : cpu::q8_panels_bytes(width, cols));
  }

  // One position through each matrix of the list (decode), all in one parallel region: the
  // rows (or panels) of all matrices are laid end to end and split between threads by the
  // bytes they read; each thread walks its own contiguous range (a shared work counter that
  // interleaved the threads was slower: every chunk restarts the kernels' prefetch) and takes
  // over the tail of a slower thread's. Quantised weights get x quantised once.
  void matvec_many(std::span<const MatmulArgs> list) const {
    std::vector<QuantizedInput>& inputs = decode_.inputs;
    std::vector<int64_t>&cost_begin = decode_.cost_begin, &row_cost = decode_.row_cost;
    if (inputs.size() < list.size()) inputs.resize(list.size());
    cost_begin.assign(list.size() + 1, 0);
    row_cost.assign(list.size(), 0);
    const int64_t nr = int64_t(cpu::panel_width());
    for (size_t i = 0; i < list.size(); ++i) {
      const Matrix& w = list[i].w;
      if (w.cpu_int_panels) {
        if (decode_.q8.size() <= i) decode_.q8.resize(i + 1);
        decode_.q8[i].quantize(list[i].x, 1, w.cols);
      } else if (is_quantized(w.dtype)) {
        if (w.cols % quant_block_elems(w.dtype) != 0)
          throw Error("cpu backend: a " + dtype_name(w.dtype) + " matrix has " +
                      std::to_string(w.cols) + " columns, not a multiple of its block");
        inputs[i].quantize(list[i].x, w.cols, cpu::matvec_kquant_supports(w.dtype));
      }
      // Work units: weight rows, or panels when the matrix has them (cost: bytes read).
      const bool panels = w.cpu_panels || w.cpu_int_panels;
      const int64_t units = panels ? panels_of(w) : w.rows;
      row_cost[i] = w.cpu_int_panels ? int_panel_bytes(w)
                    : w.cpu_panels   ? nr * w.cols * int64_t(dtype_size(w.dtype))
                                     : int64_t(row_bytes(w.dtype, w.cols));
      cost_begin[i + 1] = cost_begin[i] + units * row_cost[i];
    }
    // Unit u of matrix i belongs to the chunk whose byte range holds the unit's first byte.
    // Chunks of 1/8 of a thread's share (at least 64 KiB, the grain of the static split before): a
    // thread that falls behind (a shared machine's vCPU descheduled a while) has its range's tail
    // taken by the others.
    const int64_t chunk =
        std::max<int64_t>(int64_t(64) << 10, cost_begin.back() / (8 * pool_->size()));
    pool_->parallel_balanced(cost_begin.back(), chunk, [&](int, int64_t b, int64_t e) {
      each_unit_range(cost_begin, row_cost, b, e, [&](size_t i, int64_t u0, int64_t u1) {
        const MatmulArgs& a = list[i];
        if (a.w.cpu_int_panels) {
          int_panel_product(a, decode_.q8[i], u0, u1);
        } else if (a.w.cpu_panels)
          cpu::gemv_panels(a.w.dtype, a.w.cpu_panels, size_t(a.w.rows), size_t(a.w.cols),
                           size_t(u0), size_t(u1), a.x, a.y);
        else
          matvec_rows(a, inputs[i], u0, u1);
      });
    });
  }

  // Q8_0/Q4_0 weights for 2-7 positions: x is quantised to Q8_0 once per call (as ggml does),
  // each weight row unpacked to int8 + scales once and dotted with every position in integers.
  void matmul_quantized(const MatmulArgs& a) const {
    const Matrix& w = a.w;
    const int64_t n = w.cols, nb = n / kQuantBlock;
    const size_t rb = row_bytes(w.dtype, n);  // also checks n % 32 == 0
    std::vector<int8_t>& xq = decode_.xq;
    std::vector<float>& xd = decode_.xd;
    xq.resize(size_t(a.count * n));
    xd.resize(size_t(a.count * nb));
    pool_->parallel_parts(a.count, 8, [&](int part, int64_t t0, int64_t t1) {
      std::vector<unsigned char>& blocks = parts_[size_t(part)].blocks;
      blocks.resize(row_bytes(DType::Q8_0, n));
      for (int64_t t = t0; t < t1; ++t) {
        quantize_row_q8_0(a.x + t * n, blocks.data(), n);
        unpack_row_i8(DType::Q8_0, blocks.data(), &xq[size_t(t * n)], &xd[size_t(t * nb)], n);
      }
    });
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n));
    pool_->parallel_parts(w.rows, grain, [&](int part, int64_t begin, int64_t end) {
      std::vector<int8_t>& wq = parts_[size_t(part)].wq;
      std::vector<float>& wd = parts_[size_t(part)].wd;
      wq.resize(size_t(n));
      wd.resize(size_t(nb));
      for (int64_t o = begin; o < end; ++o) {
        unpack_row_i8(w.dtype, static_cast<const unsigned char*>(w.data) + size_t(o) * rb,
                      wq.data(), wd.data(), n);
        for (int64_t t0 = 0; t0 < a.count; t0 += kRowTile) {
          const int64_t tn = std::min(kRowTile, a.count - t0);
          cpu::dot_rows_q8(wq.data(), wd.data(), &xq[size_t(t0 * n)], &xd[size_t(t0 * nb)],
                           size_t(nb), size_t(tn), a.y + t0 * w.rows + o, size_t(w.rows));
        }
      }
    });
  }

  // Weight row o as fp32: in place for fp32, else widened into buf (cols floats).
  static const float* widen_row(const Matrix& w, int64_t o, float* buf) {
    if (w.dtype == DType::F32) return static_cast<const float*>(w.data) + o * w.cols;
    widen_part(w, o, 0, w.cols, buf);
    return buf;
  }

  // One activation row quantised to Q8_0 for the decode kernels (owns its arrays).
  // Positions quantised for the Q8_0 panel product (q8_panels_kernels.hpp).
  struct Q8Positions {
    std::vector<int8_t> q;
    std::vector<float> d;
    std::vector<int32_t> corr;
    std::vector<float> dsum;  // x.d · Σq per block, for the K-quant panels' min term
    void resize(int64_t T, int64_t cols) {
      const size_t nb = size_t(cols / kQuantBlock);
      q.resize(size_t(T * cols));
      d.resize(size_t(T) * nb);
      corr.resize(size_t(T) * nb);
      dsum.resize(size_t(T) * nb);
    }
    // Positions [t0, t1) of x [T, cols] (after resize(T, cols)).
    void quantize_rows(const float* x, int64_t t0, int64_t t1, int64_t cols) {
      const size_t nb = size_t(cols / kQuantBlock), b0 = size_t(t0) * nb;
      cpu::quantize_q8_positions(x + t0 * cols, size_t(t1 - t0), size_t(cols),
                                 q.data() + size_t(t0 * cols), d.data() + b0, corr.data() + b0);
      cpu::q8_block_dsums(d.data() + b0, corr.data() + b0, size_t(t1 - t0) * nb, dsum.data() + b0);
    }
    void quantize(const float* x, int64_t T, int64_t cols) {
      resize(T, cols);
      quantize_rows(x, 0, T, cols);
    }
  };
  // Panels [u0, u1) of a.w's integer panels times a's positions (quantised in xq).
  static void int_panel_product(const MatmulArgs& a, const Q8Positions& xq, int64_t u0,
                                int64_t u1) {
    const Matrix& w = a.w;
    if (w.dtype == DType::Q4_K || w.dtype == DType::Q5_K) {
      const auto kernel = w.dtype == DType::Q4_K ? cpu::gemm_q4k_panels : cpu::gemm_q5k_panels;
      kernel(w.cpu_int_panels, size_t(w.rows), size_t(w.cols), size_t(u0), size_t(u1), xq.q.data(),
             xq.d.data(), xq.dsum.data(), size_t(a.count), a.y, size_t(w.rows));
      return;
    }
    const auto kernel = w.dtype == DType::Q4_0   ? cpu::gemm_q4_panels
                        : w.dtype == DType::Q6_K ? cpu::gemm_q6k_panels
                                                 : cpu::gemm_q8_panels;
    kernel(w.cpu_int_panels, size_t(w.rows), size_t(w.cols), size_t(u0), size_t(u1), xq.q.data(),
           xq.d.data(), xq.corr.data(), size_t(a.count), a.y, size_t(w.rows));
  }

  struct QuantizedInput {
    std::vector<int8_t> q;
    std::vector<float> d, dsum;
    std::vector<int32_t> neg_s4;
    cpu::Q8Act act{};
    // Block sums only for the types with a min / offset term (kquant_kernels.hpp).
    void quantize(const float* x, int64_t n, bool block_sums) {
      const size_t nb = size_t(n / kQuantBlock);
      q.resize(size_t(n));
      d.resize(nb);
      neg_s4.resize(nb * 8);
      cpu::quantize_act_q8(x, nb, q.data(), d.data(), neg_s4.data());
      act = cpu::Q8Act{q.data(), d.data(), neg_s4.data(), nb};
      if (block_sums) {
        dsum.resize(nb);
        cpu::q8_act_block_sums(d.data(), neg_s4.data(), nb, dsum.data());
        act.dsum = dsum.data();
      }
    }
  };

  // y[r0, r1) = W[r0, r1) · x for one position (quantised weights: x already in `in`).
  static void matvec_rows(const MatmulArgs& a, const QuantizedInput& in, int64_t r0, int64_t r1) {
    const Matrix& w = a.w;
    switch (w.dtype) {
      case DType::Q8_0:
      case DType::Q4_0: {
        const size_t rb = row_bytes(w.dtype, w.cols);
        const auto kernel = w.dtype == DType::Q8_0 ? cpu::matvec_q8_0 : cpu::matvec_q4_0;
        kernel(static_cast<const uint8_t*>(w.data) + size_t(r0) * rb, rb, size_t(r1 - r0), in.act,
               a.y + r0);
        return;
      }
      case DType::BF16:
      case DType::F16: {
        const auto* base = static_cast<const uint16_t*>(w.data);
        for (int64_t o = r0; o < r1; ++o) {
          const uint16_t* row = base + o * w.cols;
          a.y[o] = w.dtype == DType::BF16 ? cpu::dot_bf16(row, a.x, size_t(w.cols))
                                          : cpu::dot_f16(row, a.x, size_t(w.cols));
        }
        return;
      }
      case DType::F32:
        // One row at a time: a single stream the hardware prefetcher follows (4 rows sharing
        // each x load read 4 interleaved streams, at about half the bandwidth).
        for (int64_t o = r0; o < r1; ++o)
          cpu::dot_rows(a.x, static_cast<const float*>(w.data) + o * w.cols, size_t(w.cols), 1,
                        a.y + o, 1);
        return;
      default:
        if (cpu::matvec_kquant_supports(w.dtype)) {
          const size_t rb = row_bytes(w.dtype, w.cols);
          cpu::matvec_kquant(w.dtype, static_cast<const uint8_t*>(w.data) + size_t(r0) * rb, rb,
                             size_t(r1 - r0), in.act, a.y + r0);
          return;
        }
        throw Error("cpu backend: weights of dtype " + dtype_name(w.dtype) + " not supported");
    }
  }

  // Elements [k0, k0 + kn) of weight row o as fp32 (quantised: kn and k0 multiples of 32;
  // a range that cuts a K-quant super-block decodes that block whole into a stack buffer).
  static void widen_part(const Matrix& w, int64_t o, int64_t k0, int64_t kn, float* out) {
    if (is_quantized(w.dtype)) {
      const auto* row =
          static_cast<const unsigned char*>(w.data) + size_t(o) * row_bytes(w.dtype, w.cols);
      const int64_t block = quant_block_elems(w.dtype);
      if (k0 % block == 0 && kn % block == 0) {
        cpu::dequantize_row(w.dtype, row + row_bytes(w.dtype, k0), out, kn);
        return;
      }
      float tmp[kSuperBlock];
      for (int64_t b0 = k0 / block * block; b0 < k0 + kn; b0 += block) {
        cpu::dequantize_row(w.dtype, row + row_bytes(w.dtype, b0), tmp, block);
        const int64_t lo = std::max(b0, k0), hi = std::min(b0 + block, k0 + kn);
        std::copy(tmp + (lo - b0), tmp + (hi - b0), out + (lo - k0));
      }
      return;
    }
    const auto* half = static_cast<const uint16_t*>(w.data) + o * w.cols + k0;
    switch (w.dtype) {
      case DType::BF16:
        return cpu::bf16_to_f32_row(half, out, size_t(kn));
      case DType::F16:
        return cpu::f16_to_f32_row(half, out, size_t(kn));
      default:
        throw Error("cpu backend: weights of dtype " + dtype_name(w.dtype) + " not supported");
    }
  }

  // Buffers kept between calls, so that a decode step allocates nothing once warm.
  struct PartScratch {  // one per pool part: never shared by two threads at once
    hwy::AlignedFreeUniquePtr<float[]> panel;
    size_t panel_size = 0;
    DequantizedSpan span;  // matmul_gemm's quantised weights
    std::vector<float> widened, row, wd;
    std::vector<unsigned char> blocks;
    std::vector<int8_t> wq;
  };
  struct DecodeScratch {  // used by the calling thread before and between parallel regions
    hwy::AlignedFreeUniquePtr<float[]> xp;  // packed positions of matmul_small
    size_t xp_size = 0;
    hwy::AlignedFreeUniquePtr<float[]> x_tiles;  // op(X) of packed_block in the kernel's tiles
    size_t x_tiles_size = 0;
    std::vector<int64_t> tiles_at;  // panel_products: each product's X in x_tiles
    std::vector<QuantizedInput> inputs;
    std::vector<int64_t> cost_begin, row_cost;
    std::vector<const MatmulArgs*> panel_list;
    std::vector<Q8Positions> q8;      // one per product of a list
    std::vector<int64_t> quant_rows;  // where each product's positions start (quantize_positions)
    std::vector<int8_t> xq;
    std::vector<float> xd;
    std::vector<MatmulArgs> pair_args, rest_args;  // matmul_many's split (bf16 pair panels)
    std::vector<cpu::PairProduct> pair_products;
  };

  ThreadPool* pool_;
  ProductPrecision precision_;
  mutable std::vector<PartScratch> parts_;
  mutable cpu::Bf16ProductScratch bf16_;
  mutable cpu::PairProductScratch pair_scratch_;
  mutable DecodeScratch decode_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(ThreadPool* pool, ProductPrecision precision) {
  return std::make_unique<CpuBackend>(pool, precision);
}

}  // namespace rwkv7
