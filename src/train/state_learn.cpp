// fit_state_projection (rwkv7/state_learn.hpp): sampled states, the teacher's distributions,
// and Adam over each head's encoder and decoder with the gradient of the KL through the exact
// backward pass (model/backward.hpp: soft targets, initial-state gradients, weights frozen).
#include "rwkv7/state_learn.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/thread_pool.hpp"
#include "io/tensor_io.hpp"
#include "model/backward.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/state_fidelity.hpp"
#include "train/state_learn_internal.hpp"

namespace rwkv7 {
namespace {

struct Sample {
  State state;               // after the prefix
  std::vector<int32_t> row;  // the T + 1 tokens that follow
};

void check_options(const ProjectionFitOptions& o, size_t n_tokens) {
  auto fail = [](const std::string& what) { throw Error("state learn: " + what); };
  if (o.rank < 1) fail("rank must be at least 1");
  if (o.samples < 1) fail("samples must be at least 1");
  if (o.min_prefix < 1 || o.max_prefix < o.min_prefix)
    fail("prefix lengths must satisfy 1 <= min <= max");
  if (o.continue_tokens < 1) fail("continue tokens must be at least 1");
  if (o.steps < 0) fail("steps must be >= 0");
  if (o.batch < 1) fail("batch must be at least 1");
  if (!(o.lr > 0) || !std::isfinite(o.lr)) fail("learning rate must be positive");
  const size_t need = size_t(o.max_prefix + o.continue_tokens + 1);
  if (n_tokens < need) {
    fail("the text has " + std::to_string(n_tokens) + " tokens; sampling needs at least " +
         std::to_string(need) + " (max prefix + continue tokens + 1)");
  }
}

// Softmax of `logits` [T, V] into `probs` (appended); returns the mean entropy per position.
double append_softmax(const std::vector<float>& logits, int64_t V, std::vector<float>& probs) {
  const int64_t T = int64_t(logits.size()) / V;
  double entropy = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float* l = logits.data() + t * V;
    const double mx = *std::max_element(l, l + V);
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(double(l[v]) - mx);
    const double lse = mx + std::log(sum);
    for (int64_t v = 0; v < V; ++v) {
      const double lp = double(l[v]) - lse;
      const double p = std::exp(lp);
      probs.push_back(float(p));
      if (p > 0) entropy -= p * lp;
    }
  }
  return entropy / double(T);
}

// Adam over one flat vector.
struct Adam {
  std::vector<double> m, v;
  int64_t t = 0;
  void step(std::vector<float>& x, const std::vector<double>& g, double lr) {
    if (m.empty()) m.assign(x.size(), 0.0), v.assign(x.size(), 0.0);
    ++t;
    const double b1 = 0.9, b2 = 0.999, eps = 1e-12;
    const double c1 = 1 - std::pow(b1, double(t)), c2 = 1 - std::pow(b2, double(t));
    for (size_t i = 0; i < x.size(); ++i) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      x[i] -= float(lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + eps));
    }
  }
};

}  // namespace

namespace train {

void add_projection_grads(const StateProjection& p, const std::vector<float>& S_all,
                          const std::vector<float>& dS_all, std::vector<double>& gE,
                          std::vector<double>& gD) {
  const int64_t N = p.head_size, r = p.rank;
  std::vector<double> X(size_t(N * N)), G(size_t(N * N)), Z(size_t(r * N)), dZ(size_t(r * N));
  for (int64_t lh = 0; lh < p.n_layer * p.n_head; ++lh) {
    const float* S = &S_all[size_t(lh * N * N)];
    const float* dS = &dS_all[size_t(lh * N * N)];
    for (int64_t i = 0; i < N; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        X[size_t(i * N + j)] = p.key_side ? S[j * N + i] : S[i * N + j];
        G[size_t(i * N + j)] = p.key_side ? dS[j * N + i] : dS[i * N + j];
      }
    }
    const float* E = &p.encoder[size_t(lh * r * N)];
    const float* D = &p.decoder[size_t(lh * N * r)];
    for (int64_t c = 0; c < r; ++c) {
      for (int64_t j = 0; j < N; ++j) {
        double z = 0, dz = 0;
        for (int64_t i = 0; i < N; ++i) {
          z += double(E[c * N + i]) * X[size_t(i * N + j)];
          dz += double(D[i * r + c]) * G[size_t(i * N + j)];
        }
        Z[size_t(c * N + j)] = z;
        dZ[size_t(c * N + j)] = dz;
      }
    }
    double* gd = &gD[size_t(lh * N * r)];
    double* ge = &gE[size_t(lh * r * N)];
    for (int64_t i = 0; i < N; ++i) {  // dD = G·Zᵀ
      for (int64_t c = 0; c < r; ++c) {
        double acc = 0;
        for (int64_t j = 0; j < N; ++j) acc += G[size_t(i * N + j)] * Z[size_t(c * N + j)];
        gd[i * r + c] += acc;
      }
    }
    for (int64_t c = 0; c < r; ++c) {  // dE = dZ·Xᵀ
      for (int64_t i = 0; i < N; ++i) {
        double acc = 0;
        for (int64_t j = 0; j < N; ++j) acc += dZ[size_t(c * N + j)] * X[size_t(i * N + j)];
        ge[c * N + i] += acc;
      }
    }
  }
}

}  // namespace train

