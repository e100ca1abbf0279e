// The RWKV-7 graph on the device-op API, in the order of model/block_order.hpp (SPEC §3-4): the
// rows of all sequences of a pass are stacked so every weight product is one GEMM; token shift and
// WKV follow the segments; states live in a device pool (slot-major, then layer).
#include "model/cuda_model.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>

#include "model/block_order.hpp"
#include "model/forward.hpp"
#include "model/weights.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {

using dev::DevMatrix;
using dev::DevSegments;
using dev::DevStateView;
using dev::WType;

struct DevLayer {
  float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
  float *x_r, *x_w, *x_k, *x_v, *x_a, *x_g, *w0, *a0, *v0, *k_k, *k_a, *r_k, *ln_x_w, *ln_x_b;
  float* ffn_x_k;
  DevMatrix w1, w2, a1, a2, v1, v2, g1, g2;
  DevMatrix receptance, key, value, output, ffn_key, ffn_value;
  bool residual = false;
};

struct CudaModel::Weights {
  DevMatrix emb, head;
  float *ln0_w, *ln0_b, *ln_out_w, *ln_out_b;
  std::vector<DevLayer> layers;
  std::vector<void*> allocs;
};

// Activations for up to `rows` rows and `head_rows` rows of logits, plus the index arrays of a
// general pass. Reallocation bumps `generation` (captured decode graphs then go stale).
struct CudaModel::Buffers {
  int64_t rows = 0, head_rows = 0;
  int generation = 0;
  std::vector<void*> allocs;
  float *x, *xr, *xw, *xk, *xv, *xa2, *xg, *r, *k, *v, *decay, *a, *g, *wa, *wb, *y, *v_first, *z_w,
      *z_a, *z_v;
  float *low_w, *low_a, *low_v, *low_g, *hidden;
  float *normed, *logits;
  int32_t* idx;  // tokens[R] prev[R] row0[R] rows[R] slot[R] last_row[R] head_rows[H]
};

// One pass: device index arrays and sizes.
struct CudaModel::Plan {
  DevSegments seg;
  const int32_t* tokens = nullptr;
  const int32_t* head_rows = nullptr;
  int64_t n_head_rows = 0;
};

struct CudaModel::Decode {
  struct Entry {
    int generation = -1;
    int32_t* idx = nullptr;
    Plan plan;
    bool graphed = false;
    dev::DeviceOps::GraphId graph = -1;
  };
  std::map<int64_t, Entry> by_batch;
};

namespace {

// Host fp32 values of a stored matrix (any file dtype, quantised ones dequantised).
std::vector<float> widen(const Matrix& m) {
  std::vector<float> out(size_t(m.rows * m.cols));
  for (size_t i = 0; i < out.size(); ++i) out[i] = load_as_f32(m.dtype, m.data, i);
  return out;
}

}  // namespace

CudaModel::CudaModel(const ModelWeights& weights, dev::DeviceOps& ops, WType type)
    : config_(weights.config),
      ops_(ops),
      type_(type),
      w_(std::make_unique<Weights>()),
      b_(std::make_unique<Buffers>()),
      decode_(std::make_unique<Decode>()) {
  upload_weights(weights);
}

CudaModel::CudaModel(const ModelConfig& config, dev::DeviceOps& ops, WType type, uint64_t seed)
    : config_(config),
      ops_(ops),
      type_(type),
      w_(std::make_unique<Weights>()),
      b_(std::make_unique<Buffers>()),
      decode_(std::make_unique<Decode>()) {
  const ModelConfig& c = config_;
  if (c.n_layer < 1 || c.n_embd < 1 || c.head_size < 1 || c.n_head * c.head_size != c.n_embd ||
      c.vocab_size < 1 || c.ffn_dim < 1 || c.d_decay < 1 || c.d_aaa < 1 || c.d_value < 1 ||
      c.d_gate < 1)
    throw Error("CudaModel: inconsistent shape " + c.shape_string());
  random_weights(seed);
}

