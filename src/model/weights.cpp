#include "model/weights.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "io/rwkv7_parameters.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

std::string where(const TensorFile& f, const std::string& name) {
  return f.path + ": tensor '" + name + "'";
}

const TensorView& float_tensor(const TensorFile& f, const std::string& name) {
  const TensorView& v = f.get(name);
  // Q8_0/Q4_0 (GGUF): the big matrices run quantised; anything else read through them is
  // dequantised by load_as_f32.
  if (v.dtype != DType::F32 && v.dtype != DType::BF16 && v.dtype != DType::F16 &&
      !is_quantized(v.dtype)) {
    throw Error(where(f, name) + " has dtype " + dtype_name(v.dtype) +
                "; expected f32, bf16, f16, q8_0 or q4_0");
  }
  return v;
}

const TensorView& expect_shape(const TensorFile& f, const std::string& name, const Shape& shape) {
  const TensorView& v = float_tensor(f, name);
  if (v.shape != shape) {
    throw Error(where(f, name) + " has shape " + shape_str(v.shape) + "; expected " +
                shape_str(shape));
  }
  return v;
}

// A per-channel vector: [n] or [1, 1, n] (the official files use the latter).
std::vector<float> vec(const TensorFile& f, const std::string& name, int64_t n) {
  const TensorView& v = float_tensor(f, name);
  bool ok = !v.shape.empty() && v.shape.back() == n && v.numel() == n;
  if (!ok) {
    throw Error(where(f, name) + " has shape " + shape_str(v.shape) + "; expected [" +
                std::to_string(n) + "] or [1, 1, " + std::to_string(n) + "]");
  }
  return to_f32(v);
}

Matrix matrix(const TensorFile& f, const std::string& name, int64_t rows, int64_t cols) {
  const TensorView& v = expect_shape(f, name, {rows, cols});
  return Matrix{v.dtype, rows, cols, v.data};
}

// x @ M with M [rows, cols] stored, used as y = Mᵀ·x: keep Mᵀ [cols, rows] in fp32.
OwnedMatrix transposed(const TensorFile& f, const std::string& name, int64_t rows, int64_t cols,
                       bool allow_bf16) {
  const TensorView& v = expect_shape(f, name, {rows, cols});
  OwnedMatrix out;
  out.values.resize(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out.values[size_t(c * rows + r)] = load_as_f32(v.dtype, v.data, size_t(r * cols + c));
  out.m = Matrix{DType::F32, cols, rows, out.values.data()};
  const bool bf16_exact =
      allow_bf16 && std::all_of(out.values.begin(), out.values.end(), [](float x) {
        uint32_t bits;
        std::memcpy(&bits, &x, 4);
        return (bits & 0xffffu) == 0;
      });
  if (bf16_exact) {
    out.halves.resize(out.values.size());
    for (size_t i = 0; i < out.values.size(); ++i) out.halves[i] = f32_to_bf16(out.values[i]);
    out.values = {};
    out.m = Matrix{DType::BF16, cols, rows, out.halves.data()};
  }
  return out;
}

int64_t dim(const TensorFile& f, const std::string& name, size_t rank, size_t axis) {
  const TensorView& v = float_tensor(f, name);
  if (v.shape.size() != rank) {
    throw Error(where(f, name) + " has shape " + shape_str(v.shape) + "; expected rank " +
                std::to_string(rank));
  }
  return v.shape[axis];
}

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

std::string compute_fingerprint(const TensorFile& f, const ModelConfig& c) {
  uint64_t h = 1469598103934665603ull;
  std::string shape = c.shape_string();
  h = fnv1a(h, shape.data(), shape.size());
  for (const auto& [name, v] : f.tensors) {  // sorted by name: container order is irrelevant
    h = fnv1a(h, name.data(), name.size());
    // Values, not storage: a bf16 file and its f32 upcast are different weights anyway.
    size_t n = v.nbytes(), take = std::min<size_t>(n, 256);
    h = fnv1a(h, v.data, take);
    h = fnv1a(h, static_cast<const unsigned char*>(v.data) + (n - take) / 2, take);
    h = fnv1a(h, static_cast<const unsigned char*>(v.data) + (n - take), take);
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, h);
  return buf;
}

// Bytes a product reads: the pair panels' bf16 values where it has them (an fp32 weight under
// bf16 products reads half its file size).
int64_t matrix_bytes(const Matrix& m) {
  if (m.cpu_pair_panels) return m.rows * ((m.cols + 1) / 2) * 4;
  return m.rows * int64_t(row_bytes(m.dtype, m.cols));
}

void account_costs(ModelWeights& w) {
  const ModelConfig& c = w.config;
  double macs = 0;
  int64_t bytes = matrix_bytes(w.head) + int64_t(row_bytes(w.emb.dtype, w.emb.cols));
  for (const LayerWeights& L : w.layers) {
    for (const Matrix* m : {&L.receptance, &L.key, &L.value, &L.output, &L.ffn_key, &L.ffn_value,
                            &L.w1.m, &L.w2.m, &L.a1.m, &L.a2.m, &L.g1.m, &L.g2.m}) {
      macs += double(m->rows) * double(m->cols);
      bytes += matrix_bytes(*m);
    }
    if (L.has_value_residual) {
      macs += 2.0 * double(L.v1.m.rows) * double(L.v1.m.cols);
      bytes += matrix_bytes(L.v1.m) + matrix_bytes(L.v2.m);
    }
    bytes += 20 * c.n_embd * 4;  // norms, mixes, biases in fp32
  }
  // WKV: per head N×N state, ~4 multiply-adds per element (decay, a-term, v·k, y).
  macs += double(c.n_layer) * double(c.n_head) * double(c.head_size * c.head_size) * 4;
  w.decode_bytes = bytes;
  w.flops = 2 * macs;
  w.head_flops = 2.0 * double(w.head.rows) * double(w.head.cols);
}

}  // namespace