StateProjection fit_state_projection(const std::string& model_path, std::span<const int32_t> tokens,
                                     const ProjectionFitOptions& o, ProjectionFitReport* report,
                                     const std::function<void(int64_t, int64_t)>& progress) {
  check_options(o, tokens.size());
  LoadOptions lo;
  lo.threads = o.threads;
  const auto model = Model::load(model_path, lo);
  const ModelConfig& c = model->config();
  if (o.rank > c.head_size) {
    throw Error("state learn: rank " + std::to_string(o.rank) + " exceeds the head size " +
                std::to_string(c.head_size));
  }
  const int64_t V = c.vocab_size, T = o.continue_tokens;
  const int64_t total_work = o.samples + o.steps;
  std::mt19937_64 rng(o.seed);

  // The training set: states after random stretches of the text, and what follows each.
  std::vector<Sample> samples;
  samples.reserve(size_t(o.samples));
  for (int64_t i = 0; i < o.samples; ++i) {
    const int64_t M = std::uniform_int_distribution<int64_t>(o.min_prefix, o.max_prefix)(rng);
    const int64_t last = int64_t(tokens.size()) - M - T - 1;
    const int64_t a = std::uniform_int_distribution<int64_t>(0, last)(rng);
    Sample s;
    s.state = model->new_state();
    model->forward(tokens.subspan(size_t(a), size_t(M)), s.state, Logits::None);
    s.row.assign(tokens.begin() + a + M, tokens.begin() + a + M + T + 1);
    samples.push_back(std::move(s));
    if (progress) progress(i + 1, total_work);
  }
  std::vector<State> states;
  states.reserve(samples.size());
  for (const Sample& s : samples) states.push_back(s.state);
  StateProjection p = pca_state_projection(states, o.rank, o.key_side);
  p.model_fingerprint = model->fingerprint();
  p.model_shape = c.shape_string();

  auto teacher_logits = [&](const Sample& s) {
    State st = s.state;
    return model->forward(std::span<const int32_t>(s.row.data(), size_t(T)), st, Logits::All);
  };
  auto kl_over_samples = [&] {
    double sum = 0;
    for (const Sample& s : samples) {
      State approx = project_state(s.state, p);
      const auto q =
          model->forward(std::span<const int32_t>(s.row.data(), size_t(T)), approx, Logits::All);
      const std::span<const int32_t> next(s.row.data() + 1, size_t(T));
      sum += score_fidelity(teacher_logits(s), q, V, next).kl;
    }
    return sum / double(samples.size());
  };
  ProjectionFitReport rep;
  rep.kl_start = kl_over_samples();

  if (o.steps > 0) {
    const train::TrainParams params = train::params_from_file(read_tensor_file(model_path));
    ThreadPool pool(o.threads);
    auto backend = make_cpu_backend(&pool);
    const std::function<bool(std::string_view)> frozen = [](std::string_view) { return true; };
    train::TrainWorkspace ws;
    train::GradResult res;
    Adam adam_e, adam_d;
    std::vector<size_t> order(samples.size());
    std::iota(order.begin(), order.end(), size_t(0));
    size_t next = order.size();
    const int64_t B = std::min<int64_t>(o.batch, int64_t(samples.size()));
    std::vector<std::vector<int32_t>> rows(static_cast<size_t>(B));
    std::vector<State> starts(static_cast<size_t>(B)), d_starts;
    std::vector<size_t> picked(static_cast<size_t>(B));
    std::vector<float> probs;
    std::vector<double> gE(p.encoder.size()), gD(p.decoder.size());
    for (int64_t step = 0; step < o.steps; ++step) {
      probs.clear();
      double entropy = 0;
      for (int64_t b = 0; b < B; ++b) {
        if (next == order.size()) {
          std::shuffle(order.begin(), order.end(), rng);
          next = 0;
        }
        picked[size_t(b)] = order[next++];
        const Sample& s = samples[picked[size_t(b)]];
        rows[size_t(b)] = s.row;
        starts[size_t(b)] = project_state(s.state, p);
        entropy += append_softmax(teacher_logits(s), V, probs);
      }
      train::GradOptions go;
      go.frozen = &frozen;
      go.initial_states = &starts;
      go.initial_state_grads = &d_starts;
      go.soft_targets = &probs;
      train::loss_and_gradients(params, rows, *backend, &pool, go, ws, res);
      rep.step_kl.push_back(res.loss - entropy / double(B));
      std::fill(gE.begin(), gE.end(), 0.0);
      std::fill(gD.begin(), gD.end(), 0.0);
      for (int64_t b = 0; b < B; ++b) {
        train::add_projection_grads(p, samples[picked[size_t(b)]].state.wkv,
                                    d_starts[size_t(b)].wkv, gE, gD);
      }
      adam_e.step(p.encoder, gE, o.lr);
      adam_d.step(p.decoder, gD, o.lr);
      if (progress) progress(o.samples + step + 1, total_work);
    }
    check_state_projection(p, "state learn");
    rep.kl_end = kl_over_samples();
  } else {
    rep.kl_end = rep.kl_start;
  }
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "principal subspace of %lld states (prefixes %lld..%lld tokens), then %lld Adam "
                "steps of %lld states x %lld tokens, lr %g: KL %.4g -> %.4g nats on the samples",
                (long long)o.samples, (long long)o.min_prefix, (long long)o.max_prefix,
                (long long)o.steps, (long long)o.batch, (long long)T, o.lr, rep.kl_start,
                rep.kl_end);
  p.detail = buf;
  if (report) *report = std::move(rep);
  return p;
}

}  // namespace rwkv7