CudaModel::~CudaModel() {
  for (void* p : w_->allocs) ops_.release(p);
  for (void* p : b_->allocs) ops_.release(p);
  for (auto& [B, e] : decode_->by_batch) ops_.release(e.idx);
  ops_.release(att_shift_);
  ops_.release(ffn_shift_);
  ops_.release(wkv_);
}

void CudaModel::upload_weights(const ModelWeights& mw) {
  Weights& w = *w_;
  auto vec = [&](const std::vector<float>& v) {
    auto* p = static_cast<float*>(ops_.alloc(v.size() * 4));
    w.allocs.push_back(p);
    ops_.upload(p, v.data(), v.size() * 4);
    return p;
  };
  auto mat = [&](const Matrix& m) {
    const size_t n = size_t(m.rows * m.cols);
    void* p = ops_.alloc(n * dev::wtype_size(type_));
    w.allocs.push_back(p);
    const bool same = (m.dtype == DType::F32 && type_ == WType::F32) ||
                      (m.dtype == DType::BF16 && type_ == WType::BF16) ||
                      (m.dtype == DType::F16 && type_ == WType::F16);
    if (same) {
      ops_.upload(p, m.data, n * dev::wtype_size(type_));
    } else {
      const std::vector<float> f = widen(m);
      ops_.upload_as(type_, p, f.data(), n);
    }
    weight_bytes_ += int64_t(n * dev::wtype_size(type_));
    ops_.sync();  // the host copies above die here
    return DevMatrix{type_, m.rows, m.cols, p};
  };
  w.emb = mat(mw.emb);
  w.head = mat(mw.head);
  w.ln0_w = vec(mw.ln0_w);
  w.ln0_b = vec(mw.ln0_b);
  w.ln_out_w = vec(mw.ln_out_w);
  w.ln_out_b = vec(mw.ln_out_b);
  for (const LayerWeights& L : mw.layers) {
    DevLayer d;
    d.ln1_w = vec(L.ln1_w), d.ln1_b = vec(L.ln1_b), d.ln2_w = vec(L.ln2_w), d.ln2_b = vec(L.ln2_b);
    d.x_r = vec(L.x_r), d.x_w = vec(L.x_w), d.x_k = vec(L.x_k), d.x_v = vec(L.x_v);
    d.x_a = vec(L.x_a), d.x_g = vec(L.x_g), d.w0 = vec(L.w0), d.a0 = vec(L.a0);
    d.k_k = vec(L.k_k), d.k_a = vec(L.k_a), d.r_k = vec(L.r_k);
    d.ln_x_w = vec(L.ln_x_w), d.ln_x_b = vec(L.ln_x_b), d.ffn_x_k = vec(L.ffn_x_k);
    d.residual = L.has_value_residual;
    d.v0 = d.residual ? vec(L.v0) : nullptr;
    d.w1 = mat(L.w1.m), d.w2 = mat(L.w2.m), d.a1 = mat(L.a1.m), d.a2 = mat(L.a2.m);
    d.g1 = mat(L.g1.m), d.g2 = mat(L.g2.m);
    if (d.residual) d.v1 = mat(L.v1.m), d.v2 = mat(L.v2.m);
    d.receptance = mat(L.receptance), d.key = mat(L.key), d.value = mat(L.value);
    d.output = mat(L.output), d.ffn_key = mat(L.ffn_key), d.ffn_value = mat(L.ffn_value);
    w.layers.push_back(d);
  }
  const int64_t es = int64_t(dev::wtype_size(type_));
  decode_bytes_ = weight_bytes_ - w.emb.rows * w.emb.cols * es + w.emb.cols * es;
}

