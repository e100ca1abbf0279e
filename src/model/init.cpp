// Official RWKV-7 initialisation (see init.hpp for the source). Formulas, per layer i of L,
// channel n of C, head size N:
//   ratio_0_to_1 = i/(L-1) (0 when L = 1), ratio_1_to_almost0 = 1 - i/L, ddd[n] = n/C
//   att.x_r = 1 - ddd^(0.2 r1)  x_w = 1 - ddd^(0.9 r1)  x_k = 1 - ddd^(0.7 r1)
//   x_v = 1 - ddd^(0.7 r1)      x_a = 1 - ddd^(0.9 r1)  x_g = 1 - ddd^(0.2 r1)
//   linear[n] = n/(C-1) - 0.5;  zigzag[n] = z|z|, z = ((n mod N) - (N-1)/2) / ((N-1)/2)
//   www[n] = -6 + 6 (n/(C-1))^(1 + r0^0.3);   w0 = www + 0.5 + 2.5 zigzag
//   a0 = -0.19 + 0.3 zigzag + 0.4 linear;  v0 = 0.73 - 0.4 linear
//   k_k = 0.71 - 0.1 linear;  k_a = 1.02;  r_k = -0.04
//   w1 a1 v1 g1 = 0;  w2 a2 v2 g2 = orthogonal, gain 0.1 (x sqrt(D/C) if D > C)
//   receptance, value: orthogonal gain 1; key: orthogonal gain 0.1; output: 0
//   ln_x.weight = ((1+i)/L)^0.7, ln_x.bias = 0; ffn.x_k = 1 - ddd^(r1^4)
//   ffn.key: orthogonal gain 1; ffn.value: 0; emb: U(-1e-4, 1e-4)
//   head: orthogonal, gain 0.5 sqrt(V/C) if V > C else 0.5; LayerNorms: weight 1, bias 0.
// (The nn.Linear uniform ranges in RWKV_Tmix_x070.__init__ are overwritten by
// generate_init_weight, whose output is what the official trainer starts from.)
#include "model/init.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <numbers>
#include <random>

#include "core/dtype.hpp"
#include "core/thread_pool.hpp"
#include "io/rwkv7_parameters.hpp"
#include "model/weights.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// One seed per tensor: results do not depend on generation order or thread count.
uint64_t tensor_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return splitmix64(splitmix64(seed) ^ h);
}

// Our own draws from mt19937_64 (std distributions differ between standard libraries).
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  double uniform01() { return double(gen_() >> 11) * 0x1.0p-53; }  // [0, 1)
  double uniform(double a, double b) { return a + (b - a) * uniform01(); }
  double normal() {  // Box-Muller, both values used
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = double((gen_() >> 11) + 1) * 0x1.0p-53;  // (0, 1]
    double u2 = uniform01();
    double rad = std::sqrt(-2.0 * std::log(u1));
    double ang = 2.0 * std::numbers::pi * u2;
    spare_ = rad * std::sin(ang);
    has_spare_ = true;
    return rad * std::cos(ang);
  }

 private:
  std::mt19937_64 gen_;
  double spare_ = 0;
  bool has_spare_ = false;
};

// One tensor to write: its table entry and layer (-1 for model-scope tensors).
struct TensorPlan {
  std::string name;
  Shape shape;
  const ParamSpec* spec;
  int64_t layer;
};

// Every parameter of io/rwkv7_parameters in state_dict order, layer 0's unused v0/v1/v2
// included (the released files carry them).
std::vector<TensorPlan> make_plan(const ModelConfig& c) {
  const ParamDims d = param_dims(c);
  std::vector<TensorPlan> p;
  for_each_parameter(c.n_layer, UnusedCopies::Include, [&](const ParamSpec& s, int64_t layer) {
    p.push_back(TensorPlan{std::string(ParamName(s, layer).view()), param_shape(s, d), &s, layer});
  });
  return p;
}

