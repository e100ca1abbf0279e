// Compressed states (rwkv7/state_compress.hpp): encoding, decoding with every check a hostile
// file needs, and the serialised form (safetensors bytes, the layout of a state file).
#include "rwkv7/state_compress.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>

#include "core/atomic_write.hpp"
#include "core/dtype.hpp"
#include "core/svd.hpp"
#include "engine/state_file_internal.hpp"
#include "engine/state_projection_internal.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

using Part = CompressedState::Part;

enum class Kind { F32, BF16, F16, Int8, LowRank, Adaptive, Learned };

struct Method {
  Kind kind = Kind::F32;
  std::string factor =
      "f32";  // low rank, learned: dtype of the factors / code ("f32", "bf16", "i8")
};

Method parse_method(const std::string& name) {
  if (name == "f32") return {Kind::F32};
  if (name == "bf16") return {Kind::BF16};
  if (name == "fp16") return {Kind::F16};
  if (name == "int8") return {Kind::Int8};
  for (auto [prefix, kind] : {std::pair{std::string("lowrank"), Kind::LowRank},
                              std::pair{std::string("adaptive"), Kind::Adaptive},
                              std::pair{std::string("learned"), Kind::Learned}}) {
    if (name == prefix) return {kind, "f32"};
    if (name == prefix + "-bf16") return {kind, "bf16"};
    if (name == prefix + "-int8") return {kind, "i8"};
  }
  std::string all;
  for (const auto& m : state_compression_methods()) all += (all.empty() ? "" : ", ") + m;
  for (const auto& m : learned_compression_methods()) all += ", " + m;
  throw Error("unknown state compression method '" + name + "' (one of: " + all + ")");
}

size_t elem_size(const std::string& dt) {
  if (dt == "f32" || dt == "i32") return 4;
  if (dt == "bf16" || dt == "f16") return 2;
  if (dt == "i8") return 1;
  return 0;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// fp32 values as a part of dtype f32, bf16 or f16 (fp16 saturates: a state beyond ±65504
// would otherwise become infinite).
Part encode(const std::string& name, const std::string& dt, std::vector<int64_t> shape,
            const float* x) {
  Part p{name, dt, std::move(shape), {}};
  const size_t n = size_t(numel(p.shape));
  p.data.resize(n * elem_size(dt));
  if (dt == "f32") {
    if (n) std::memcpy(p.data.data(), x, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      if (dt == "bf16") {
        h = f32_to_bf16(x[i]);
      } else {
        h = f32_to_f16(std::clamp(x[i], -65504.0f, 65504.0f));
      }
      std::memcpy(&p.data[2 * i], &h, 2);
    }
  }
  return p;
}

// Symmetric int8 with one scale per row of `cols` values: q = round(x / scale), scale =
// max |x| / 127 (0 for a zero row).
void quantize_rows(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scale) {
  for (int64_t r = 0; r < rows; ++r) {
    float m = 0;
    for (int64_t c = 0; c < cols; ++c) m = std::max(m, std::fabs(x[r * cols + c]));
    const float s = m / 127.0f;
    scale[r] = s;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = s > 0 ? std::nearbyint(x[r * cols + c] / s) : 0.0f;
      q[r * cols + c] = int8_t(std::clamp(v, -127.0f, 127.0f));
    }
  }
}

Part int8_part(const std::string& name, std::vector<int64_t> shape, const std::vector<int8_t>& q) {
  Part p{name, "i8", std::move(shape), {}};
  p.data.resize(q.size());
  if (!q.empty()) std::memcpy(p.data.data(), q.data(), q.size());
  return p;
}

const Part* find_part(const CompressedState& cs, const std::string& name) {
  for (const Part& p : cs.parts)
    if (p.name == name) return &p;
  return nullptr;
}

// Decodes a float part (f32/bf16/f16), refusing NaN and infinity with the element's index.
std::vector<float> decode_floats(const Part& p, const std::string& origin) {
  const size_t n = size_t(numel(p.shape));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    float f;
    if (p.dtype == "f32") {
      std::memcpy(&f, &p.data[4 * i], 4);
    } else {
      uint16_t h;
      std::memcpy(&h, &p.data[2 * i], 2);
      f = p.dtype == "bf16" ? bf16_to_f32(h) : f16_to_f32(h);
    }
    if (!std::isfinite(f)) {
      throw Error(origin + ": tensor '" + p.name + "' element " + std::to_string(i) + " is " +
                  (std::isnan(f) ? "NaN" : "infinite") + "; not a usable state");
    }
    out[i] = f;
  }
  return out;
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

