// Streaming: the recurrent form of the forecaster over one channel of any length, in memory
// bounded by the model (the RWKV state, the last L points, the last N patch outputs).
#include <chrono>
#include <deque>

#include "core/thread_pool.hpp"
#include "model/forward.hpp"
#include "model/train_internal.hpp"
#include "rwkv7/error.hpp"
#include "train/ts_internal.hpp"

namespace rwkv7::ts {

struct Streamer::Impl {
  const Forecaster::Impl& m;
  int64_t L, H, P, S, N, C, every, chunk;
  ThreadPool pool;
  std::unique_ptr<Backend> be;
  ModelWeights weights;
  ForwardScratch scratch;
  State state;
  std::vector<float> ring;  // [L] the last L points, ring[t % L] = point t
  std::vector<float> hist;  // [N, C] the last N patch outputs, row p % N = patch p
  std::vector<float> emb;   // [pending, C] embedded patches waiting for the blocks
  std::vector<RevinStats> pending_stats;
  std::vector<float> pending_base;     // [pending, H] each patch's base forecast (normalised)
  std::vector<int64_t> pending_point;  // the point count at each pending patch
  std::vector<float> xn, patch, hidden, head_in, out, fc;
  int64_t points = 0, patches = 0, forecasts = 0, candidates = 0;
  std::vector<float> last;  // [H] the latest forecast
  RevinStats last_stats;    // of the latest patch through the blocks, its point count and base
  std::vector<float> last_base;
  int64_t last_point = 0;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();

  Impl(const Forecaster::Impl& model, int threads, int64_t forecast_every, int64_t chunk_)
      : m(model),
        L(model.net.opt.lookback),
        H(model.net.opt.horizon),
        P(model.net.opt.patch),
        S(model.net.opt.stride),
        N(patch_count(model.net.opt)),
        C(model.net.opt.n_embd),
        every(forecast_every),
        chunk(chunk_),
        pool(threads),
        be(make_cpu_backend(&pool)),
        weights(train::detail::weights_of(model.net.blocks)) {
    if (every < 0 || chunk < 1)
      throw Error("ts stream: forecast_every must be >= 0 and chunk >= 1");
    state = train::detail::zero_state(weights.config);
    ring.assign(size_t(L), 0.0f);
    hist.assign(size_t(N * C), 0.0f);
    xn.resize(size_t(L));
    patch.resize(size_t(P));
  }

  // The L points ending at the current point, oldest first, into xn.
  void window(std::vector<float>& w) const {
    w.resize(size_t(L));
    for (int64_t i = 0; i < L; ++i) w[size_t(i)] = ring[size_t((points - L + i) % L)];
  }

  // Runs the pending patches through the blocks and reports the forecasts due.
  void flush(const std::function<void(int64_t, std::span<const float>)>& on_forecast) {
    const int64_t k = int64_t(pending_stats.size());
    if (k == 0) return;
    run_blocks_embedded(weights, *be, scratch, state, emb, hidden);
    // Forecast rows: the head over the N outputs ending at each due patch.
    std::vector<int64_t> due;
    for (int64_t i = 0; i < k; ++i) {
      const int64_t p = patches - k + i;  // this patch's index
      std::copy_n(hidden.begin() + i * C, C, hist.begin() + (p % N) * C);
      last_stats = pending_stats[size_t(i)];
      last_point = pending_point[size_t(i)];
      last_base.assign(pending_base.begin() + i * H, pending_base.begin() + (i + 1) * H);
      if (p < N - 1) continue;
      if (every > 0 && candidates++ % every == 0) {
        // Copied now: a later patch of this chunk overwrites its row of hist.
        head_row(p, int64_t(due.size()));
        due.push_back(i);
      }
    }
    std::vector<RevinStats> stats;
    std::vector<int64_t> at;
    std::vector<float> base;
    for (int64_t i : due) {
      stats.push_back(pending_stats[size_t(i)]);
      at.push_back(pending_point[size_t(i)]);
      base.insert(base.end(), pending_base.begin() + i * H, pending_base.begin() + (i + 1) * H);
    }
    run_head(stats, at, base, on_forecast);
    emb.clear();
    pending_base.clear();
    pending_stats.clear();
    pending_point.clear();
  }