void CudaModel::random_weights(uint64_t seed) {
  Weights& w = *w_;
  const ModelConfig& c = config_;
  const int64_t C = c.n_embd;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  // Matrices cycle through one random block per input width (scaled by 1/sqrt(cols)), so
  // billions of weights cost no host time; the values do not matter for timing.
  constexpr size_t kBlock = size_t(1) << 22;
  std::map<int64_t, void*> blocks;  // cols -> device block in type_
  auto block_for = [&](int64_t cols) {
    auto it = blocks.find(cols);
    if (it != blocks.end()) return it->second;
    std::vector<float> h(kBlock);
    const float s = 1.0f / std::sqrt(float(cols));
    for (float& x : h) x = uni(rng) * s;
    void* p = ops_.alloc(kBlock * dev::wtype_size(type_));
    ops_.upload_as(type_, p, h.data(), kBlock);
    ops_.sync();
    w.allocs.push_back(p);
    blocks[cols] = p;
    return p;
  };
  auto mat = [&](int64_t rows, int64_t cols) {
    const size_t es = dev::wtype_size(type_), n = size_t(rows * cols);
    auto* p = static_cast<char*>(ops_.alloc(n * es));
    w.allocs.push_back(p);
    const char* src = static_cast<const char*>(block_for(cols));
    for (size_t done = 0; done < n; done += kBlock)
      ops_.copy(p + done * es, src, std::min(kBlock, n - done) * es);
    weight_bytes_ += int64_t(n * es);
    return DevMatrix{type_, rows, cols, p};
  };
  auto vec = [&](int64_t n, float lo, float hi) {
    std::vector<float> h(static_cast<size_t>(n));
    std::uniform_real_distribution<float> d(lo, hi);
    for (float& x : h) x = d(rng);
    auto* p = static_cast<float*>(ops_.alloc(size_t(n) * 4));
    w.allocs.push_back(p);
    ops_.upload(p, h.data(), size_t(n) * 4);
    ops_.sync();
    return p;
  };
  w.emb = mat(c.vocab_size, C);
  w.head = mat(c.vocab_size, C);
  w.ln0_w = vec(C, 0.9f, 1.1f), w.ln0_b = vec(C, -0.1f, 0.1f);
  w.ln_out_w = vec(C, 0.9f, 1.1f), w.ln_out_b = vec(C, -0.1f, 0.1f);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    DevLayer d;
    d.ln1_w = vec(C, 0.9f, 1.1f), d.ln1_b = vec(C, -0.1f, 0.1f);
    d.ln2_w = vec(C, 0.9f, 1.1f), d.ln2_b = vec(C, -0.1f, 0.1f);
    d.x_r = vec(C, 0, 1), d.x_w = vec(C, 0, 1), d.x_k = vec(C, 0, 1), d.x_v = vec(C, 0, 1);
    d.x_a = vec(C, 0, 1), d.x_g = vec(C, 0, 1), d.w0 = vec(C, -6, 0), d.a0 = vec(C, -1, 1);
    d.k_k = vec(C, 0.5f, 1.5f), d.k_a = vec(C, 0.5f, 1.5f), d.r_k = vec(C, -0.1f, 0.1f);
    d.ln_x_w = vec(C, 0.9f, 1.1f), d.ln_x_b = vec(C, -0.1f, 0.1f), d.ffn_x_k = vec(C, 0, 1);
    d.residual = l > 0;
    d.v0 = d.residual ? vec(C, -1, 1) : nullptr;
    d.w1 = mat(c.d_decay, C), d.w2 = mat(C, c.d_decay), d.a1 = mat(c.d_aaa, C);
    d.a2 = mat(C, c.d_aaa), d.g1 = mat(c.d_gate, C), d.g2 = mat(C, c.d_gate);
    if (d.residual) d.v1 = mat(c.d_value, C), d.v2 = mat(C, c.d_value);
    d.receptance = mat(C, C), d.key = mat(C, C), d.value = mat(C, C), d.output = mat(C, C);
    d.ffn_key = mat(c.ffn_dim, C), d.ffn_value = mat(C, c.ffn_dim);
    w.layers.push_back(d);
  }
  ops_.sync();
  const int64_t es = int64_t(dev::wtype_size(type_));
  decode_bytes_ = weight_bytes_ - w.emb.rows * C * es + C * es;
}