// The per-channel vectors of one layer (all [C]).
void fill_formula(float* out, ParamId id, int64_t layer, const ModelConfig& c) {
  const int64_t C = c.n_embd, N = c.head_size, L = c.n_layer;
  // Python divides by zero for L = 1; the only layer is then both first and last: use 0.
  const double r0 = L > 1 ? double(layer) / double(L - 1) : 0.0;  // ratio_0_to_1
  const double r1 = 1.0 - double(layer) / double(L);              // ratio_1_to_almost0
  for (int64_t n = 0; n < C; ++n) {
    const double ddd = double(n) / double(C);
    const double linear = C > 1 ? double(n) / double(C - 1) - 0.5 : 0.0;
    const double half = double(N - 1) / 2.0;
    double z = (double(n % N) - half) / half;
    const double zigzag = z * std::abs(z);
    double v = 0;
    switch (id) {
      case ParamId::XR:
      case ParamId::XG:
        v = 1.0 - std::pow(ddd, 0.2 * r1);
        break;
      case ParamId::XW:
      case ParamId::XA:
        v = 1.0 - std::pow(ddd, 0.9 * r1);
        break;
      case ParamId::XK:
      case ParamId::XV:
        v = 1.0 - std::pow(ddd, 0.7 * r1);
        break;
      case ParamId::W0: {
        const double t = C > 1 ? double(n) / double(C - 1) : 0.0;
        const double www = -6.0 + 6.0 * std::pow(t, 1.0 + std::pow(r0, 0.3));
        v = www + 0.5 + zigzag * 2.5;
        break;
      }
      case ParamId::A0:
        v = -0.19 + zigzag * 0.3 + linear * 0.4;
        break;
      case ParamId::V0:
        v = 0.73 - linear * 0.4;
        break;
      case ParamId::KK:
        v = 0.71 - linear * 0.1;
        break;
      case ParamId::FfnXK:
        v = 1.0 - std::pow(ddd, std::pow(r1, 4));
        break;
      default:  // the table marks only the parameters above as Formula (InitPlan test)
        throw Error("init: no formula for " + std::string(param_spec(id).name));
    }
    out[n] = float(v);
  }
}

void fill_tensor(float* out, const TensorPlan& t, const ModelConfig& c, uint64_t seed) {
  const int64_t n = shape_numel(t.shape);
  const ParamSpec& spec = *t.spec;
  const double value = spec.value;
  switch (spec.init) {
    case ParamInit::Zero:
      std::fill(out, out + n, 0.0f);
      break;
    case ParamInit::Const:
      std::fill(out, out + n, float(value));
      break;
    case ParamInit::LayerScale:
      std::fill(out, out + n, float(std::pow(double(1 + t.layer) / double(c.n_layer), value)));
      break;
    case ParamInit::Uniform: {
      Rng rng(tensor_seed(seed, t.name));
      for (int64_t i = 0; i < n; ++i) out[i] = float(rng.uniform(-value, value));
      break;
    }
    case ParamInit::Orthogonal:
    case ParamInit::LoraOrthogonal:
    case ParamInit::HeadOrthogonal: {
      const int64_t rows = t.shape[0], cols = t.shape[1];
      double gain = value;
      // LoRA: ortho_init's extra sqrt(rows / cols) for tall matrices; head: sqrt(V / C).
      if (spec.init != ParamInit::Orthogonal && rows > cols)
        gain *= std::sqrt(double(rows) / double(cols));
      orthogonal_init(out, rows, cols, gain, tensor_seed(seed, t.name));
      break;
    }
    case ParamInit::Formula:
      fill_formula(out, spec.id, t.layer, c);
      break;
  }
}

void store(std::byte* dst, const float* src, int64_t n, DType dtype) {
  if (dtype == DType::F32) {
    std::memcpy(dst, src, size_t(n) * 4);
    return;
  }
  auto* d = reinterpret_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i)
    d[i] = dtype == DType::BF16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
}

void check_positive(int64_t v, const char* what, int64_t limit) {
  if (v <= 0)
    throw Error("init: " + std::string(what) + " must be positive (got " + std::to_string(v) + ")");
  if (v > limit)
    throw Error("init: " + std::string(what) + " = " + std::to_string(v) +
                " is too large (at most " + std::to_string(limit) + ")");
}

}  // namespace