// The parts a method needs: name → (dtype, shape). Low rank needs the total rank R, learned
// the projection's rank r (the same argument).
struct Want {
  std::string name, dtype;
  std::vector<int64_t> shape;
};

std::vector<Want> wanted_parts(const CompressedState& cs, const Method& m, int64_t total_rank,
                               const std::string& shift_dtype) {
  const int64_t L = cs.n_layer, C = cs.n_embd, H = cs.n_head, N = cs.head_size;
  std::vector<Want> w = {{"state.att_shift", shift_dtype, {L, C}},
                         {"state.ffn_shift", shift_dtype, {L, C}}};
  switch (m.kind) {
    case Kind::F32:
      w.push_back({"state.wkv", "f32", {L, H, N, N}});
      break;
    case Kind::BF16:
      w.push_back({"state.wkv", "bf16", {L, H, N, N}});
      break;
    case Kind::F16:
      w.push_back({"state.wkv", "f16", {L, H, N, N}});
      break;
    case Kind::Int8:
      w.push_back({"state.wkv", "i8", {L, H, N, N}});
      w.push_back({"state.wkv.scale", "f32", {L, H, N}});
      break;
    case Kind::LowRank:
    case Kind::Adaptive:
      w.push_back({"state.wkv.rank", "i32", {L, H}});
      w.push_back({"state.wkv.u", m.factor, {total_rank, N}});
      w.push_back({"state.wkv.v", m.factor, {total_rank, N}});
      if (m.factor == "i8") {
        w.push_back({"state.wkv.u_scale", "f32", {total_rank}});
        w.push_back({"state.wkv.v_scale", "f32", {total_rank}});
      }
      break;
    case Kind::Learned:
      w.push_back({"state.wkv.code", m.factor, {L, H, total_rank, N}});
      if (m.factor == "i8") w.push_back({"state.wkv.code_scale", "f32", {L, H, total_rank}});
      w.push_back({"shared.decoder", "f32", {L, H, N, total_rank}});
      w.push_back({"shared.key_side", "i32", {1}});
      break;
  }
  return w;
}

// Sizes a state may have: head size bounded, and the decompressed state at most 1024x the
// stored bytes (plus 1 MB), so a small hostile file cannot ask for terabytes.
void check_dims(const CompressedState& cs, const std::string& origin) {
  const int64_t L = cs.n_layer, C = cs.n_embd, H = cs.n_head, N = cs.head_size;
  if (L <= 0 || C <= 0 || H <= 0 || N <= 0 || N > 1024 || H > C || C % H != 0 || C / H != N ||
      L > (int64_t(1) << 20) || C > (int64_t(1) << 24)) {
    throw Error(origin + ": state sizes L=" + std::to_string(L) + " C=" + std::to_string(C) +
                " H=" + std::to_string(H) + " N=" + std::to_string(N) +
                " are not those of an RWKV-7 state (C = H·N, N <= 1024)");
  }
  size_t stored = 0;
  for (const Part& p : cs.parts) stored += p.data.size();
  const double raw = double(L) * double(C) * (2.0 + double(N)) * 4.0;
  if (raw > 1024.0 * double(stored) + double(1 << 20)) {
    throw Error(origin + ": state of " + std::to_string(int64_t(raw)) + " bytes from only " +
                std::to_string(stored) + " stored bytes: not a state this engine writes");
  }
}