void CudaModel::ensure_buffers(int64_t rows, int64_t head_rows) {
  Buffers& b = *b_;
  if (rows <= b.rows && head_rows <= b.head_rows) return;
  const ModelConfig& c = config_;
  rows = std::max({rows, b.rows, int64_t(1)});
  head_rows = std::max({head_rows, b.head_rows, int64_t(1)});
  ops_.sync();
  for (void* p : b.allocs) ops_.release(p);
  b.allocs.clear();
  auto f = [&](int64_t n) {
    auto* p = static_cast<float*>(ops_.alloc(size_t(n) * 4));
    b.allocs.push_back(p);
    return p;
  };
  const int64_t n = rows * c.n_embd;
  for (float** p :
       {&b.x,     &b.xr, &b.xw, &b.xk, &b.xv, &b.xa2, &b.xg,      &b.r,   &b.k,   &b.v,
        &b.decay, &b.a,  &b.g,  &b.wa, &b.wb, &b.y,   &b.v_first, &b.z_w, &b.z_a, &b.z_v})
    *p = f(n);
  b.low_w = f(rows * c.d_decay), b.low_a = f(rows * c.d_aaa), b.low_v = f(rows * c.d_value);
  b.low_g = f(rows * c.d_gate), b.hidden = f(rows * c.ffn_dim);
  b.normed = f(head_rows * c.n_embd), b.logits = f(head_rows * c.vocab_size);
  b.idx = static_cast<int32_t*>(ops_.alloc(size_t(6 * rows + head_rows) * 4));
  b.allocs.push_back(b.idx);
  b.rows = rows;
  b.head_rows = head_rows;
  ++b.generation;
  // Product inputs of the widest group per row: the seven of the time mix (7·C), the LoRA
  // up-projections, or the channel mix's value (F). Sized here: a graph capture cannot allocate.
  const int64_t widest =
      std::max({7 * c.n_embd, c.ffn_dim, c.d_decay + c.d_aaa + c.d_value + c.d_gate});
  ops_.reserve(size_t(std::max(rows, head_rows) * widest));
}

// The stages of model/block_order.hpp as device ops. Issues device ops only: no allocation, no
// host synchronisation (a pass is captured into a CUDA graph for decode). Fused where the
// device pays per launch: LayerNorm + token shift + mixes in one op, tanh/σ and relu² applied
// on the way into the next product, the residual adds inside the products.
class CudaModel::Stages {
 public:
  Stages(dev::DeviceOps& ops, const ModelConfig& c, const std::vector<DevLayer>& layers,
         const Buffers& b, const DevSegments& seg, float* att_shift, float* ffn_shift, float* wkv)
      : ops_(ops),
        c_(c),
        layers_(layers),
        b_(b),
        seg_(seg),
        att_shift_(att_shift),
        ffn_shift_(ffn_shift),
        wkv_(wkv) {}

  void begin_layer(int64_t l) {
    layer_ = l;
    d_ = &layers_[size_t(l)];
  }

  void time_mix_inputs() {
    dev::LnShiftArgs mix;
    mix.x = b_.x, mix.ln_w = d_->ln1_w, mix.ln_b = d_->ln1_b, mix.eps = kLnEps;
    mix.carry = shift_view(att_shift_);
    mix.C = c_.n_embd, mix.nmix = 6;
    const float* mixes[6] = {d_->x_r, d_->x_w, d_->x_k, d_->x_v, d_->x_a, d_->x_g};
    float* outs[6] = {b_.xr, b_.xw, b_.xk, b_.xv, b_.xa2, b_.xg};
    for (int i = 0; i < 6; ++i) mix.mix[i] = mixes[i], mix.out[i] = outs[i];
    ops_.ln_shift_mix(seg_, mix);
  }

  void time_mix_products() {
    const DevLayer& d = *d_;
    const dev::GemmJob first[7] = {{d.receptance, b_.xr, b_.r}, {d.key, b_.xk, b_.k},
                                   {d.value, b_.xv, b_.v},      {d.w1, b_.xw, b_.low_w},
                                   {d.a1, b_.xa2, b_.low_a},    {d.g1, b_.xg, b_.low_g},
                                   {d.v1, b_.xv, b_.low_v}};
    ops_.gemm_many(first, d.residual ? 7 : 6, rows());
  }

