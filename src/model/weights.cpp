#include "model/weights.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

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

int64_t matrix_bytes(const Matrix& m) { return m.rows * int64_t(row_bytes(m.dtype, m.cols)); }

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

namespace {

// Every tensor the weights copy (per-channel vectors, LoRA factors) with its name: the one
// list that build_weights reads and refresh_weights reads again. vec(dst, prefix, name, n),
// lora(dst, prefix, name, rows, cols), r_k(dst, prefix, name) with the names split in two so
// that a refresh can look them up from a stack buffer.
template <class Vec, class Lora, class Rk>
void for_each_copied(ModelWeights& w, Vec&& vec, Lora&& lora, Rk&& r_k) {
  const ModelConfig& c = w.config;
  const int64_t C = c.n_embd;
  vec(w.ln0_w, "", "blocks.0.ln0.weight", C);
  vec(w.ln0_b, "", "blocks.0.ln0.bias", C);
  vec(w.ln_out_w, "", "ln_out.weight", C);
  vec(w.ln_out_b, "", "ln_out.bias", C);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    char p[32], a[40];
    std::snprintf(p, sizeof p, "blocks.%" PRId64 ".", i);
    std::snprintf(a, sizeof a, "blocks.%" PRId64 ".att.", i);
    LayerWeights& L = w.layers[size_t(i)];
    vec(L.ln1_w, p, "ln1.weight", C);
    vec(L.ln1_b, p, "ln1.bias", C);
    vec(L.ln2_w, p, "ln2.weight", C);
    vec(L.ln2_b, p, "ln2.bias", C);
    vec(L.x_r, a, "x_r", C);
    vec(L.x_w, a, "x_w", C);
    vec(L.x_k, a, "x_k", C);
    vec(L.x_v, a, "x_v", C);
    vec(L.x_a, a, "x_a", C);
    vec(L.x_g, a, "x_g", C);
    vec(L.w0, a, "w0", C);
    vec(L.a0, a, "a0", C);
    vec(L.k_k, a, "k_k", C);
    vec(L.k_a, a, "k_a", C);
    r_k(L.r_k, a, "r_k");
    vec(L.ln_x_w, a, "ln_x.weight", C);
    vec(L.ln_x_b, a, "ln_x.bias", C);
    lora(L.w1, a, "w1", C, c.d_decay);
    lora(L.w2, a, "w2", c.d_decay, C);
    lora(L.a1, a, "a1", C, c.d_aaa);
    lora(L.a2, a, "a2", c.d_aaa, C);
    lora(L.g1, a, "g1", C, c.d_gate);
    lora(L.g2, a, "g2", c.d_gate, C);
    // Layer 0 takes v_first from its own value; released files still carry unused v0/v1/v2.
    if (L.has_value_residual) {
      vec(L.v0, a, "v0", C);
      lora(L.v1, a, "v1", C, c.d_value);
      lora(L.v2, a, "v2", c.d_value, C);
    }
    vec(L.ffn_x_k, p, "ffn.x_k", C);
  }
}

std::string joined(std::string_view a, std::string_view b) {
  return std::string(a) + std::string(b);
}

}  // namespace

ModelWeights build_weights(TensorFile file, const WeightOptions& opts) {
  ModelWeights w;
  w.file = std::move(file);
  w.trainable = opts.trainable;
  const TensorFile& f = w.file;
  const ModelConfig c = infer_config(f);
  w.config = c;
  const int64_t C = c.n_embd, V = c.vocab_size, F = c.ffn_dim;
  w.emb = matrix(f, "emb.weight", V, C);
  w.matrix_dtype = w.emb.dtype;
  w.head = matrix(f, "head.weight", V, C);
  w.layers.resize(size_t(c.n_layer));
  for (int64_t i = 0; i < c.n_layer; ++i) w.layers[size_t(i)].has_value_residual = i > 0;
  for_each_copied(
      w,
      [&](std::vector<float>& dst, std::string_view p, std::string_view n, int64_t len) {
        dst = vec(f, joined(p, n), len);
      },
      [&](OwnedMatrix& dst, std::string_view p, std::string_view n, int64_t rows, int64_t cols) {
        dst = transposed(f, joined(p, n), rows, cols, !opts.trainable);
      },
      [&](std::vector<float>& dst, std::string_view p, std::string_view n) {
        expect_shape(f, joined(p, n), {c.n_head, c.head_size});
        dst = to_f32(f.get(joined(p, n)));
      });
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string a = "blocks." + std::to_string(i) + ".att.";
    const std::string p = "blocks." + std::to_string(i) + ".";
    LayerWeights& L = w.layers[size_t(i)];
    L.receptance = matrix(f, a + "receptance.weight", C, C);
    L.key = matrix(f, a + "key.weight", C, C);
    L.value = matrix(f, a + "value.weight", C, C);
    L.output = matrix(f, a + "output.weight", C, C);
    L.ffn_key = matrix(f, p + "ffn.key.weight", F, C);
    L.ffn_value = matrix(f, p + "ffn.value.weight", C, F);
  }
  for (const auto& [name, v] : f.tensors) w.parameter_count += v.numel();
  account_costs(w);
  w.fingerprint = compute_fingerprint(f, c);
  return w;
}

void refresh_weights(ModelWeights& w) {
  if (!w.trainable) throw Error("refresh_weights: weights were not built trainable");
  const TensorFile& f = w.file;
  auto find = [&](std::string_view p, std::string_view n) -> const TensorView& {
    char buf[96];
    if (p.size() + n.size() > sizeof buf) throw Error("refresh_weights: name too long");
    std::copy(p.begin(), p.end(), buf);
    std::copy(n.begin(), n.end(), buf + p.size());
    auto it = f.tensors.find(std::string_view(buf, p.size() + n.size()));
    if (it == f.tensors.end()) throw Error("refresh_weights: a tensor is gone");
    return it->second;
  };
  auto copy = [](const TensorView& v, std::vector<float>& dst) {
    for (size_t i = 0; i < dst.size(); ++i) dst[i] = load_as_f32(v.dtype, v.data, i);
  };
  for_each_copied(
      w,
      [&](std::vector<float>& dst, std::string_view p, std::string_view n, int64_t) {
        copy(find(p, n), dst);
      },
      [&](OwnedMatrix& dst, std::string_view p, std::string_view n, int64_t rows, int64_t cols) {
        const TensorView& v = find(p, n);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c)
            dst.values[size_t(c * rows + r)] = load_as_f32(v.dtype, v.data, size_t(r * cols + c));
      },
      [&](std::vector<float>& dst, std::string_view p, std::string_view n) {
        copy(find(p, n), dst);
      });
}

}  // namespace rwkv7