InitSpec init_preset(const std::string& name) {
  InitSpec s;
  if (name == "0.1b") {
    s.n_layer = 12, s.n_embd = 768;
  } else if (name == "0.4b") {
    s.n_layer = 24, s.n_embd = 1024;
  } else if (name == "1.5b") {
    s.n_layer = 24, s.n_embd = 2048;  // LoRA widths from the formulas
    return s;
  } else {
    throw Error("init: unknown preset '" + name + "' (expected 0.1b, 0.4b or 1.5b)");
  }
  // The released 0.1B and 0.4B models (SPEC §1).
  s.d_decay = 64, s.d_aaa = 64, s.d_value = 32, s.d_gate = 128;
  return s;
}

int64_t official_lora_width(double factor, int64_t n_embd) {
  // Python: max(32, int(round(x / 32) * 32)); round() is half-to-even, as nearbyint is.
  const double q = std::nearbyint(factor * std::sqrt(double(n_embd)) / 32.0);
  return std::max<int64_t>(32, int64_t(q) * 32);
}

ModelConfig resolve_init_config(const InitSpec& s) {
  check_positive(s.n_layer, "--layers", 4096);
  check_positive(s.n_embd, "--embd", 1 << 16);
  check_positive(s.vocab_size, "--vocab-size", 1 << 24);
  check_positive(s.head_size, "--head-size", 1 << 16);
  if (s.head_size < 2)
    throw Error("init: --head-size must be at least 2 (the zigzag decay offset divides by N-1)");
  if (s.n_embd % s.head_size != 0)
    throw Error("init: --embd " + std::to_string(s.n_embd) + " is not divisible by --head-size " +
                std::to_string(s.head_size));
  if (s.dtype != DType::F32 && s.dtype != DType::BF16 && s.dtype != DType::F16)
    throw Error("init: --dtype must be f32, bf16 or f16 (got " + dtype_name(s.dtype) + ")");
  ModelConfig c;
  c.n_layer = s.n_layer;
  c.n_embd = s.n_embd;
  c.head_size = s.head_size;
  c.n_head = s.n_embd / s.head_size;
  c.vocab_size = s.vocab_size;
  c.ffn_dim = s.ffn_dim == 0 ? 4 * s.n_embd : s.ffn_dim;
  check_positive(c.ffn_dim, "--ffn", 1 << 20);
  auto lora = [&](int64_t given, double factor, const char* flag) {
    if (given == 0) return official_lora_width(factor, s.n_embd);
    check_positive(given, flag, 1 << 16);
    return given;
  };
  c.d_decay = lora(s.d_decay, 2.5, "--lora-decay");
  c.d_aaa = lora(s.d_aaa, 2.5, "--lora-aaa");
  c.d_value = lora(s.d_value, 1.7, "--lora-value");
  c.d_gate = lora(s.d_gate, 5.0, "--lora-gate");
  return c;
}

std::vector<std::pair<std::string, Shape>> init_tensor_shapes(const ModelConfig& cfg) {
  std::vector<std::pair<std::string, Shape>> out;
  for (auto& t : make_plan(cfg)) out.emplace_back(t.name, t.shape);
  return out;
}

const TensorView& InitializedModel::get(const std::string& name) const {
  for (auto& [n, v] : tensors)
    if (n == name) return v;
  throw Error("init: no tensor named '" + name + "'");
}

int64_t InitializedModel::parameter_count() const {
  int64_t total = 0;
  for (auto& [n, v] : tensors) total += v.numel();
  return total;
}

