// State fidelity (rwkv7/state_fidelity.hpp): the scorer and the experiment.
#include "rwkv7/state_fidelity.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/atomic_write.hpp"
#include "core/svg_plot.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

// log-softmax of one row, in double.
void log_softmax(const float* x, int64_t v, std::vector<double>& out) {
  out.resize(size_t(v));
  double mx = -INFINITY;
  for (int64_t i = 0; i < v; ++i) mx = std::max(mx, double(x[i]));
  double sum = 0;
  for (int64_t i = 0; i < v; ++i) sum += std::exp(double(x[i]) - mx);
  const double lse = mx + std::log(sum);
  for (int64_t i = 0; i < v; ++i) out[size_t(i)] = double(x[i]) - lse;
}

int64_t argmax(const float* x, int64_t v) { return std::max_element(x, x + v) - x; }

}  // namespace

FidelityScore score_fidelity(std::span<const float> t, std::span<const float> a, int64_t v,
                             std::span<const int32_t> targets) {
  if (v <= 0 || t.size() != a.size() || t.size() != targets.size() * size_t(v)) {
    throw Error("score_fidelity: logits must both be [" + std::to_string(targets.size()) + ", " +
                std::to_string(v) + "] (got " + std::to_string(t.size()) + " and " +
                std::to_string(a.size()) + " values)");
  }
  FidelityScore s;
  s.positions = int64_t(targets.size());
  if (s.positions == 0) return s;
  std::vector<double> lp, lq;
  int64_t agree = 0;
  for (int64_t r = 0; r < s.positions; ++r) {
    const float* tr = &t[size_t(r * v)];
    const float* ar = &a[size_t(r * v)];
    const int32_t y = targets[size_t(r)];
    if (y < 0 || y >= v)
      throw Error("score_fidelity: target " + std::to_string(y) + " at row " + std::to_string(r) +
                  " is outside the vocabulary");
    log_softmax(tr, v, lp);
    log_softmax(ar, v, lq);
    double kl = 0;
    for (int64_t i = 0; i < v; ++i) kl += std::exp(lp[size_t(i)]) * (lp[size_t(i)] - lq[size_t(i)]);
    s.kl += std::max(kl, 0.0);
    s.loss_true -= lp[size_t(y)];
    s.loss_approx -= lq[size_t(y)];
    agree += argmax(tr, v) == argmax(ar, v);
  }
  const double n = double(s.positions);
  s.top1_agreement = double(agree) / n;
  s.kl /= n;
  s.loss_true /= n;
  s.loss_approx /= n;
  s.loss_delta = s.loss_true > 0 ? (s.loss_approx - s.loss_true) / s.loss_true : 0.0;
  return s;
}