std::string ModelConfig::shape_string() const {
  char buf[128];
  std::snprintf(buf, sizeof buf, "L%lld-C%lld-N%lld-V%lld-F%lld", (long long)n_layer,
                (long long)n_embd, (long long)head_size, (long long)vocab_size, (long long)ffn_dim);
  return buf;
}

ModelConfig infer_config(const TensorFile& f) {
  ModelConfig c;
  if (!f.has("emb.weight")) {
    throw Error(f.path + ": tensor 'emb.weight' is missing; not an RWKV-7 checkpoint?");
  }
  c.vocab_size = dim(f, "emb.weight", 2, 0);
  c.n_embd = dim(f, "emb.weight", 2, 1);
  int64_t max_layer = -1;
  for (const auto& [name, v] : f.tensors) {
    std::string_view digits, rest;
    if (split_indexed_name(name, "blocks.", &digits, &rest)) {
      if (digits.size() > 6) throw Error(where(f, name) + ": layer index out of range");
      max_layer = std::max<int64_t>(max_layer, std::stoll(std::string(digits)));
    }
  }
  if (max_layer < 0) throw Error(f.path + ": no 'blocks.<i>.' tensors; not an RWKV-7 checkpoint?");
  c.n_layer = max_layer + 1;
  c.n_head = dim(f, "blocks.0.att.r_k", 2, 0);
  c.head_size = dim(f, "blocks.0.att.r_k", 2, 1);
  if (c.n_head <= 0 || c.head_size <= 0 || c.n_head * c.head_size != c.n_embd) {
    throw Error(where(f, "blocks.0.att.r_k") + " has shape [" + std::to_string(c.n_head) + ", " +
                std::to_string(c.head_size) + "]; heads × head size must equal n_embd " +
                std::to_string(c.n_embd));
  }
  c.ffn_dim = dim(f, "blocks.0.ffn.key.weight", 2, 0);
  c.d_decay = dim(f, "blocks.0.att.w1", 2, 1);
  c.d_aaa = dim(f, "blocks.0.att.a1", 2, 1);
  c.d_gate = dim(f, "blocks.0.att.g1", 2, 1);
  c.d_value = c.n_layer > 1 ? dim(f, "blocks.1.att.v1", 2, 1)
                            : (f.has("blocks.0.att.v1") ? dim(f, "blocks.0.att.v1", 2, 1) : 0);
  return c;
}

ParamDims param_dims(const ModelConfig& c) {
  return ParamDims{c.n_embd,  c.vocab_size, c.ffn_dim, c.n_head, c.head_size,
                   c.d_decay, c.d_aaa,      c.d_value, c.d_gate};
}