  void lora_up_products() {  // tanh / σ on the way into the up-projections
    using dev::Act;
    const DevLayer& d = *d_;
    const dev::GemmJob second[4] = {{d.w2, b_.low_w, b_.z_w, false, Act::Tanh},
                                    {d.a2, b_.low_a, b_.z_a, false, Act::None},
                                    {d.g2, b_.low_g, b_.g, false, Act::Sigmoid},
                                    {d.v2, b_.low_v, b_.z_v, false, Act::None}};
    ops_.gemm_many(second, d.residual ? 4 : 3, rows());
  }

  void wkv_inputs() {
    const DevLayer& d = *d_;
    dev::WkvPrepArgs prep{rows(),
                          c_.n_head,
                          c_.head_size,
                          d.w0,
                          d.a0,
                          d.v0,
                          d.k_k,
                          d.k_a,
                          b_.z_w,
                          b_.z_a,
                          d.residual ? b_.z_v : nullptr,
                          d.residual ? b_.v_first : nullptr,
                          b_.decay,
                          b_.a,
                          b_.v,
                          b_.k,
                          b_.wa,
                          b_.wb};
    ops_.wkv_prep(prep);
    if (!d.residual) ops_.copy(b_.v_first, b_.v, size_t(rows() * c_.n_embd) * 4);
  }

  void wkv() {
    const int64_t H = c_.n_head, N = c_.head_size, L = c_.n_layer;
    const DevStateView state{wkv_, L * H * N * N, layer_ * H * N * N};
    ops_.wkv7(seg_, dev::WkvArgs{H, N, b_.r, b_.decay, b_.k, b_.v, b_.wa, b_.wb, state, b_.y});
  }

  void gate_and_norm() {
    const DevLayer& d = *d_;
    ops_.group_norm_bonus(dev::GroupNormBonusArgs{rows(), c_.n_head, c_.head_size, kGroupNormEps,
                                                  d.ln_x_w, d.ln_x_b, d.r_k, b_.r, b_.k, b_.v, b_.g,
                                                  b_.y});
  }

  void time_mix_output() { ops_.gemm(d_->output, b_.y, b_.x, rows(), true); }

  void channel_mix_inputs() {
    dev::LnShiftArgs fm;
    fm.x = b_.x, fm.ln_w = d_->ln2_w, fm.ln_b = d_->ln2_b, fm.eps = kLnEps;
    fm.carry = shift_view(ffn_shift_);
    fm.C = c_.n_embd, fm.nmix = 1, fm.mix[0] = d_->ffn_x_k, fm.out[0] = b_.xk;
    ops_.ln_shift_mix(seg_, fm);
  }

  void channel_mix_key() { ops_.gemm(d_->ffn_key, b_.xk, b_.hidden, rows(), false); }

  void channel_mix_output() {  // relu² on the way in, x += inside the product
    const dev::GemmJob value{d_->ffn_value, b_.hidden, b_.x, true, dev::Act::ReluSquare};
    ops_.gemm_many(&value, 1, rows());
  }

 private:
  int64_t rows() const { return seg_.total_rows; }
  DevStateView shift_view(float* pool) const {
    return DevStateView{pool, c_.n_layer * c_.n_embd, layer_ * c_.n_embd};
  }

  dev::DeviceOps& ops_;
  const ModelConfig& c_;
  const std::vector<DevLayer>& layers_;
  const Buffers& b_;
  const DevSegments& seg_;
  float *att_shift_, *ffn_shift_, *wkv_;
  int64_t layer_ = 0;
  const DevLayer* d_ = nullptr;
};