void orthogonal_init(float* out, int64_t rows, int64_t cols, double gain, uint64_t seed) {
  // Orthonormalise k vectors of length n (the short side), as torch does by transposing
  // wide matrices. Vector j is column j (tall) or row j (wide) of the result.
  const bool tall = rows >= cols;
  const int64_t k = tall ? cols : rows, n = tall ? rows : cols;
  Rng rng(seed);
  if (double(n) * double(k) * double(k) > kOrthoExactLimit) {
    // Approximation for huge matrices (exact QR too slow): Gaussian entries, each vector
    // normalised to length `gain`; inner products between vectors are ~1/sqrt(n).
    const int64_t total = rows * cols;
    for (int64_t i = 0; i < total; ++i) out[i] = float(rng.normal());
    std::vector<double> sq(size_t(k), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        sq[size_t(tall ? c : r)] += double(out[r * cols + c]) * out[r * cols + c];
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        out[r * cols + c] = float(out[r * cols + c] * (gain / std::sqrt(sq[size_t(tall ? c : r)])));
    return;
  }
  // [k, n] vectors, Gaussian, then modified Gram-Schmidt in double: Q of the QR with a
  // positive R diagonal (what torch's orthogonal_ returns after its sign fix). Vectors are
  // processed in blocks so the previous vector being projected out is read once per block.
  std::vector<double> q(size_t(k * n));
  for (auto& x : q) x = rng.normal();
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(64, 32768 / n));
  auto project_out = [&](int64_t i, int64_t t) {  // v_t -= (v_i . v_t) v_i
    const double* vi = &q[size_t(i * n)];
    double* vt = &q[size_t(t * n)];
    double d = 0;
    for (int64_t e = 0; e < n; ++e) d += vi[e] * vt[e];
    for (int64_t e = 0; e < n; ++e) vt[e] -= d * vi[e];
  };
  for (int64_t j0 = 0; j0 < k; j0 += block) {
    const int64_t j1 = std::min(k, j0 + block);
    for (int64_t i = 0; i < j0; ++i)
      for (int64_t t = j0; t < j1; ++t) project_out(i, t);
    for (int64_t t = j0; t < j1; ++t) {
      for (int64_t i = j0; i < t; ++i) project_out(i, t);
      double* vt = &q[size_t(t * n)];
      double norm = 0;
      for (int64_t e = 0; e < n; ++e) norm += vt[e] * vt[e];
      norm = std::sqrt(norm);
      if (!(norm > 1e-300)) throw Error("init: orthogonal_init met a degenerate matrix");
      for (int64_t e = 0; e < n; ++e) vt[e] /= norm;
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * cols + c] = float(gain * (tall ? q[size_t(c * n + r)] : q[size_t(r * n + c)]));
}

InitializedModel init_model(const InitSpec& spec) {
  InitializedModel m;
  m.config = resolve_init_config(spec);
  const std::vector<TensorPlan> plan = make_plan(m.config);
  const size_t esize = dtype_size(spec.dtype);
  m.buffers.resize(plan.size());
  m.tensors.reserve(plan.size());
  for (size_t i = 0; i < plan.size(); ++i) {
    const int64_t n = shape_numel(plan[i].shape);
    m.buffers[i] = std::make_unique<std::byte[]>(size_t(n) * esize);
    m.tensors.emplace_back(plan[i].name, TensorView{spec.dtype, plan[i].shape, m.buffers[i].get()});
  }
  // Largest tensors first, one tensor per task; each worker keeps an f32 scratch buffer.
  std::vector<size_t> order(plan.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return shape_numel(plan[a].shape) > shape_numel(plan[b].shape);
  });
  ThreadPool pool(spec.threads);
  std::mutex err_mutex;
  std::string first_error;
  // Strided assignment (task w takes w, w+P, ...) balances the big matrices across workers.
  const int64_t parts = std::min<int64_t>(pool.size(), int64_t(plan.size()));
  pool.parallel_for(parts, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch;
    for (int64_t w = begin; w < end; ++w) {
      for (size_t o = size_t(w); o < order.size(); o += size_t(parts)) {
        const TensorPlan& t = plan[order[o]];
        try {
          float* dst = spec.dtype == DType::F32
                           ? reinterpret_cast<float*>(m.buffers[order[o]].get())
                           : nullptr;
          if (!dst) {
            scratch.resize(size_t(shape_numel(t.shape)));
            dst = scratch.data();
          }
          fill_tensor(dst, t, m.config, spec.seed);
          if (spec.dtype != DType::F32)
            store(m.buffers[order[o]].get(), dst, shape_numel(t.shape), spec.dtype);
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(err_mutex);
          if (first_error.empty()) first_error = e.what();
        }
      }
    }
  });
  if (!first_error.empty()) throw Error(first_error);
  return m;
}

}  // namespace rwkv7