std::vector<FidelityResult> evaluate_state_fidelity(const Model& model,
                                                    std::span<const int32_t> tokens,
                                                    const std::vector<CompressOptions>& configs,
                                                    const FidelityOptions& o,
                                                    const Progress& progress) {
  if (o.prefix_tokens.empty() || o.continue_tokens <= 0 || o.recompress_every < 0) {
    throw Error("state fidelity: needs prefix lengths, continue_tokens > 0, recompress_every >= 0");
  }
  for (const auto& c : configs)
    if (c.method != "reset") check_compress_options(c);
  const int64_t T = o.continue_tokens, V = model.config().vocab_size;
  for (int64_t m : o.prefix_tokens) {
    if (m <= 0 || int64_t(tokens.size()) < m + T + 1) {
      throw Error("state fidelity: prefix " + std::to_string(m) + " + " + std::to_string(T) +
                  " continuation tokens + 1 target need " + std::to_string(m + T + 1) +
                  " tokens; the text has " + std::to_string(tokens.size()));
    }
  }
  const int64_t W = o.windows;
  if (W < 1) throw Error("state fidelity: windows must be >= 1");
  const int64_t total = int64_t(o.prefix_tokens.size() * configs.size()) * W;
  int64_t done = 0;
  if (progress) progress(0, total);
  std::vector<FidelityResult> out;
  std::vector<float> approx;
  for (int64_t M : o.prefix_tokens) {
    // Window w reads tokens [start, start + M) and compares the next T; the starts are spread
    // evenly over the text (the last window ends at its end).
    const int64_t room = int64_t(tokens.size()) - (M + T + 1);
    std::vector<FidelityResult> acc(configs.size());
    std::vector<double> ratio_sum(configs.size(), 0.0);
    for (int64_t w = 0; w < W; ++w) {
      const int64_t start = W == 1 ? 0 : room * w / (W - 1);
      const auto prefix = tokens.subspan(size_t(start), size_t(M));
      const auto cont = tokens.subspan(size_t(start + M), size_t(T));
      const auto targets = tokens.subspan(size_t(start + M + 1), size_t(T));
      State truth = model.new_state();
      model.forward(prefix, truth, Logits::None);
      State after = truth;
      const std::vector<float> true_logits = model.forward(cont, after, Logits::All);
      for (size_t ci = 0; ci < configs.size(); ++ci) {
        const CompressOptions& c = configs[ci];
        FidelityResult& r = acc[ci];
        double ratio = 0;
        if (c.method == "reset") {  // the baseline: the continuation without the prefix
          State s = model.new_state();
          r.detail = "zero state";
          approx = model.forward(cont, s, Logits::All);
        } else if (o.recompress_every == 0) {
          CompressedState cs = compress_state(truth, c);
          ratio = cs.ratio(), r.detail = cs.detail;
          State s = decompress_state(cs);
          approx = model.forward(cont, s, Logits::All);
        } else {
          // The state lives compressed: K tokens, compress + decompress, K tokens, ...
          const int64_t K = o.recompress_every;
          State s = model.new_state();
          double sum = 0;
          int64_t n = 0;
          auto squeeze = [&] {
            CompressedState cs = compress_state(s, c);
            sum += cs.ratio(), ++n, r.detail = cs.detail;
            s = decompress_state(cs);
          };
          for (int64_t p = 0; p < M; p += K) {
            model.forward(prefix.subspan(size_t(p), size_t(std::min(K, M - p))), s, Logits::None);
            squeeze();
          }
          approx.clear();
          for (int64_t p = 0; p < T; p += K) {
            auto part =
                model.forward(cont.subspan(size_t(p), size_t(std::min(K, T - p))), s, Logits::All);
            approx.insert(approx.end(), part.begin(), part.end());
            if (p + K < T) squeeze();
          }
          ratio = sum / double(n);
        }
        // Every window has T positions: the mean over windows is the mean over positions.
        const FidelityScore f = score_fidelity(true_logits, approx, V, targets);
        r.score.positions += f.positions;
        r.score.top1_agreement += f.top1_agreement / double(W);
        r.score.kl += f.kl / double(W);
        r.score.loss_true += f.loss_true / double(W);
        r.score.loss_approx += f.loss_approx / double(W);
        ratio_sum[ci] += ratio / double(W);
        if (progress) progress(++done, total);
      }
    }
    for (size_t ci = 0; ci < configs.size(); ++ci) {
      FidelityResult& r = acc[ci];
      r.prefix_tokens = M, r.recompress_every = o.recompress_every, r.windows = W;
      r.method = configs[ci].method, r.target_ratio = configs[ci].ratio;
      r.ratio = ratio_sum[ci];
      r.score.loss_delta =
          r.score.loss_true > 0 ? (r.score.loss_approx - r.score.loss_true) / r.score.loss_true : 0;
      out.push_back(std::move(r));
    }
  }
  return out;
}

void write_fidelity_svg(const std::string& path, const std::vector<FidelityResult>& results,
                        const std::string& title, bool log_kl) {
  PlotSpec spec;
  spec.title = title;
  spec.x_label = "ratio (compressed bytes / fp32 bytes)";
  spec.y_label = log_kl ? "log10 mean KL(true || compressed), nats"
                        : "top-1 agreement with the uncompressed state";
  if (log_kl) spec.y_format = "%.1f";
  spec.x_from_zero = true;
  std::map<std::string, std::vector<std::pair<double, double>>> by_method;
  std::vector<std::string> order;
  for (const FidelityResult& r : results) {
    if (!by_method.count(r.method)) order.push_back(r.method);
    // log10 of 0 (an exact state) is left out: the plot shows what is lost.
    const double y =
        log_kl ? (r.score.kl > 0 ? std::log10(r.score.kl) : NAN) : r.score.top1_agreement;
    by_method[r.method].emplace_back(r.ratio, y);
  }
  for (size_t i = 0; i < order.size(); ++i) {
    auto pts = by_method[order[i]];
    std::sort(pts.begin(), pts.end());
    spec.series.push_back(PlotSeries{order[i], plot_color(i), 2, true, pts});
  }
  const std::string svg = render_svg_plot(spec);
  write_file_atomic(path, [&](std::ostream& out) { out << svg; });
}

}  // namespace rwkv7