// One pass: embedding, the layers (model/block_order.hpp), then the head where asked.
void CudaModel::run_pass(const Plan& p) {
  const ModelConfig& c = config_;
  const Weights& w = *w_;
  Buffers& b = *b_;
  const int64_t R = p.seg.total_rows, C = c.n_embd;
  ops_.embed_ln(w.emb, p.tokens, R, w.ln0_w, w.ln0_b, kLnEps, b.x);
  Stages stages(ops_, c, w.layers, b, p.seg, att_shift_, ffn_shift_, wkv_);
  run_layers(stages, c.n_layer);
  if (p.n_head_rows > 0) {
    ops_.layer_norm(b.x, p.head_rows, p.n_head_rows, C, w.ln_out_w, w.ln_out_b, kLnEps, b.normed);
    ops_.gemm(w.head, b.normed, b.logits, p.n_head_rows, false);
  }
}

void CudaModel::check_tokens(std::span<const int32_t> tokens) const {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size) {
      throw Error("token " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(config_.vocab_size) + ")");
    }
  }
}

void CudaModel::reserve_slots(int64_t slots) {
  if (slots <= slots_) return;
  const ModelConfig& c = config_;
  const int64_t shift = c.n_layer * c.n_embd,
                wkv = c.n_layer * c.n_head * c.head_size * c.head_size;
  auto grow = [&](float*& p, int64_t per) {
    auto* q = static_cast<float*>(ops_.alloc(size_t(slots * per) * 4));
    ops_.zero(q, size_t(slots * per) * 4);
    if (p) ops_.copy(q, p, size_t(slots_ * per) * 4);
    ops_.sync();
    ops_.release(p);
    p = q;
  };
  grow(att_shift_, shift);
  grow(ffn_shift_, shift);
  grow(wkv_, wkv);
  slots_ = slots;
  ++b_->generation;  // captured graphs hold the old pool
}

void CudaModel::reset_slot(int64_t slot) {
  if (slot < 0 || slot >= slots_)
    throw Error("state slot " + std::to_string(slot) + " out of range");
  const ModelConfig& c = config_;
  const int64_t shift = c.n_layer * c.n_embd,
                wkv = c.n_layer * c.n_head * c.head_size * c.head_size;
  ops_.zero(att_shift_ + slot * shift, size_t(shift) * 4);
  ops_.zero(ffn_shift_ + slot * shift, size_t(shift) * 4);
  ops_.zero(wkv_ + slot * wkv, size_t(wkv) * 4);
}

void CudaModel::put_state(int64_t slot, const State& st) {
  if (slot < 0 || slot >= slots_)
    throw Error("state slot " + std::to_string(slot) + " out of range");
  const ModelConfig& c = config_;
  if (st.n_layer != c.n_layer || st.n_embd != c.n_embd || st.n_head != c.n_head ||
      st.head_size != c.head_size || st.att_shift.size() != size_t(c.n_layer * c.n_embd) ||
      st.ffn_shift.size() != size_t(c.n_layer * c.n_embd) ||
      st.wkv.size() != size_t(c.n_layer * c.n_head * c.head_size * c.head_size))
    throw Error("state does not fit this model (state L" + std::to_string(st.n_layer) + " C" +
                std::to_string(st.n_embd) + ", model " + c.shape_string() + ")");
  const int64_t shift = c.n_layer * c.n_embd, wkv = int64_t(st.wkv.size());
  ops_.upload(att_shift_ + slot * shift, st.att_shift.data(), size_t(shift) * 4);
  ops_.upload(ffn_shift_ + slot * shift, st.ffn_shift.data(), size_t(shift) * 4);
  ops_.upload(wkv_ + slot * wkv, st.wkv.data(), size_t(wkv) * 4);
  ops_.sync();
}

void CudaModel::get_state(int64_t slot, State& st) {
  if (slot < 0 || slot >= slots_)
    throw Error("state slot " + std::to_string(slot) + " out of range");
  const ModelConfig& c = config_;
  const int64_t shift = c.n_layer * c.n_embd,
                wkv = c.n_layer * c.n_head * c.head_size * c.head_size;
  st.n_layer = c.n_layer, st.n_embd = c.n_embd, st.n_head = c.n_head, st.head_size = c.head_size;
  st.att_shift.resize(size_t(shift));
  st.ffn_shift.resize(size_t(shift));
  st.wkv.resize(size_t(wkv));
  ops_.download(st.att_shift.data(), att_shift_ + slot * shift, size_t(shift) * 4);
  ops_.download(st.ffn_shift.data(), ffn_shift_ + slot * shift, size_t(shift) * 4);
  ops_.download(st.wkv.data(), wkv_ + slot * wkv, size_t(wkv) * 4);
}

