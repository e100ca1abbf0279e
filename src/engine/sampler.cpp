#include "rwkv7/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "rwkv7/error.hpp"

namespace rwkv7 {

namespace {

void check_options(const SamplerOptions& o) {
  if (!(o.temperature >= 0.0f) || !std::isfinite(o.temperature)) {
    throw Error("sampler: temperature must be a finite number >= 0, got " +
                std::to_string(o.temperature));
  }
  if (!(o.top_p >= 0.0f && o.top_p <= 1.0f)) {
    throw Error("sampler: top_p must be in [0, 1], got " + std::to_string(o.top_p));
  }
  if (o.top_k < 0) throw Error("sampler: top_k must be >= 0, got " + std::to_string(o.top_k));
  if (!std::isfinite(o.presence_penalty) || !std::isfinite(o.frequency_penalty)) {
    throw Error("sampler: presence/frequency penalties must be finite");
  }
  if (!(o.penalty_decay >= 0.0f && o.penalty_decay <= 1.0f)) {
    throw Error("sampler: penalty_decay must be in [0, 1], got " + std::to_string(o.penalty_decay));
  }
}

// Uniform double in [0, 1) from 53 random bits: the same on every standard library.
double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace

Sampler::Sampler(const SamplerOptions& opts) : opts_(opts), rng_(opts.seed) {
  check_options(opts_);
}

void Sampler::accept(int32_t token) {
  if (token < 0) throw Error("sampler: accept() got negative token id " + std::to_string(token));
  for (auto& [t, count] : occurrences_) count *= opts_.penalty_decay;
  occurrences_[token] += 1.0f;
}

void Sampler::reset() { occurrences_.clear(); }

int32_t Sampler::sample(std::span<const float> logits) {
  const size_t V = logits.size();
  if (V == 0) throw Error("sampler: logits are empty");
  for (size_t i = 0; i < V; ++i) {
    if (!std::isfinite(logits[i])) {
      throw Error("sampler: logits[" + std::to_string(i) + "] is " +
                  (std::isnan(logits[i]) ? "NaN" : "infinite") +
                  " (the model produced a non-finite value)");
    }
  }

  // Penalties on a copy: logit[t] -= presence + count[t] * frequency.
  std::vector<double> x(logits.begin(), logits.end());
  for (const auto& [t, count] : occurrences_) {
    if (static_cast<size_t>(t) < V) {
      x[static_cast<size_t>(t)] -= static_cast<double>(opts_.presence_penalty) +
                                   static_cast<double>(count) * opts_.frequency_penalty;
    }
  }

  // Arg-max, lowest id on ties.
  size_t best = 0;
  for (size_t i = 1; i < V; ++i) {
    if (x[i] > x[best]) best = i;
  }
  if (opts_.temperature == 0.0f || V == 1) return static_cast<int32_t>(best);
  const double xmax = x[best];

  // Softmax (shifted by the max, so every exponent is <= 0 and the sum is >= 1).
  std::vector<double> prob(V);
  double z = 0.0;
  for (size_t i = 0; i < V; ++i) {
    prob[i] = std::exp(x[i] - xmax);
    z += prob[i];
  }
  for (double& p : prob) p /= z;

  // Candidates: all ids, or the most probable ones in order (prob desc, id asc).
  const bool use_k = opts_.top_k > 0 && static_cast<size_t>(opts_.top_k) < V;
  const bool use_p = opts_.top_p < 1.0f;
  std::vector<int32_t> keep;
  if (!use_k && !use_p) {
    keep.resize(V);
    std::iota(keep.begin(), keep.end(), 0);
  } else {
    std::vector<int32_t> order(V);
    std::iota(order.begin(), order.end(), 0);
    auto more_probable = [&](int32_t a, int32_t b) {
      return prob[a] > prob[b] || (prob[a] == prob[b] && a < b);
    };
    const size_t limit = use_k ? static_cast<size_t>(opts_.top_k) : V;
    // Sort a growing prefix until it holds k tokens or reaches top_p of the mass; top-k and
    // top-p (on the unfiltered probabilities, as the official sampler does) both keep a
    // prefix of this order, so together they keep the shorter prefix.
    size_t sorted = 0;
    size_t count = 0;
    double cum = 0.0;
    size_t chunk = 64;
    bool done = false;
    while (!done) {
      const size_t end = std::min({V, limit, sorted + chunk});
      if (end < V)
        std::nth_element(order.begin() + sorted, order.begin() + end, order.end(), more_probable);
      std::sort(order.begin() + sorted, order.begin() + end, more_probable);
      for (size_t i = sorted; i < end; ++i) {
        cum += prob[order[i]];
        ++count;
        if (count >= limit || (use_p && cum >= opts_.top_p)) {
          done = true;
          break;
        }
      }
      sorted = end;
      if (sorted == V) done = true;
      chunk *= 4;
    }
    order.resize(std::max<size_t>(count, 1));
    keep = std::move(order);
  }

  // Temperature after filtering: p ** (1/T), renormalised. Computed from the logits in log
  // space, so a small temperature cannot underflow every weight to zero.
  const double inv_t = 1.0 / static_cast<double>(opts_.temperature);
  double xk = -HUGE_VAL;
  for (int32_t t : keep) xk = std::max(xk, x[t]);
  std::vector<double> w(keep.size());
  double total = 0.0;
  for (size_t i = 0; i < keep.size(); ++i) {
    w[i] = std::exp((x[keep[i]] - xk) * inv_t);
    total += w[i];
  }
  const double u = uniform01(rng_) * total;
  double acc = 0.0;
  for (size_t i = 0; i < keep.size(); ++i) {
    acc += w[i];
    if (u < acc) return keep[i];
  }
  // Rounding left u at the very top: take the last token with weight.
  for (size_t i = keep.size(); i-- > 0;) {
    if (w[i] > 0.0) return keep[i];
  }
  return keep.front();
}

}  // namespace rwkv7