// Checks that the parts are exactly those the method needs, with their dtypes and shapes.
// Returns the ranks for low rank (empty otherwise).
std::vector<int32_t> check_structure(const CompressedState& cs, const Method& m,
                                     const std::string& origin) {
  check_dims(cs, origin);
  const Part* shift = find_part(cs, "state.att_shift");
  if (!shift) throw Error(origin + ": tensor 'state.att_shift' is missing");
  const std::string shift_dtype = m.kind == Kind::F32 ? "f32" : shift->dtype;
  if (m.kind != Kind::F32 && shift_dtype != "f32" && shift_dtype != "bf16" &&
      !(m.kind == Kind::F16 && shift_dtype == "f16")) {
    throw Error(origin + ": tensor 'state.att_shift' has dtype " + shift_dtype +
                "; shifts are f32 or bf16");
  }
  std::vector<int32_t> ranks;
  int64_t total = 0;
  if (m.kind == Kind::LowRank || m.kind == Kind::Adaptive) {
    const Part* r = find_part(cs, "state.wkv.rank");
    if (!r) throw Error(origin + ": tensor 'state.wkv.rank' is missing");
    const std::vector<int64_t> want = {cs.n_layer, cs.n_head};
    if (r->dtype != "i32" || r->shape != want || r->data.size() != size_t(numel(want)) * 4) {
      throw Error(origin + ": tensor 'state.wkv.rank' must be i32 " + shape_text(want));
    }
    ranks.resize(size_t(numel(want)));
    std::memcpy(ranks.data(), r->data.data(), r->data.size());
    for (size_t i = 0; i < ranks.size(); ++i) {
      if (ranks[i] < 0 || ranks[i] > cs.head_size) {
        throw Error(origin + ": tensor 'state.wkv.rank' element " + std::to_string(i) + " is " +
                    std::to_string(ranks[i]) + "; a rank is 0.." + std::to_string(cs.head_size));
      }
      total += ranks[i];
    }
  }
  if (m.kind == Kind::Learned) {
    const Part* code = find_part(cs, "state.wkv.code");
    if (!code || code->shape.size() != 4) {
      throw Error(origin + ": a " + cs.method + " state needs 'state.wkv.code' [L, H, r, N]");
    }
    total = code->shape[2];
    if (total < 1 || total > cs.head_size) {
      throw Error(origin + ": tensor 'state.wkv.code' has " + std::to_string(total) +
                  " rows per head; a learned code has 1.." + std::to_string(cs.head_size));
    }
  }
  const auto want = wanted_parts(cs, m, total, shift_dtype);
  for (const Want& w : want) {
    const Part* p = find_part(cs, w.name);
    if (!p) throw Error(origin + ": tensor '" + w.name + "' is missing (" + cs.method + ")");
    if (p->dtype != w.dtype) {
      throw Error(origin + ": tensor '" + w.name + "' must be " + w.dtype + " for " + cs.method +
                  " (is " + p->dtype + ")");
    }
    if (p->shape != w.shape) {
      throw Error(origin + ": tensor '" + w.name + "' has shape " + shape_text(p->shape) +
                  " but this state (" + cs.method + ") needs " + shape_text(w.shape));
    }
    if (p->data.size() != size_t(numel(p->shape)) * elem_size(p->dtype)) {
      throw Error(origin + ": tensor '" + w.name + "' has " + std::to_string(p->data.size()) +
                  " bytes of data for shape " + shape_text(p->shape));
    }
  }
  if (cs.parts.size() != want.size()) {
    for (const Part& p : cs.parts) {
      bool known = false;
      for (const Want& w : want) known = known || w.name == p.name;
      if (!known)
        throw Error(origin + ": unexpected tensor '" + p.name + "' in a " + cs.method + " state");
    }
    throw Error(origin + ": a tensor appears twice");
  }
  return ranks;
}

std::vector<float> decode_scales(const Part& p, const std::string& origin) {
  auto s = decode_floats(p, origin);
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] < 0)
      throw Error(origin + ": tensor '" + p.name + "' element " + std::to_string(i) +
                  " is a negative scale");
  }
  return s;
}

// Factor rows (each a vector of N values) of a low-rank part, scales applied.
std::vector<float> decode_factor(const CompressedState& cs, const std::string& name,
                                 const std::string& origin) {
  const Part& p = *find_part(cs, name);
  if (p.dtype != "i8") return decode_floats(p, origin);
  const auto scale = decode_scales(*find_part(cs, name + "_scale"), origin);
  const int64_t n = cs.head_size;
  std::vector<float> out(p.data.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = float(int8_t(p.data[i])) * scale[i / size_t(n)];
  return out;
}

// The bytes of a low-rank encoding with these ranks (the parts' sizes, computed from counts).
size_t lowrank_bytes(const std::vector<int32_t>& ranks, int64_t n, const std::string& factor,
                     size_t shift_bytes) {
  const size_t total = size_t(std::accumulate(ranks.begin(), ranks.end(), int64_t(0)));
  size_t b = shift_bytes + 4 * ranks.size() + 2 * total * size_t(n) * elem_size(factor);
  if (factor == "i8") b += 2 * total * 4;
  return b;
}

// Smallest rank keeping `energy` of the squared singular values (0 for a zero matrix).
int32_t rank_for_energy(const std::vector<double>& sigma, double energy) {
  double all = 0;
  for (double s : sigma) all += s * s;
  if (all <= 0) return 0;
  double kept = 0;
  for (size_t r = 0; r < sigma.size(); ++r) {
    if (kept >= energy * all) return int32_t(r);
    kept += sigma[r] * sigma[r];
  }
  return int32_t(sigma.size());
}

}  // namespace