void CudaModel::run(std::span<const SlotRequest> batch, int64_t chunk) {
  if (chunk < 1) throw Error("chunk must be at least 1 (got " + std::to_string(chunk) + ")");
  const int64_t V = config_.vocab_size;
  for (size_t i = 0; i < batch.size(); ++i) {
    const SlotRequest& q = batch[i];
    if (q.slot < 0 || q.slot >= slots_)
      throw Error("state slot " + std::to_string(q.slot) + " out of range");
    for (size_t j = 0; j < i; ++j)
      if (batch[j].slot == q.slot)
        throw Error("sequences " + std::to_string(j) + " and " + std::to_string(i) +
                    " of the batch share one state slot");
    check_tokens(q.tokens);
    if (q.logits != Logits::None && !q.logits_out)
      throw Error("forward: logits requested but no output");
    if (q.logits == Logits::Last && q.tokens.empty())
      throw Error("forward: logits of an empty sequence");
    if (q.logits_out) {
      q.logits_out->assign(size_t((q.logits == Logits::All ? q.tokens.size() : 1) * V), 0.0f);
      if (q.logits == Logits::None) q.logits_out->clear();
    }
  }
  std::vector<size_t> done(batch.size(), 0);
  std::vector<int32_t> idx, row0, rows, slot, last, prev, head;
  std::vector<std::pair<size_t, size_t>> head_dst;  // (sequence, position) of each head row
  std::vector<float> logits;
  for (;;) {
    idx.clear(), row0.clear(), rows.clear(), slot.clear(), last.clear(), prev.clear();
    head.clear(), head_dst.clear();
    int64_t R = 0, longest = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const SlotRequest& q = batch[i];
      const int64_t n = std::min<int64_t>(chunk, int64_t(q.tokens.size() - done[i]));
      if (n <= 0) continue;
      const int32_t seg = int32_t(row0.size());
      row0.push_back(int32_t(R)), rows.push_back(int32_t(n)), slot.push_back(int32_t(q.slot));
      last.push_back(int32_t(R + n - 1));
      for (int64_t t = 0; t < n; ++t) {
        idx.push_back(q.tokens[done[i] + size_t(t)]);
        prev.push_back(t == 0 ? -1 - seg : int32_t(R + t - 1));
      }
      const bool last_pass = done[i] + size_t(n) == q.tokens.size();
      for (int64_t t = 0; t < n; ++t) {
        if (q.logits == Logits::All || (q.logits == Logits::Last && last_pass && t == n - 1)) {
          head.push_back(int32_t(R + t));
          head_dst.emplace_back(i, q.logits == Logits::All ? done[i] + size_t(t) : 0);
        }
      }
      R += n;
      longest = std::max(longest, n);
    }
    if (R == 0) break;
    const int64_t S = int64_t(row0.size()), Rh = int64_t(head.size());
    ensure_buffers(R, Rh);
    // idx layout: tokens[R] prev[R] row0[S] rows[S] slot[S] last[S] head[Rh]
    idx.insert(idx.end(), prev.begin(), prev.end());
    for (auto* v : {&row0, &rows, &slot, &last, &head}) idx.insert(idx.end(), v->begin(), v->end());
    ops_.upload(b_->idx, idx.data(), idx.size() * 4);
    Plan p;
    int32_t* d = b_->idx;
    p.tokens = d;
    p.seg.prev = d + R;
    p.seg.row0 = d + 2 * R;
    p.seg.rows = d + 2 * R + S;
    p.seg.slot = d + 2 * R + 2 * S;
    p.seg.last_row = d + 2 * R + 3 * S;
    p.head_rows = d + 2 * R + 4 * S;
    p.seg.count = S, p.seg.total_rows = R, p.seg.max_rows = longest;
    p.n_head_rows = Rh;
    run_pass(p);
    if (Rh > 0) {
      logits.resize(size_t(Rh * V));
      ops_.download(logits.data(), b_->logits, logits.size() * 4);
      for (size_t h = 0; h < head_dst.size(); ++h) {
        auto [i, pos] = head_dst[h];
        std::copy_n(&logits[h * size_t(V)], V, batch[i].logits_out->data() + pos * size_t(V));
      }
    } else {
      ops_.sync();  // idx (host) may be reused by the next pass's upload only after this one
    }
    for (size_t i = 0; i < batch.size(); ++i)
      done[i] += size_t(std::min<int64_t>(chunk, int64_t(batch[i].tokens.size() - done[i])));
  }
}

