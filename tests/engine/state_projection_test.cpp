// Learned state projections and the learned* compression methods: the principal subspace of
// states built in a known subspace, exact round trips at full rank, byte counts computed here,
// the serialised form that decompresses without the projection, the projection file, and
// hostile input.
#include "rwkv7/state_projection.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "rwkv7/error.hpp"
#include "rwkv7/state_compress.hpp"
#include "temp_dir.hpp"

namespace rwkv7 {
namespace {

constexpr int64_t L = 2, H = 2, N = 8, C = H * N;

State blank_state() {
  State s;
  s.n_layer = L, s.n_embd = C, s.n_head = H, s.head_size = N;
  s.att_shift.assign(size_t(L * C), 0.25f);
  s.ffn_shift.assign(size_t(L * C), -0.5f);
  s.wkv.assign(size_t(L * H * N * N), 0.0f);
  s.model_fingerprint = "fp";
  return s;
}

// States whose heads' rows (value side) or columns (key side) lie in a fixed random subspace
// of dimension r per head: S = U·A (value) or A·Uᵀ (key), A random per state. The subspaces
// come from `seed`, the states' coefficients from `seed` + `draw`.
std::vector<State> states_in_subspace(int64_t r, bool key_side, int count, uint32_t seed,
                                      uint32_t draw = 0) {
  std::mt19937 basis_rng(seed);
  std::normal_distribution<float> nd;
  std::vector<std::vector<float>> U(size_t(L * H), std::vector<float>(size_t(N * r)));
  for (auto& u : U)
    for (float& x : u) x = nd(basis_rng);
  std::mt19937 rng(seed + 1000 * (draw + 1));
  std::vector<State> out;
  for (int k = 0; k < count; ++k) {
    State s = blank_state();
    for (int64_t lh = 0; lh < L * H; ++lh) {
      std::vector<float> A(size_t(r * N));
      for (float& x : A) x = nd(rng);
      float* S = &s.wkv[size_t(lh * N * N)];
      for (int64_t i = 0; i < N; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double acc = 0;
          for (int64_t c = 0; c < r; ++c) {
            acc += key_side ? double(A[size_t(c * N + i)]) * U[size_t(lh)][size_t(j * r + c)]
                            : double(U[size_t(lh)][size_t(i * r + c)]) * A[size_t(c * N + j)];
          }
          S[i * N + j] = float(acc);
        }
    }
    out.push_back(s);
  }
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::abs(a[i] - b[i])));
  return m;
}

TEST(StateProjection, PrincipalSubspaceOfStatesInASubspaceKeepsThemExactly) {
  for (bool key_side : {false, true}) {
    const auto train = states_in_subspace(3, key_side, 10, 1);
    const StateProjection p = pca_state_projection(train, 3, key_side);
    EXPECT_EQ(p.rank, 3);
    EXPECT_EQ(p.key_side, key_side);
    // New states of the same subspace (not among the samples) pass unchanged...
    const auto fresh = states_in_subspace(3, key_side, 1, 1, 7);  // same subspaces, new states
    for (const State& s : fresh) {
      const State back = project_state(s, p);
      EXPECT_LT(max_abs_diff(back.wkv, s.wkv), 1e-4) << (key_side ? "key" : "value");
      EXPECT_EQ(back.att_shift, s.att_shift);
    }
    // ...and a lower rank loses part of them.
    const StateProjection p2 = pca_state_projection(train, 2, key_side);
    EXPECT_GT(max_abs_diff(project_state(fresh[0], p2).wkv, fresh[0].wkv), 1e-2);
  }
}

TEST(StateProjection, LearnedCompressionRoundTripsAndCountsOnlyTheCode) {
  const auto states = states_in_subspace(4, false, 6, 2);
  auto p = std::make_shared<const StateProjection>(pca_state_projection(states, 4, false));
  const double raw = double((2 * L * C + L * H * N * N) * 4);
  const double shifts_bf16 = double(2 * L * C * 2);
  struct Case {
    std::string method;
    double code_bytes;
    double tol;
  };
  for (const Case& c : {Case{"learned", double(L * H * 4 * N * 4), 1e-4},
                        Case{"learned-bf16", double(L * H * 4 * N * 2), 3e-2},
                        Case{"learned-int8", double(L * H * 4 * N + L * H * 4 * 4), 0.1}}) {
    CompressOptions o;
    o.method = c.method;
    o.projection = p;
    const CompressedState cs = compress_state(states[0], o);
    EXPECT_EQ(double(cs.bytes()), shifts_bf16 + c.code_bytes) << c.method;
    EXPECT_NEAR(cs.ratio(), (shifts_bf16 + c.code_bytes) / raw, 1e-12) << c.method;
    EXPECT_EQ(cs.shared_bytes(), size_t(L * H * N * 4 * 4 + 4)) << c.method;  // decoder + side
    // The serialised form decompresses without the projection (it carries the decoder).
    const CompressedState back = CompressedState::deserialize(cs.serialize(), "test");
    const State s = decompress_state(back);
    double scale = 0;
    for (float x : states[0].wkv) scale = std::max(scale, double(std::abs(x)));
    EXPECT_LT(max_abs_diff(s.wkv, states[0].wkv), c.tol * scale) << c.method;
    EXPECT_EQ(back.method, c.method);
  }
}