const std::vector<std::string>& state_compression_methods() {
  static const std::vector<std::string> all = {
      "f32",          "bf16",         "fp16",     "int8",          "lowrank",
      "lowrank-bf16", "lowrank-int8", "adaptive", "adaptive-bf16", "adaptive-int8"};
  return all;
}

const std::vector<std::string>& learned_compression_methods() {
  static const std::vector<std::string> all = {"learned", "learned-bf16", "learned-int8"};
  return all;
}

void check_compress_options(const CompressOptions& o) {
  const Method m = parse_method(o.method);
  const bool has_ratio = o.ratio != -1;
  if (has_ratio && !(o.ratio > 0 && o.ratio <= 1)) {
    throw Error("state compression: ratio must be in (0, 1] (got " + std::to_string(o.ratio) + ")");
  }
  if (m.kind == Kind::LowRank) {
    if ((o.rank != -1) == has_ratio) {
      throw Error("state compression " + o.method + ": give exactly one of rank or ratio");
    }
    if (o.rank != -1 && o.rank < 0) {
      throw Error("state compression " + o.method + ": rank must be >= 0");
    }
  } else if (o.rank != -1) {
    throw Error("state compression " + o.method + ": rank applies only to lowrank methods");
  }
  if (m.kind == Kind::Adaptive) {
    if ((o.energy != -1) == has_ratio) {
      throw Error("state compression " + o.method + ": give exactly one of energy or ratio");
    }
    if (o.energy != -1 && !(o.energy > 0 && o.energy <= 1)) {
      throw Error("state compression " + o.method + ": energy must be in (0, 1] (got " +
                  std::to_string(o.energy) + ")");
    }
  } else if (o.energy != -1) {
    throw Error("state compression " + o.method + ": energy applies only to adaptive methods");
  }
  if (m.kind == Kind::Learned && !o.projection) {
    throw Error("state compression " + o.method +
                ": needs a learned projection (`rwkv7 state learn`, then --projection FILE)");
  }
  if (m.kind != Kind::Learned && o.projection) {
    throw Error("state compression " + o.method + ": a projection applies only to learned methods");
  }
  if (has_ratio && m.kind != Kind::LowRank && m.kind != Kind::Adaptive) {
    throw Error("state compression " + o.method +
                ": has a fixed ratio; --ratio applies only to "
                "lowrank and adaptive methods");
  }
}

size_t CompressedState::bytes() const {
  size_t b = 0;
  for (const Part& p : parts)
    if (p.name.rfind("shared.", 0) != 0) b += p.data.size();
  return b;
}

size_t CompressedState::shared_bytes() const {
  size_t b = 0;
  for (const Part& p : parts)
    if (p.name.rfind("shared.", 0) == 0) b += p.data.size();
  return b;
}

size_t CompressedState::raw_bytes() const {
  return size_t((2 * n_layer * n_embd + n_layer * n_head * head_size * head_size) * 4);
}