namespace {

// Where the graph keeps parameter `id` of `layer` (-1: model scope): exactly one of the three
// pointers, matching the table's ParamKind (Vector and HeadMatrix: vec, Lora: lora).
struct Slot {
  std::vector<float>* vec = nullptr;
  OwnedMatrix* lora = nullptr;
  Matrix* matrix = nullptr;
};

Slot slot_of(ModelWeights& w, ParamId id, int64_t layer) {
  LayerWeights& L = w.layers[size_t(std::max<int64_t>(layer, 0))];
  switch (id) {  // no default: a ParamId without a slot is a compile warning (-Wswitch)
    case ParamId::Emb:
      return {.matrix = &w.emb};
    case ParamId::Head:
      return {.matrix = &w.head};
    case ParamId::Ln0W:
      return {.vec = &w.ln0_w};
    case ParamId::Ln0B:
      return {.vec = &w.ln0_b};
    case ParamId::LnOutW:
      return {.vec = &w.ln_out_w};
    case ParamId::LnOutB:
      return {.vec = &w.ln_out_b};
    case ParamId::Ln1W:
      return {.vec = &L.ln1_w};
    case ParamId::Ln1B:
      return {.vec = &L.ln1_b};
    case ParamId::Ln2W:
      return {.vec = &L.ln2_w};
    case ParamId::Ln2B:
      return {.vec = &L.ln2_b};
    case ParamId::XR:
      return {.vec = &L.x_r};
    case ParamId::XW:
      return {.vec = &L.x_w};
    case ParamId::XK:
      return {.vec = &L.x_k};
    case ParamId::XV:
      return {.vec = &L.x_v};
    case ParamId::XA:
      return {.vec = &L.x_a};
    case ParamId::XG:
      return {.vec = &L.x_g};
    case ParamId::W0:
      return {.vec = &L.w0};
    case ParamId::A0:
      return {.vec = &L.a0};
    case ParamId::V0:
      return {.vec = &L.v0};
    case ParamId::KK:
      return {.vec = &L.k_k};
    case ParamId::KA:
      return {.vec = &L.k_a};
    case ParamId::RK:
      return {.vec = &L.r_k};
    case ParamId::LnXW:
      return {.vec = &L.ln_x_w};
    case ParamId::LnXB:
      return {.vec = &L.ln_x_b};
    case ParamId::FfnXK:
      return {.vec = &L.ffn_x_k};
    case ParamId::W1:
      return {.lora = &L.w1};
    case ParamId::W2:
      return {.lora = &L.w2};
    case ParamId::A1:
      return {.lora = &L.a1};
    case ParamId::A2:
      return {.lora = &L.a2};
    case ParamId::V1:
      return {.lora = &L.v1};
    case ParamId::V2:
      return {.lora = &L.v2};
    case ParamId::G1:
      return {.lora = &L.g1};
    case ParamId::G2:
      return {.lora = &L.g2};
    case ParamId::Receptance:
      return {.matrix = &L.receptance};
    case ParamId::Key:
      return {.matrix = &L.key};
    case ParamId::Value:
      return {.matrix = &L.value};
    case ParamId::Output:
      return {.matrix = &L.output};
    case ParamId::FfnKey:
      return {.matrix = &L.ffn_key};
    case ParamId::FfnValue:
      return {.matrix = &L.ffn_value};
  }
  throw Error("weights: parameter without a slot");
}

}  // namespace

ModelWeights build_weights(TensorFile file, const WeightOptions& opts) {
  ModelWeights w;
  w.file = std::move(file);
  w.trainable = opts.trainable;
  const TensorFile& f = w.file;
  const ModelConfig c = infer_config(f);
  w.config = c;
  w.layers.resize(size_t(c.n_layer));
  for (int64_t i = 0; i < c.n_layer; ++i) w.layers[size_t(i)].has_value_residual = i > 0;
  const ParamDims dims = param_dims(c);
  // Layer 0's v0/v1/v2 are unused (its value is v_first itself): not loaded.
  for_each_parameter(c.n_layer, UnusedCopies::Skip, [&](const ParamSpec& s, int64_t layer) {
    const std::string name(ParamName(s, layer).view());
    const Shape shape = param_shape(s, dims);
    const Slot slot = slot_of(w, s.id, layer);
    switch (s.kind) {
      case ParamKind::Matrix:
        *slot.matrix = matrix(f, name, shape[0], shape[1]);
        break;
      case ParamKind::Vector:
        *slot.vec = vec(f, name, shape_numel(shape));
        break;
      case ParamKind::Lora:
        *slot.lora = transposed(f, name, shape[0], shape[1], !opts.trainable);
        break;
      case ParamKind::HeadMatrix:
        expect_shape(f, name, shape);
        *slot.vec = to_f32(f.get(name));
        break;
    }
  });
  w.matrix_dtype = w.emb.dtype;
  for (const auto& [name, v] : f.tensors) w.parameter_count += v.numel();
  account_costs(w);
  w.fingerprint = compute_fingerprint(f, c);
  return w;
}