TEST(StateProjection, LearnedMethodsNeedAProjectionOfTheStatesShapeAndModel) {
  State s = states_in_subspace(2, false, 1, 3)[0];
  CompressOptions o;
  o.method = "learned";
  EXPECT_THROW(compress_state(s, o), Error);  // no projection
  StateProjection other = pca_state_projection(states_in_subspace(2, false, 2, 4), 2, false);
  other.n_head = 1;  // sizes of another model
  other.encoder.resize(size_t(L * 1 * 2 * N));
  other.decoder.resize(size_t(L * 1 * N * 2));
  o.projection = std::make_shared<const StateProjection>(other);
  EXPECT_THROW(compress_state(s, o), Error);
  StateProjection wrong_model = pca_state_projection(states_in_subspace(2, false, 2, 4), 2, false);
  wrong_model.model_fingerprint = "another";
  o.projection = std::make_shared<const StateProjection>(wrong_model);
  EXPECT_THROW(compress_state(s, o), Error);
  CompressOptions not_learned;
  not_learned.method = "int8";
  not_learned.projection = o.projection;
  EXPECT_THROW(compress_state(s, not_learned), Error);
}

TEST(StateProjection, FileRoundTripAndHostileFiles) {
  testing::TempDir dir;
  StateProjection p = pca_state_projection(states_in_subspace(3, true, 5, 5), 3, true);
  p.model_shape = "L2-C16";
  const std::string path = dir.file("p.safetensors");
  save_state_projection(path, p);
  const StateProjection q = load_state_projection(path);
  EXPECT_EQ(q.encoder, p.encoder);
  EXPECT_EQ(q.decoder, p.decoder);
  EXPECT_EQ(q.rank, 3);
  EXPECT_TRUE(q.key_side);
  EXPECT_EQ(q.model_fingerprint, "fp");
  EXPECT_EQ(q.model_shape, "L2-C16");

  StateProjection bad = p;
  bad.encoder[3] = std::nanf("");
  EXPECT_THROW(save_state_projection(dir.file("nan.safetensors"), bad), Error);
  bad = p;
  bad.rank = N + 1;
  EXPECT_THROW(check_state_projection(bad, "x"), Error);
  // A state file is not a projection: refused with the file's name.
  const std::string state_path = dir.file("s.state");
  write_state_file(state_path, compress_state(blank_state(), CompressOptions{}));
  try {
    load_state_projection(state_path);
    FAIL() << "a state file loaded as a projection";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(state_path), std::string::npos) << e.what();
  }
}

TEST(StateProjection, HostileLearnedStatesAreRefused) {
  const auto states = states_in_subspace(2, false, 3, 6);
  CompressOptions o;
  o.method = "learned-int8";
  o.projection = std::make_shared<const StateProjection>(pca_state_projection(states, 2, false));
  const CompressedState good = compress_state(states[0], o);
  auto refused = [](CompressedState cs, const char* what) {
    EXPECT_THROW(decompress_state(CompressedState::deserialize(cs.serialize(), "t")), Error)
        << what;
  };
  for (auto& part : {"shared.key_side", "shared.decoder", "state.wkv.code_scale"}) {
    CompressedState cs = good;
    std::erase_if(cs.parts, [&](const CompressedState::Part& x) { return x.name == part; });
    refused(cs, part);
  }
  CompressedState side = good;
  for (auto& part : side.parts) {
    if (part.name == "shared.key_side") {
      const int32_t two = 2;
      std::memcpy(part.data.data(), &two, 4);
    }
  }
  refused(side, "key side 2");
  CompressedState nan_decoder = good;
  for (auto& part : nan_decoder.parts) {
    if (part.name == "shared.decoder") {
      const float nan = std::nanf("");
      std::memcpy(part.data.data(), &nan, 4);
    }
  }
  refused(nan_decoder, "NaN in the decoder");
  CompressedState negative_scale = good;
  for (auto& part : negative_scale.parts) {
    if (part.name == "state.wkv.code_scale") {
      const float neg = -1.0f;
      std::memcpy(part.data.data(), &neg, 4);
    }
  }
  refused(negative_scale, "negative scale");
}

}  // namespace
}  // namespace rwkv7