CompressedState compress_state(const State& s, const CompressOptions& o) {
  check_compress_options(o);
  const Method m = parse_method(o.method);
  const int64_t L = s.n_layer, C = s.n_embd, H = s.n_head, N = s.head_size;
  if (L <= 0 || H <= 0 || N <= 0 || H * N != C || s.att_shift.size() != size_t(L * C) ||
      s.ffn_shift.size() != size_t(L * C) || s.wkv.size() != size_t(L * H * N * N)) {
    throw Error("compress_state: the state's arrays do not match its sizes");
  }
  // f32 stores what it is given (a reader refuses non-finite values, naming the element);
  // the lossy forms would hide or spread them.
  if (m.kind != Kind::F32) {
    for (const auto* v : {&s.att_shift, &s.ffn_shift, &s.wkv}) {
      for (float x : *v)
        if (!std::isfinite(x)) throw Error("compress_state: the state holds NaN or infinity");
    }
  }
  CompressedState cs;
  cs.n_layer = L, cs.n_embd = C, cs.n_head = H, cs.head_size = N;
  cs.tokens_consumed = s.tokens_consumed;
  cs.model_fingerprint = s.model_fingerprint;
  cs.method = o.method;
  const std::string shift_dt = m.kind == Kind::F32 || o.exact_shift ? "f32"
                               : m.kind == Kind::F16                ? "f16"
                                                                    : "bf16";
  cs.parts.push_back(encode("state.att_shift", shift_dt, {L, C}, s.att_shift.data()));
  cs.parts.push_back(encode("state.ffn_shift", shift_dt, {L, C}, s.ffn_shift.data()));
  const size_t shift_bytes = cs.bytes();
  switch (m.kind) {
    case Kind::F32:
      cs.parts.push_back(encode("state.wkv", "f32", {L, H, N, N}, s.wkv.data()));
      break;
    case Kind::BF16:
      cs.parts.push_back(encode("state.wkv", "bf16", {L, H, N, N}, s.wkv.data()));
      break;
    case Kind::F16:
      cs.parts.push_back(encode("state.wkv", "f16", {L, H, N, N}, s.wkv.data()));
      break;
    case Kind::Int8: {
      std::vector<int8_t> q(s.wkv.size());
      std::vector<float> scale(size_t(L * H * N));
      quantize_rows(s.wkv.data(), L * H * N, N, q.data(), scale.data());
      cs.parts.push_back(int8_part("state.wkv", {L, H, N, N}, q));
      cs.parts.push_back(encode("state.wkv.scale", "f32", {L, H, N}, scale.data()));
      break;
    }
    case Kind::LowRank:
    case Kind::Adaptive: {
      // One SVD per head; then the ranks (from rank, energy, or the target ratio).
      std::vector<Svd> svds;
      svds.reserve(size_t(L * H));
      std::vector<double> a(size_t(N * N));
      for (int64_t lh = 0; lh < L * H; ++lh) {
        const float* S = &s.wkv[size_t(lh * N * N)];
        for (int64_t i = 0; i < N * N; ++i) a[size_t(i)] = S[i];
        svds.push_back(svd_jacobi(a.data(), N, N));
      }
      const size_t raw = cs.raw_bytes();
      auto ranks_at = [&](double energy) {
        std::vector<int32_t> r(svds.size());
        for (size_t i = 0; i < svds.size(); ++i) r[i] = rank_for_energy(svds[i].sigma, energy);
        return r;
      };
      std::vector<int32_t> ranks;
      if (m.kind == Kind::LowRank) {
        int64_t r = o.rank;
        if (r == -1) {  // the largest rank whose bytes fit the ratio (0 if none does)
          r = 0;
          for (int64_t k = N; k >= 1; --k) {
            std::vector<int32_t> rk(svds.size(), int32_t(k));
            if (double(lowrank_bytes(rk, N, m.factor, shift_bytes)) <= o.ratio * double(raw)) {
              r = k;
              break;
            }
          }
        }
        ranks.assign(svds.size(), int32_t(std::min(r, N)));
        cs.detail = "rank " + std::to_string(ranks.empty() ? 0 : ranks[0]);
      } else {
        double e = o.energy;
        if (e == -1) {  // the largest energy whose bytes fit the ratio (bisection)
          auto fits = [&](double x) {
            return double(lowrank_bytes(ranks_at(x), N, m.factor, shift_bytes)) <=
                   o.ratio * double(raw);
          };
          double lo = 0, hi = 1;
          if (fits(1)) {
            lo = 1;
          } else {
            for (int it = 0; it < 60; ++it) {
              const double mid = 0.5 * (lo + hi);
              (fits(mid) ? lo : hi) = mid;
            }
          }
          e = lo;
        }
        ranks = ranks_at(e);
        const auto [mn, mx] = std::minmax_element(ranks.begin(), ranks.end());
        const double mean =
            double(std::accumulate(ranks.begin(), ranks.end(), int64_t(0))) / double(ranks.size());
        char buf[128];
        std::snprintf(buf, sizeof buf, "energy %.6g, ranks %d..%d (mean %.2f)", e, *mn, *mx, mean);
        cs.detail = buf;
      }
      const int64_t total = std::accumulate(ranks.begin(), ranks.end(), int64_t(0));
      // Factors L = U·sqrt(sigma), R = V·sqrt(sigma): S ≈ L·Rᵀ, stored one component per row.
      std::vector<float> u(size_t(total * N)), v(size_t(total * N));
      int64_t row = 0;
      for (size_t h = 0; h < svds.size(); ++h) {
        const Svd& d = svds[h];
        for (int32_t c = 0; c < ranks[h]; ++c, ++row) {
          const double w = std::sqrt(d.sigma[size_t(c)]);
          for (int64_t i = 0; i < N; ++i) {
            u[size_t(row * N + i)] = float(d.u[size_t(i * d.k + c)] * w);
            v[size_t(row * N + i)] = float(d.v[size_t(i * d.k + c)] * w);
          }
        }
      }
      Part rp{"state.wkv.rank", "i32", {L, H}, std::vector<uint8_t>(ranks.size() * 4)};
      if (!ranks.empty()) std::memcpy(rp.data.data(), ranks.data(), rp.data.size());
      cs.parts.push_back(std::move(rp));
      if (m.factor == "i8") {
        std::vector<int8_t> qu(u.size()), qv(v.size());
        std::vector<float> su(static_cast<size_t>(total)), sv(static_cast<size_t>(total));
        quantize_rows(u.data(), total, N, qu.data(), su.data());
        quantize_rows(v.data(), total, N, qv.data(), sv.data());
        cs.parts.push_back(int8_part("state.wkv.u", {total, N}, qu));
        cs.parts.push_back(int8_part("state.wkv.v", {total, N}, qv));
        cs.parts.push_back(encode("state.wkv.u_scale", "f32", {total}, su.data()));
        cs.parts.push_back(encode("state.wkv.v_scale", "f32", {total}, sv.data()));
      } else {
        cs.parts.push_back(encode("state.wkv.u", m.factor, {total, N}, u.data()));
        cs.parts.push_back(encode("state.wkv.v", m.factor, {total, N}, v.data()));
      }
      break;
    }
    case Kind::Learned: {
      const StateProjection& p = *o.projection;
      check_state_projection(p, "compress_state");
      if (p.n_layer != L || p.n_head != H || p.head_size != N) {
        throw Error("compress_state: the projection is for L=" + std::to_string(p.n_layer) +
                    " H=" + std::to_string(p.n_head) + " N=" + std::to_string(p.head_size) +
                    ", the state is L=" + std::to_string(L) + " H=" + std::to_string(H) +
                    " N=" + std::to_string(N));
      }
      if (!p.model_fingerprint.empty() && !s.model_fingerprint.empty() &&
          p.model_fingerprint != s.model_fingerprint) {
        throw Error("compress_state: the projection was learned for another model (fingerprint " +
                    p.model_fingerprint + ", the state's " + s.model_fingerprint + ")");
      }
      const int64_t r = p.rank;
      std::vector<float> code(size_t(L * H * r * N));
      learned::encode(p, s.wkv.data(), code.data());
      if (m.factor == "i8") {
        std::vector<int8_t> q(code.size());
        std::vector<float> scale(size_t(L * H * r));
        quantize_rows(code.data(), L * H * r, N, q.data(), scale.data());
        cs.parts.push_back(int8_part("state.wkv.code", {L, H, r, N}, q));
        cs.parts.push_back(encode("state.wkv.code_scale", "f32", {L, H, r}, scale.data()));
      } else {
        cs.parts.push_back(encode("state.wkv.code", m.factor, {L, H, r, N}, code.data()));
      }
      cs.parts.push_back(encode("shared.decoder", "f32", {L, H, N, r}, p.decoder.data()));
      const int32_t side = p.key_side ? 1 : 0;
      Part sp{"shared.key_side", "i32", {1}, std::vector<uint8_t>(4)};
      std::memcpy(sp.data.data(), &side, 4);
      cs.parts.push_back(std::move(sp));
      cs.detail = "rank " + std::to_string(r) + ", " + (p.key_side ? "key" : "value") + " side";
      break;
    }
  }
  return cs;
}