void prepare_for_cpu(ModelWeights& w, ThreadPool& pool, bool bf16_products) {
  auto prepare = [&](Matrix& m, bool mapped, bool fp32_copy_ok = false, bool pairs = false) {
    if (auto owner = prepare_cpu_panels(m, pool, mapped, fp32_copy_ok, pairs))
      w.prepared.push_back(std::move(owner));
  };
  // A view of the file's mapping, or a buffer (converted at read, LoRA-merged): fp32 panels
  // replace the former (prepare_cpu_panels); of buffers only the small LoRA factors get them.
  auto in_file = [&](const Matrix& m) {
    return w.file.in_mapping(m.data, size_t(m.rows) * row_bytes(m.dtype, m.cols));
  };
  prepare(w.head, in_file(w.head), false, bf16_products);
  for (LayerWeights& L : w.layers) {
    for (Matrix* m : {&L.receptance, &L.key, &L.value, &L.output, &L.ffn_key, &L.ffn_value})
      prepare(*m, in_file(*m), false, bf16_products);
    // LoRA factors, bf16 (OwnedMatrix::halves) or fp32 (a second copy, as large as the factor:
    // [C, D], 10.6 MB in all for the 0.1B shape): a stage's products then share
    // one parallel region and no factor is packed again per call (2.3% of a 32-sequence bf16
    // decode step where the up factors were fp32). With bf16 products they get pair panels
    // too, multiplied with x split in two bf16 terms (x ≈ hi + lo: 16 significant bits, as
    // accurate as the fp32 path for these small products, at its speed): rounding x to 8 bits
    // moved a random model's logits by 28% of their spread (the gate's factors most), and
    // the fp32 kernels' sums differ between one position and several, which a bf16 rounding
    // downstream turned into a batch-dependent jump of 2^-9 now and then.
    // Only where this layer's large matrices got pair panels (a Q8_0 or f16 model keeps its
    // fp32 products: Model::product_precision() says fp32). An fp32 factor (not bf16-exact)
    // is rounded to bf16 like an fp32 checkpoint's large matrices.
    const bool pairs = bf16_products && L.ffn_key.cpu_pair_panels != nullptr;
    for (OwnedMatrix* m : {&L.w1, &L.w2, &L.a1, &L.a2, &L.v1, &L.v2, &L.g1, &L.g2}) {
      prepare(m->m, false, /*fp32_copy_ok=*/true, pairs);
      m->m.cpu_pairs_split_x = m->m.cpu_pair_panels != nullptr;
    }
  }
  if (bf16_products) account_costs(w);  // bytes per token as the pair panels hold them
}

void refresh_weights(ModelWeights& w) {
  if (!w.trainable) throw Error("refresh_weights: weights were not built trainable");
  const TensorFile& f = w.file;
  auto copy = [](const TensorView& v, std::vector<float>& dst) {
    for (size_t i = 0; i < dst.size(); ++i) dst[i] = load_as_f32(v.dtype, v.data, i);
  };
  for_each_parameter(w.config.n_layer, UnusedCopies::Skip, [&](const ParamSpec& s, int64_t layer) {
    if (s.kind == ParamKind::Matrix) return;  // views of the file's tensors: already current
    const ParamName name(s, layer);
    auto it = f.tensors.find(name.view());
    if (it == f.tensors.end()) throw Error("refresh_weights: a tensor is gone");
    const TensorView& v = it->second;
    const Slot slot = slot_of(w, s.id, layer);
    if (slot.vec) {
      copy(v, *slot.vec);
      return;
    }
    OwnedMatrix& dst = *slot.lora;  // fp32 (trainable), transposed: [cols, rows]
    const int64_t rows = dst.m.cols, cols = dst.m.rows;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        dst.values[size_t(c * rows + r)] = load_as_f32(v.dtype, v.data, size_t(r * cols + c));
  });
}

}  // namespace rwkv7