void CudaModel::forward(std::span<SequenceRequest> batch, int64_t chunk) {
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!batch[i].state) throw Error("forward: a sequence has no state");
    for (size_t j = 0; j < i; ++j)
      if (batch[j].state == batch[i].state)
        throw Error("forward: sequences " + std::to_string(j) + " and " + std::to_string(i) +
                    " of the batch share one State (each sequence needs its own)");
  }
  reserve_slots(int64_t(batch.size()));
  std::vector<SlotRequest> reqs;
  for (size_t i = 0; i < batch.size(); ++i) {
    put_state(int64_t(i), *batch[i].state);
    reqs.push_back({batch[i].tokens, int64_t(i), batch[i].logits, batch[i].logits_out});
  }
  run(reqs, chunk);
  for (size_t i = 0; i < batch.size(); ++i) {
    get_state(int64_t(i), *batch[i].state);
    batch[i].state->tokens_consumed += int64_t(batch[i].tokens.size());
  }
}

void CudaModel::decode(std::span<const int32_t> tokens, float* logits, bool use_graph) {
  const int64_t B = int64_t(tokens.size()), V = config_.vocab_size;
  if (B == 0) return;
  if (B > slots_)
    throw Error("decode: batch " + std::to_string(B) + " is larger than the state pool (" +
                std::to_string(slots_) + " slots)");
  check_tokens(tokens);
  ensure_buffers(B, B);
  Decode::Entry& e = decode_->by_batch[B];
  if (e.generation != b_->generation || e.graphed != use_graph) {
    if (!e.idx) e.idx = static_cast<int32_t*>(ops_.alloc(size_t(7 * B) * 4));
    std::vector<int32_t> idx(size_t(7 * B));
    for (int64_t i = 0; i < B; ++i) {
      idx[size_t(B + i)] = int32_t(-1 - i);  // prev: the carried state
      idx[size_t(2 * B + i)] = int32_t(i);   // row0
      idx[size_t(3 * B + i)] = 1;            // rows
      idx[size_t(4 * B + i)] = int32_t(i);   // slot
      idx[size_t(5 * B + i)] = int32_t(i);   // last row
      idx[size_t(6 * B + i)] = int32_t(i);   // head rows
    }
    ops_.upload(e.idx, idx.data(), idx.size() * 4);
    ops_.sync();
    Plan& p = e.plan;
    p.tokens = e.idx;
    p.seg.prev = e.idx + B;
    p.seg.row0 = e.idx + 2 * B;
    p.seg.rows = e.idx + 3 * B;
    p.seg.slot = e.idx + 4 * B;
    p.seg.last_row = e.idx + 5 * B;
    p.head_rows = e.idx + 6 * B;
    p.seg.count = B, p.seg.total_rows = B, p.seg.max_rows = 1, p.n_head_rows = B;
    e.graphed = use_graph;
    if (use_graph) e.graph = ops_.capture([this, &p] { run_pass(p); });
    e.generation = b_->generation;
  }
  ops_.upload(e.idx, tokens.data(), size_t(B) * 4);
  if (e.graphed)
    ops_.replay(e.graph);
  else
    run_pass(e.plan);
  if (logits)
    ops_.download(logits, b_->logits, size_t(B * V) * 4);
  else
    ops_.sync();  // the tokens' host buffer may change after we return
}

}  // namespace rwkv7
