#include "rwkv7/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/context_impl.hpp"
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

struct Cand {
  float p;  // unnormalised probability
  int32_t id;
};

struct Scratch {
  std::vector<float> x, e, w;
  std::vector<Cand> keep;
};

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
  // Ids past any real vocabulary are a caller's bug, not a reason to allocate gigabytes.
  constexpr int32_t kMaxVocab = 1 << 22;
  if (token >= kMaxVocab) {
    throw Error("sampler: accept() got token id " + std::to_string(token) +
                ", past any vocabulary (at most " + std::to_string(kMaxVocab) + " ids)");
  }
  reserve(size_t(token) + 1);
  for (int32_t t : seen_) counts_[size_t(t)] *= opts_.penalty_decay;
  if (counts_[size_t(token)] == 0.0f) {
    // A count decayed to exactly 0 (penalty_decay 0) may already be listed: keep ids unique.
    if (std::find(seen_.begin(), seen_.end(), token) == seen_.end()) seen_.push_back(token);
  }
  counts_[size_t(token)] += 1.0f;
}

void Sampler::reserve(size_t vocab) {
  if (counts_.size() >= vocab) return;
  counts_.resize(vocab, 0.0f);
  seen_.reserve(vocab);
}

void Sampler::reset() {
  for (int32_t t : seen_) counts_[size_t(t)] = 0.0f;
  seen_.clear();
}

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
  // Scratch buffers are reused across calls (per thread): a fresh 256 KiB allocation per token
  // costs more in page faults and zeroing than the sampling itself.
  thread_local Scratch scratch;
  std::vector<float>& x = scratch.x;
  x.assign(logits.begin(), logits.end());
  if (scratch.keep.capacity() < V) {  // at most V candidates: no growth later
    scratch.keep.reserve(V);
    scratch.w.reserve(V);
  }
  reserve(V);
  for (int32_t t : seen_) {
    const float count = counts_[size_t(t)];
    if (static_cast<size_t>(t) < V) {
      x[static_cast<size_t>(t)] -= opts_.presence_penalty + count * opts_.frequency_penalty;
    }
  }

  // Arg-max, lowest id on ties.
  size_t best = 0;
  for (size_t i = 1; i < V; ++i) {
    if (x[i] > x[best]) best = i;
  }
  if (opts_.temperature == 0.0f || V == 1) return static_cast<int32_t>(best);
  const float xmax = x[best];

  // Softmax numerators, shifted by the max so every exponent is <= 0 and z >= 1. The
  // probabilities are e[i] / z; they are never normalised explicitly.
  std::vector<float>& e = scratch.e;
  e.resize(V);
  double z = 0.0;
  for (size_t i = 0; i < V; ++i) {
    e[i] = std::exp(x[i] - xmax);
    z += e[i];
  }

  // Filtering: top-k and top-p (on the unfiltered probabilities, as the official sampler
  // does) both keep a prefix of the order (prob desc, id asc), so together they keep the
  // shorter prefix. A growing prefix is selected with nth_element and sorted until it holds
  // k tokens or reaches top_p of the mass: O(V) passes plus a sort of the kept tokens.
  const bool use_k = opts_.top_k > 0 && static_cast<size_t>(opts_.top_k) < V;
  const bool use_p = opts_.top_p < 1.0f;
  std::vector<Cand>& keep = scratch.keep;
  keep.clear();
  if (use_k || use_p) {
    // Candidates: a cheap threshold pass first. Top-k never goes below the k-th largest
    // weight. Top-p never reaches below tau = (1 - top_p) * z / (2V): all tokens under tau
    // together hold less than (1 - top_p) of the mass, so the tokens at or above it already
    // hold more than top_p. The order restricted to the candidates is unchanged.
    float thr = 0.0f;
    if (use_p) {
      thr = static_cast<float>(0.5 * (1.0 - static_cast<double>(opts_.top_p)) * z /
                               static_cast<double>(V));
    }
    if (use_k) {
      std::vector<float>& tmp = scratch.w;
      tmp.assign(e.begin(), e.end());
      const size_t k = static_cast<size_t>(opts_.top_k);
      std::nth_element(tmp.begin(), tmp.begin() + (k - 1), tmp.end(), std::greater<float>());
      thr = std::max(thr, tmp[k - 1]);
    }
    for (size_t i = 0; i < V; ++i) {
      if (e[i] >= thr) keep.push_back({e[i], static_cast<int32_t>(i)});
    }
    const size_t C = keep.size();  // >= 1: the arg-max has e = 1 >= thr
    auto more_probable = [](const Cand& a, const Cand& b) {
      return a.p > b.p || (a.p == b.p && a.id < b.id);
    };
    const size_t limit = use_k ? static_cast<size_t>(opts_.top_k) : V;
    const double mass = use_p ? static_cast<double>(opts_.top_p) * z : HUGE_VAL;
    size_t sorted = 0;
    size_t count = 0;
    double cum = 0.0;
    size_t chunk = 128;
    bool done = false;
    while (!done) {
      const size_t end = std::min({C, limit, sorted + chunk});
      if (end < C) {
        std::nth_element(keep.begin() + sorted, keep.begin() + end, keep.end(), more_probable);
      }
      std::sort(keep.begin() + sorted, keep.begin() + end, more_probable);
      for (size_t i = sorted; i < end; ++i) {
        cum += keep[i].p;
        ++count;
        if (count >= limit || cum >= mass) {
          done = true;
          break;
        }
      }
      sorted = end;
      if (sorted == C) done = true;
      chunk *= 8;
    }
    keep.resize(std::max<size_t>(count, 1));
  }

  // Temperature after filtering: p ** (1/T), renormalised. For T != 1 the weights are
  // computed from the logits in log space, so a small temperature cannot underflow every
  // weight to zero. The most probable token is always kept, so its logit is the max.
  const bool all = keep.empty();
  const size_t n = all ? V : keep.size();
  const float inv_t = 1.0f / opts_.temperature;
  std::vector<float>& w = scratch.w;
  w.resize(n);
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const size_t id = all ? i : static_cast<size_t>(keep[i].id);
    w[i] = opts_.temperature == 1.0f ? e[id] : std::exp((x[id] - xmax) * inv_t);
    total += w[i];
  }
  const double u = uniform01(rng_) * total;
  double acc = 0.0;
  auto id_at = [&](size_t i) { return all ? static_cast<int32_t>(i) : keep[i].id; };
  for (size_t i = 0; i < n; ++i) {
    acc += w[i];
    if (u < acc) return id_at(i);
  }
  // Rounding left u at the very top: take the last token with weight.
  for (size_t i = n; i-- > 0;) {
    if (w[i] > 0.0f) return id_at(i);
  }
  return static_cast<int32_t>(best);
}

std::vector<int32_t> sample_many(Context& ctx, std::span<Sampler* const> samplers,
                                 std::span<const std::span<const float>> logits) {
  if (samplers.size() != logits.size())
    throw Error("sample_many: " + std::to_string(samplers.size()) + " samplers for " +
                std::to_string(logits.size()) + " logit rows");
  for (size_t i = 0; i < samplers.size(); ++i)
    if (!samplers[i]) throw Error("sample_many: row " + std::to_string(i) + " has no sampler");
  // A sampler changes as it samples (its generator): one used by two rows at once would race.
  std::vector<Sampler*> sorted(samplers.begin(), samplers.end());
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
    throw Error("sample_many: one sampler is given for two rows; each sequence needs its own");
  std::vector<int32_t> out(samplers.size());
  ContextAccess::impl(ctx).pool.parallel_for(
      int64_t(samplers.size()), 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          try {
            out[size_t(i)] = samplers[size_t(i)]->sample(logits[size_t(i)]);
          } catch (const Error& err) {
            throw Error("sample_many: row " + std::to_string(i) + ": " + err.what());
          }
        }
      });
  return out;
}

}  // namespace rwkv7
