// Learned state projections (rwkv7/state_projection.hpp): the principal-subspace start, the
// projection of a state, the file format, and the checks a hostile file needs.
#include "rwkv7/state_projection.hpp"

#include <cmath>
#include <cstring>

#include "core/svd.hpp"
#include "engine/state_projection_internal.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {

namespace {

void check_sizes(const StateProjection& p, const std::string& origin) {
  const int64_t L = p.n_layer, H = p.n_head, N = p.head_size, r = p.rank;
  if (L <= 0 || H <= 0 || N <= 0 || N > 1024 || H > (int64_t(1) << 16) || L > (int64_t(1) << 16) ||
      r < 1 || r > N) {
    throw Error(origin + ": state projection sizes L=" + std::to_string(L) +
                " H=" + std::to_string(H) + " N=" + std::to_string(N) +
                " rank=" + std::to_string(r) + " are not usable (1 <= rank <= N <= 1024)");
  }
}

}  // namespace

void check_state_projection(const StateProjection& p, const std::string& origin) {
  check_sizes(p, origin);
  const int64_t L = p.n_layer, H = p.n_head, N = p.head_size, r = p.rank;
  const size_t want = size_t(L * H * r * N);
  for (const auto& [name, v] :
       {std::pair{"encoder", &p.encoder}, std::pair{"decoder", &p.decoder}}) {
    if (v->size() != want) {
      throw Error(origin + ": state projection " + name + " has " + std::to_string(v->size()) +
                  " values; L·H·rank·N is " + std::to_string(want));
    }
    for (size_t i = 0; i < v->size(); ++i) {
      if (!std::isfinite((*v)[i])) {
        throw Error(origin + ": state projection " + name + " element " + std::to_string(i) +
                    " is not finite");
      }
    }
  }
}

namespace learned {

void encode(const StateProjection& p, const float* wkv, float* code) {
  const int64_t N = p.head_size, r = p.rank;
  for (int64_t lh = 0; lh < p.n_layer * p.n_head; ++lh) {
    const float* S = wkv + lh * N * N;
    const float* E = p.encoder.data() + lh * r * N;
    float* Z = code + lh * r * N;
    for (int64_t c = 0; c < r; ++c) {
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;  // value side: Z[c][j] = Σ_i E[c][i]·S[i][j]; key side: S[j][i]
        for (int64_t i = 0; i < N; ++i)
          acc += double(E[c * N + i]) * double(p.key_side ? S[j * N + i] : S[i * N + j]);
        Z[c * N + j] = float(acc);
      }
    }
  }
}

void decode(const StateProjection& p, const float* code, float* wkv) {
  decode_with(p.decoder.data(), p.key_side, p.n_layer * p.n_head, p.head_size, p.rank, code, wkv);
}

void decode_with(const float* decoder, bool key_side, int64_t heads, int64_t N, int64_t r,
                 const float* code, float* wkv) {
  for (int64_t lh = 0; lh < heads; ++lh) {
    const float* D = decoder + lh * N * r;
    const float* Z = code + lh * r * N;
    float* S = wkv + lh * N * N;
    for (int64_t i = 0; i < N; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;  // (D·Z)[i][j]; key side: the transpose
        for (int64_t c = 0; c < r; ++c) acc += double(D[i * r + c]) * double(Z[c * N + j]);
        (key_side ? S[j * N + i] : S[i * N + j]) = float(acc);
      }
    }
  }
}

}  // namespace learned

StateProjection pca_state_projection(std::span<const State> samples, int64_t rank, bool key_side) {
  if (samples.empty()) throw Error("state projection: no sample states");
  const State& s0 = samples[0];
  const int64_t L = s0.n_layer, H = s0.n_head, N = s0.head_size;
  for (const State& s : samples) {
    if (s.n_layer != L || s.n_head != H || s.head_size != N ||
        s.wkv.size() != size_t(L * H * N * N)) {
      throw Error("state projection: the sample states do not all have one shape");
    }
  }
  StateProjection p;
  p.n_layer = L, p.n_head = H, p.head_size = N, p.rank = rank;
  p.key_side = key_side;
  p.model_fingerprint = s0.model_fingerprint;
  if (rank < 1 || rank > N) {
    throw Error("state projection: rank " + std::to_string(rank) + " is not in 1.." +
                std::to_string(N));
  }
  p.encoder.assign(size_t(L * H * rank * N), 0.0f);
  p.decoder.assign(size_t(L * H * N * rank), 0.0f);
  std::vector<double> m(size_t(N * N));
  for (int64_t lh = 0; lh < L * H; ++lh) {
    std::fill(m.begin(), m.end(), 0.0);
    for (const State& s : samples) {  // value side: Σ S·Sᵀ; key side: Σ Sᵀ·S
      const float* S = &s.wkv[size_t(lh * N * N)];
      for (int64_t a = 0; a < N; ++a) {
        for (int64_t b = 0; b <= a; ++b) {
          double acc = 0;
          for (int64_t k = 0; k < N; ++k) {
            acc += key_side ? double(S[k * N + a]) * double(S[k * N + b])
                            : double(S[a * N + k]) * double(S[b * N + k]);
          }
          m[size_t(a * N + b)] += acc;
        }
      }
    }
    for (int64_t a = 0; a < N; ++a)
      for (int64_t b = a + 1; b < N; ++b) m[size_t(a * N + b)] = m[size_t(b * N + a)];
    const Svd d = svd_jacobi(m.data(), N, N);  // symmetric PSD: U holds its eigenvectors
    // Columns with a zero eigenvalue are zero in the SVD: completed with unit vectors made
    // orthogonal to the others, so every code row can still learn.
    std::vector<std::vector<double>> basis;
    for (int64_t c = 0; c < rank; ++c) {
      std::vector<double> u(static_cast<size_t>(N));
      double norm = 0;
      for (int64_t i = 0; i < N; ++i) norm += d.u[size_t(i * d.k + c)] * d.u[size_t(i * d.k + c)];
      if (d.sigma[size_t(c)] > 0 && norm > 0.5) {
        for (int64_t i = 0; i < N; ++i) u[size_t(i)] = d.u[size_t(i * d.k + c)];
        basis.push_back(u);
      }
    }
    for (int64_t e = 0; int64_t(basis.size()) < rank && e < N; ++e) {
      std::vector<double> u(static_cast<size_t>(N), 0.0);
      u[size_t(e)] = 1;
      for (const auto& b : basis) {
        double dot = 0;
        for (int64_t i = 0; i < N; ++i) dot += b[size_t(i)] * u[size_t(i)];
        for (int64_t i = 0; i < N; ++i) u[size_t(i)] -= dot * b[size_t(i)];
      }
      double norm = 0;
      for (double x : u) norm += x * x;
      if (norm < 0.25) continue;
      for (double& x : u) x /= std::sqrt(norm);
      basis.push_back(u);
    }
    float* E = p.encoder.data() + lh * rank * N;
    float* D = p.decoder.data() + lh * N * rank;
    for (int64_t c = 0; c < rank; ++c) {
      for (int64_t i = 0; i < N; ++i) {
        E[c * N + i] = float(basis[size_t(c)][size_t(i)]);
        D[i * rank + c] = float(basis[size_t(c)][size_t(i)]);
      }
    }
  }
  p.detail = "principal subspace of " + std::to_string(samples.size()) + " states";
  return p;
}