namespace {

// A learned state's WKV: the code (scales applied) times the decoder it carries.
std::vector<float> decode_learned(const CompressedState& cs, const std::string& origin) {
  const int64_t L = cs.n_layer, H = cs.n_head, N = cs.head_size;
  const int64_t r = find_part(cs, "state.wkv.code")->shape[2];
  const auto code = decode_factor(cs, "state.wkv.code", origin);
  const auto decoder = decode_floats(*find_part(cs, "shared.decoder"), origin);
  int32_t side = 0;
  std::memcpy(&side, find_part(cs, "shared.key_side")->data.data(), 4);
  if (side != 0 && side != 1) {
    throw Error(origin + ": tensor 'shared.key_side' is " + std::to_string(side) +
                "; 0 (value side) or 1 (key side)");
  }
  std::vector<float> wkv(size_t(L * H * N * N), 0.0f);
  learned::decode_with(decoder.data(), side == 1, L * H, N, r, code.data(), wkv.data());
  return wkv;
}

State decompress_from(const CompressedState& cs, const std::string& origin) {
  Method m;
  try {
    m = parse_method(cs.method);
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what());
  }
  const auto ranks = check_structure(cs, m, origin);
  const int64_t L = cs.n_layer, C = cs.n_embd, H = cs.n_head, N = cs.head_size;
  State s;
  s.n_layer = L, s.n_embd = C, s.n_head = H, s.head_size = N;
  s.tokens_consumed = cs.tokens_consumed;
  s.model_fingerprint = cs.model_fingerprint;
  s.att_shift = decode_floats(*find_part(cs, "state.att_shift"), origin);
  s.ffn_shift = decode_floats(*find_part(cs, "state.ffn_shift"), origin);
  const Part& wkv = m.kind == Kind::LowRank || m.kind == Kind::Adaptive
                        ? *find_part(cs, "state.wkv.u")
                    : m.kind == Kind::Learned ? *find_part(cs, "state.wkv.code")
                                              : *find_part(cs, "state.wkv");
  if (m.kind == Kind::Learned) {
    s.wkv = decode_learned(cs, origin);
  } else if (m.kind == Kind::F32 || m.kind == Kind::BF16 || m.kind == Kind::F16) {
    s.wkv = decode_floats(wkv, origin);
  } else if (m.kind == Kind::Int8) {
    const auto scale = decode_scales(*find_part(cs, "state.wkv.scale"), origin);
    s.wkv.resize(wkv.data.size());
    for (size_t i = 0; i < s.wkv.size(); ++i)
      s.wkv[i] = float(int8_t(wkv.data[i])) * scale[i / size_t(N)];
  } else {
    const auto u = decode_factor(cs, "state.wkv.u", origin);
    const auto v = decode_factor(cs, "state.wkv.v", origin);
    s.wkv.assign(size_t(L * H * N * N), 0.0f);
    int64_t row = 0;
    for (int64_t lh = 0; lh < L * H; ++lh) {
      float* S = &s.wkv[size_t(lh * N * N)];
      const int64_t r = ranks[size_t(lh)];
      for (int64_t i = 0; i < N; ++i) {
        for (int64_t j = 0; j < N; ++j) {
          double acc = 0;
          for (int64_t c = 0; c < r; ++c)
            acc += double(u[size_t((row + c) * N + i)]) * double(v[size_t((row + c) * N + j)]);
          S[i * N + j] = float(acc);
        }
      }
      row += r;
    }
  }
  for (size_t i = 0; i < s.wkv.size(); ++i) {
    if (!std::isfinite(s.wkv[i])) {
      throw Error(origin + ": tensor 'state.wkv' element " + std::to_string(i) +
                  " decompresses to a non-finite value; not a usable state");
    }
  }
  return s;
}