  // Row `slot` of head_in: the N outputs ending at patch p, oldest first.
  void head_row(int64_t p, int64_t slot) {
    head_in.resize(size_t((slot + 1) * N * C));
    float* row = head_in.data() + slot * N * C;
    for (int64_t j = 0; j < N; ++j)
      std::copy_n(hist.begin() + ((p - N + 1 + j) % N) * C, C, row + j * C);
  }

  // The head over the first stats.size() rows of head_in, denormalised with each one's stats.
  void run_head(const std::vector<RevinStats>& stats, const std::vector<int64_t>& at,
                const std::vector<float>& base,
                const std::function<void(int64_t, std::span<const float>)>& on_forecast) {
    if (stats.empty()) return;
    out.resize(stats.size() * size_t(H));
    linear_forward(*be, head_in.data(), m.net.io.at("ts.head.weight").data.data(),
                   m.net.io.at("ts.head.bias").data.data(), int64_t(stats.size()), N * C, H,
                   out.data());
    for (size_t i = 0; i < out.size(); ++i) out[i] += base[i];
    fc.resize(size_t(H));
    for (size_t d = 0; d < stats.size(); ++d) {
      revin_denormalise(std::span(out).subspan(d * size_t(H), size_t(H)), stats[d], fc);
      ++forecasts;
      last = fc;
      if (on_forecast) on_forecast(at[d], fc);
    }
  }

  void push(std::span<const float> values,
            const std::function<void(int64_t, std::span<const float>)>& on_forecast) {
    const float* w_e = m.net.io.at("ts.embed.weight").data.data();
    const float* b_e = m.net.io.at("ts.embed.bias").data.data();
    for (float v : values) {
      ring[size_t(points % L)] = v;
      ++points;
      if (points < L || (points - L) % S != 0) continue;
      // A patch ends here: the last P points, normalised by the trailing window's stats.
      window(xn);
      const RevinStats st = m.net.opt.revin ? revin_stats(xn) : RevinStats{};
      for (int64_t j = 0; j < P; ++j) patch[size_t(j)] = (xn[size_t(L - P + j)] - st.mean) / st.std;
      const size_t o = emb.size();
      emb.resize(o + size_t(C));
      for (int64_t c = 0; c < C; ++c) {
        double s = b_e[c];
        for (int64_t j = 0; j < P; ++j) s += double(w_e[c * P + j]) * patch[size_t(j)];
        emb[o + size_t(c)] = float(s);
      }
      pending_stats.push_back(st);
      revin_normalise(xn, st, xn);
      pending_base.resize(pending_base.size() + size_t(H));
      base_forecast(m.net.opt, xn, std::span(pending_base).last(size_t(H)));
      pending_point.push_back(points);
      ++patches;
      if (int64_t(pending_stats.size()) == chunk) flush(on_forecast);
    }
  }
};

Streamer::Streamer(const Forecaster& model, int threads, int64_t forecast_every, int64_t chunk)
    : impl_(std::make_unique<Impl>(ImplAccess::of(model), threads, forecast_every, chunk)) {}
Streamer::~Streamer() = default;

void Streamer::push(std::span<const float> values, const OnForecast& on_forecast) {
  impl_->push(values, on_forecast);
}

StreamResult Streamer::finish(const OnForecast& on_forecast) {
  Impl& s = *impl_;
  s.flush(on_forecast);
  if (s.every == 0 && s.patches >= s.N) {  // only the last forecast was asked for
    s.head_row(s.patches - 1, 0);
    s.run_head({s.last_stats}, {s.last_point}, s.last_base, on_forecast);
  }
  StreamResult r;
  r.points = s.points;
  r.patches = s.patches;
  r.forecasts = s.forecasts;
  r.last_forecast = s.last;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - s.t0).count();
  r.state_bytes = int64_t(s.state.bytes() + (s.ring.size() + s.hist.size()) * sizeof(float));
  return r;
}

}  // namespace rwkv7::ts
