#pragma once
// Runs a golden file through CudaModel in every mode (sequence, chunked, RNN, ragged batch,
// graph-captured decode) and measures the errors; shared by the host-twin tests (CPU, CI) and
// the device tests (GPU).
#include <string>
#include <vector>

#include "golden_support.hpp"
#include "io/tensor_io.hpp"
#include "model/cuda_model.hpp"
#include "model/weights.hpp"

namespace rwkv7::testing {

struct ModeError {
  std::string mode;
  double logits = 0;  // logit_error
  double state = 0;   // state_error
  double rel = 0;     // rel_l2 of the logits
};

// all_modes = false runs only "seq" and "decode-graph" (the host twin is slow in half types).
inline std::vector<ModeError> run_golden_modes(const Model& model, dev::DeviceOps& ops,
                                               dev::WType type, const Golden& g,
                                               bool all_modes = true) {
  CudaModel cm(build_weights(read_tensor_file(model.path())), ops, type);
  std::vector<ModeError> out;
  const std::span<const int32_t> all(g.tokens);
  auto one = [&](const std::string& mode, int64_t chunk, std::vector<size_t> pieces) {
    State st = model.new_state();
    std::vector<float> logits;
    size_t pos = 0, p = 0;
    while (pos < all.size()) {
      size_t n = p < pieces.size() ? pieces[p++] : all.size() - pos;
      n = std::min(n, all.size() - pos);
      std::vector<float> part;
      SequenceRequest q{all.subspan(pos, n), &st, Logits::All, &part};
      cm.forward(std::span<SequenceRequest>(&q, 1), chunk);
      logits.insert(logits.end(), part.begin(), part.end());
      pos += n;
    }
    out.push_back(
        {mode, logit_error(logits, g.logits), state_error(st, g), rel_l2(logits, g.logits)});
  };
  one("seq", 1024, {});
  if (all_modes) {
    one("chunk16", 16, {});
    one("rnn", 1, {});
    std::vector<size_t> pieces = {17};
    pieces.resize(all.size(), 1);
    one("17-then-rnn", 1024, pieces);
    {
      // Ragged batch: A = all tokens (checked), B = the second half, C = one token.
      State sa = model.new_state(), sb = model.new_state(), sc = model.new_state();
      std::vector<float> la, lb, lc;
      std::vector<SequenceRequest> batch = {{all, &sa, Logits::All, &la},
                                            {all.subspan(all.size() / 2), &sb, Logits::Last, &lb},
                                            {all.subspan(3, 1), &sc, Logits::Last, &lc}};
      cm.forward(batch, 24);
      out.push_back({"batch", logit_error(la, g.logits), state_error(sa, g), rel_l2(la, g.logits)});
    }
  }
  for (bool graph : {false, true}) {
    if (!graph && !all_modes) continue;
    // Device-resident state, one token per step; slot 1 runs beside it on other tokens.
    cm.reserve_slots(2);
    cm.reset_slot(0);
    cm.reset_slot(1);
    const int64_t V = model.config().vocab_size;
    std::vector<float> logits, step(size_t(2 * V));
    for (size_t t = 0; t < all.size(); ++t) {
      const int32_t toks[2] = {all[t], all[all.size() - 1 - t]};
      cm.decode(toks, step.data(), graph);
      logits.insert(logits.end(), step.begin(), step.begin() + V);
    }
    State st;
    cm.get_state(0, st);
    out.push_back({graph ? "decode-graph" : "decode", logit_error(logits, g.logits),
                   state_error(st, g), rel_l2(logits, g.logits)});
  }
  return out;
}

}  // namespace rwkv7::testing