Part part_from_view(const std::string& name, const TensorView& v, const std::string& origin) {
  std::string dt;
  switch (v.dtype) {
    case DType::F32:
      dt = "f32";
      break;
    case DType::BF16:
      dt = "bf16";
      break;
    case DType::F16:
      dt = "f16";
      break;
    case DType::I8:
      dt = "i8";
      break;
    case DType::I32:
      dt = "i32";
      break;
    default:
      throw Error(origin + ": tensor '" + name + "' has dtype " + dtype_name(v.dtype) +
                  ", which no state form uses");
  }
  Part p{name, dt, v.shape, std::vector<uint8_t>(v.nbytes())};
  if (!p.data.empty()) std::memcpy(p.data.data(), v.data, p.data.size());
  return p;
}

CompressedState from_tensor_file(const TensorFile& f, const std::string& origin) {
  auto meta = [&](const std::string& key) {
    auto it = f.metadata.find(key);
    return it == f.metadata.end() ? std::string() : it->second;
  };
  const std::string version = meta("format_version");
  if (!version.empty() && version != "1" && version != "2") {
    throw Error(origin + ": state format_version " + version +
                " is not one this rwkv7 reads (1 or 2); written by a newer version?");
  }
  CompressedState cs;
  cs.method = meta("compression").empty() ? "f32" : meta("compression");
  Method m;
  try {
    m = parse_method(cs.method);
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what());
  }
  cs.model_shape = meta("model_shape");
  cs.model_fingerprint = meta("model_fingerprint");
  cs.detail = meta("compression_detail");
  for (const auto& [k, v] : f.metadata)
    if (k.rfind("note.", 0) == 0) cs.notes[k.substr(5)] = v;
  const std::string tokens = meta("tokens_consumed");
  if (!tokens.empty()) {
    try {
      size_t used = 0;
      cs.tokens_consumed = std::stoll(tokens, &used);
      if (used != tokens.size() || cs.tokens_consumed < 0) throw std::invalid_argument("");
    } catch (const std::exception&) {
      throw Error(origin + ": metadata tokens_consumed '" + tokens + "' is not a number");
    }
  }
  for (const std::string& name : f.order)
    cs.parts.push_back(part_from_view(name, f.tensors.at(name), origin));
  // Sizes from the shapes: shifts [L, C]; WKV [L, H, N, N], or ranks [L, H] and factors [R, N].
  const Part* shift = find_part(cs, "state.att_shift");
  if (!shift) throw Error(origin + ": tensor 'state.att_shift' is missing");
  if (shift->shape.size() != 2) {
    throw Error(origin + ": tensor 'state.att_shift' has shape " + shape_text(shift->shape) +
                "; a state's shifts are [L, C]");
  }
  cs.n_layer = shift->shape[0], cs.n_embd = shift->shape[1];
  if (m.kind == Kind::LowRank || m.kind == Kind::Adaptive) {
    const Part* r = find_part(cs, "state.wkv.rank");
    const Part* u = find_part(cs, "state.wkv.u");
    if (!r || !u || r->shape.size() != 2 || u->shape.size() != 2) {
      throw Error(origin + ": a " + cs.method +
                  " state needs 'state.wkv.rank' [L, H] and 'state.wkv.u' [R, N]");
    }
    cs.n_head = r->shape[1], cs.head_size = u->shape[1];
  } else if (m.kind == Kind::Learned) {
    const Part* code = find_part(cs, "state.wkv.code");
    if (!code || code->shape.size() != 4) {
      throw Error(origin + ": a " + cs.method + " state needs 'state.wkv.code' [L, H, r, N]");
    }
    cs.n_head = code->shape[1], cs.head_size = code->shape[3];
  } else {
    const Part* w = find_part(cs, "state.wkv");
    if (!w) throw Error(origin + ": tensor 'state.wkv' is missing");
    if (w->shape.size() != 4) {
      throw Error(origin + ": tensor 'state.wkv' has shape " + shape_text(w->shape) +
                  "; a state's WKV is [L, H, N, N]");
    }
    cs.n_head = w->shape[1], cs.head_size = w->shape[2];
  }
  check_structure(cs, m, origin);
  return cs;
}