State project_state(const State& state, const StateProjection& p) {
  if (state.n_layer != p.n_layer || state.n_head != p.n_head || state.head_size != p.head_size ||
      state.wkv.size() != size_t(p.n_layer * p.n_head * p.head_size * p.head_size)) {
    throw Error("project_state: the state's sizes are not the projection's (L=" +
                std::to_string(p.n_layer) + " H=" + std::to_string(p.n_head) +
                " N=" + std::to_string(p.head_size) + ")");
  }
  State out = state;
  std::vector<float> code(size_t(p.n_layer * p.n_head * p.rank * p.head_size));
  learned::encode(p, state.wkv.data(), code.data());
  learned::decode(p, code.data(), out.wkv.data());
  return out;
}

void save_state_projection(const std::string& path, const StateProjection& p) {
  check_state_projection(p, path);
  const int64_t L = p.n_layer, H = p.n_head, N = p.head_size, r = p.rank;
  NamedTensors t = {{"encoder", TensorView{DType::F32, {L, H, r, N}, p.encoder.data()}},
                    {"decoder", TensorView{DType::F32, {L, H, N, r}, p.decoder.data()}}};
  Metadata meta = {{"format", "rwkv7-state-projection"},
                   {"format_version", "1"},
                   {"side", p.key_side ? "key" : "value"}};
  if (!p.model_fingerprint.empty()) meta["model_fingerprint"] = p.model_fingerprint;
  if (!p.model_shape.empty()) meta["model_shape"] = p.model_shape;
  if (!p.detail.empty()) meta["detail"] = p.detail;
  write_safetensors(path, t, meta);
}

StateProjection load_state_projection(const std::string& path) {
  const TensorFile f = read_safetensors(path);
  auto meta = [&](const std::string& key) {
    auto it = f.metadata.find(key);
    return it == f.metadata.end() ? std::string() : it->second;
  };
  if (meta("format") != "rwkv7-state-projection") {
    throw Error(path + ": not a state projection (metadata format is '" + meta("format") +
                "', expected rwkv7-state-projection; made by `rwkv7 state learn`)");
  }
  if (meta("format_version") != "1") {
    throw Error(path + ": state projection format_version '" + meta("format_version") +
                "' is not one this rwkv7 reads (1)");
  }
  const std::string side = meta("side");
  if (side != "value" && side != "key") {
    throw Error(path + ": state projection side '" + side + "' is neither value nor key");
  }
  const TensorView& e = f.get("encoder");
  const TensorView& d = f.get("decoder");
  if (e.dtype != DType::F32 || d.dtype != DType::F32 || e.shape.size() != 4 ||
      d.shape.size() != 4) {
    throw Error(path +
                ": state projection tensors must be f32 encoder [L, H, r, N] and decoder "
                "[L, H, N, r]");
  }
  StateProjection p;
  p.n_layer = e.shape[0], p.n_head = e.shape[1], p.rank = e.shape[2], p.head_size = e.shape[3];
  const Shape want_d = {p.n_layer, p.n_head, p.head_size, p.rank};
  if (d.shape != want_d) {
    throw Error(path + ": state projection decoder shape does not match the encoder's");
  }
  p.key_side = side == "key";
  p.model_fingerprint = meta("model_fingerprint");
  p.model_shape = meta("model_shape");
  p.detail = meta("detail");
  check_sizes(p, path);  // before anything of that size is allocated
  auto copy = [](const TensorView& v) {
    std::vector<float> out(size_t(shape_numel(v.shape)));
    if (!out.empty()) std::memcpy(out.data(), v.data, out.size() * sizeof(float));
    return out;
  };
  p.encoder = copy(e);
  p.decoder = copy(d);
  check_state_projection(p, path);
  return p;
}

}  // namespace rwkv7