DType dtype_of(const std::string& dt) {
  if (dt == "f32") return DType::F32;
  if (dt == "bf16") return DType::BF16;
  if (dt == "f16") return DType::F16;
  if (dt == "i8") return DType::I8;
  if (dt == "i32") return DType::I32;
  throw Error("state part dtype '" + dt + "' is unknown");
}

// The tensors and metadata of the serialised form (and of a state file). An f32 state keeps
// the format of version 1 exactly, so files written before compression existed and after
// are the same.
std::string to_safetensors(const CompressedState& cs, const std::string& name) {
  NamedTensors tensors;
  for (const Part& p : cs.parts) {
    tensors.push_back({p.name, TensorView{dtype_of(p.dtype), p.shape, p.data.data()}});
  }
  Metadata meta = {{"format", "rwkv7-state"},
                   {"format_version", cs.method == "f32" ? "1" : "2"},
                   {"tokens_consumed", std::to_string(cs.tokens_consumed)}};
  if (!cs.model_shape.empty()) meta["model_shape"] = cs.model_shape;
  if (!cs.model_fingerprint.empty()) meta["model_fingerprint"] = cs.model_fingerprint;
  if (cs.method != "f32") meta["compression"] = cs.method;
  if (!cs.detail.empty()) meta["compression_detail"] = cs.detail;
  for (const auto& [k, v] : cs.notes) meta["note." + k] = v;
  return safetensors_bytes(tensors, meta, name);
}

}  // namespace

std::string CompressedState::serialize() const { return to_safetensors(*this, "compressed state"); }

CompressedState CompressedState::deserialize(std::string_view bytes, const std::string& origin) {
  auto copy = std::make_shared<const std::string>(bytes);
  return from_tensor_file(read_safetensors_bytes(copy, origin), origin);
}

State decompress_state(const CompressedState& cs) {
  return decompress_from(cs, "compressed state");
}

CompressedState read_state_file(const std::string& path) {
  return from_tensor_file(read_safetensors(path), path);
}

void write_state_file(const std::string& path, const CompressedState& cs) {
  const std::string bytes = to_safetensors(cs, path);
  write_file_atomic(path,
                    [&](std::ostream& o) { o.write(bytes.data(), std::streamsize(bytes.size())); });
}

// The engine's own entry for load_state (state_io.cpp): errors name the file.
State decompress_state_file(const CompressedState& cs, const std::string& path) {
  return decompress_from(cs, path);
}

}  // namespace rwkv7
