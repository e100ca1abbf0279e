// The RWKV-7 graph (SPEC §3-4) over a ragged batch: the rows of all sequences of one pass are
// stacked so every weight product is one matrix-matrix call; token shift and WKV run per
// sequence.
#include "model/forward.hpp"

#include <algorithm>

#include "model/graph.hpp"
#include "ops/backward_ops.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {

using Buf = std::vector<float>;

void check_state(const State& s, const ModelConfig& c, const std::string& fingerprint) {
  if (s.n_layer != c.n_layer || s.n_embd != c.n_embd || s.n_head != c.n_head ||
      s.head_size != c.head_size || s.att_shift.size() != size_t(c.n_layer * c.n_embd) ||
      s.ffn_shift.size() != size_t(c.n_layer * c.n_embd) ||
      s.wkv.size() != size_t(c.n_layer * c.n_head * c.head_size * c.head_size)) {
    throw Error("state does not fit this model (state L" + std::to_string(s.n_layer) + " C" +
                std::to_string(s.n_embd) + " H" + std::to_string(s.n_head) + " N" +
                std::to_string(s.head_size) + ", model " + c.shape_string() + ")");
  }
  if (!s.model_fingerprint.empty() && s.model_fingerprint != fingerprint) {
    throw Error("state belongs to other weights of the same shape (state fingerprint " +
                s.model_fingerprint + ", model " + fingerprint + ")");
  }
}

void run_forward(const ModelWeights& w, const Backend& be, int64_t chunk, ForwardScratch& ws,
                 std::span<SequenceRequest> batch) {
  const ModelConfig& c = w.config;
  const int64_t C = c.n_embd, V = c.vocab_size;
  for (size_t b = 0; b < batch.size(); ++b) {
    const SequenceRequest& q = batch[b];
    if (!q.state) throw Error("forward: a sequence has no state");
    for (size_t other = 0; other < b; ++other) {
      if (batch[other].state == q.state) {
        throw Error("forward: sequences " + std::to_string(other) + " and " + std::to_string(b) +
                    " of the batch share one State (each sequence needs its own)");
      }
      if (q.logits != Logits::None && batch[other].logits != Logits::None &&
          batch[other].logits_out == q.logits_out) {  // written in parallel
        throw Error("forward: sequences " + std::to_string(other) + " and " + std::to_string(b) +
                    " of the batch share one logits output (each sequence needs its own)");
      }
    }
    check_state(*q.state, c, w.fingerprint);
    for (size_t i = 0; i < q.tokens.size(); ++i) {
      if (q.tokens[i] < 0 || q.tokens[i] >= V) {
        throw Error("token " + std::to_string(q.tokens[i]) + " at position " + std::to_string(i) +
                    " is outside the vocabulary [0, " + std::to_string(V) + ")");
      }
    }
    if (q.logits != Logits::None && !q.logits_out)
      throw Error("forward: logits requested but no output");
    if (q.logits == Logits::Last && q.tokens.empty())
      throw Error("forward: logits of an empty sequence");
    if (q.logits_out) {
      // Sized, not cleared: every value is written below (a clear was 8 MB of stores per
      // 32-sequence decode step, on the calling thread).
      q.logits_out->resize(size_t((q.logits == Logits::All ? q.tokens.size() : 1) * V));
      if (q.logits == Logits::None) q.logits_out->clear();
    }
  }
  std::vector<size_t>& done = ws.done;
  done.assign(batch.size(), 0);
  Buf &x = ws.x, &v_first = ws.v_first;
  for (;;) {
    std::vector<Segment>& segs = ws.segs;
    std::vector<size_t>& seq_of_seg = ws.seq_of_seg;
    segs.clear();
    seq_of_seg.clear();
    int64_t R = 0;
    for (size_t b = 0; b < batch.size(); ++b) {
      const int64_t n = std::min<int64_t>(chunk, int64_t(batch[b].tokens.size() - done[b]));
      if (n <= 0) continue;
      segs.push_back(Segment{batch[b].state, R, n});
      seq_of_seg.push_back(b);
      R += n;
    }
    if (R == 0) break;
    x.resize(size_t(R * C));
    std::vector<int32_t>& tokens = ws.tokens;
    tokens.clear();
    for (size_t s = 0; s < segs.size(); ++s) {
      const SequenceRequest& q = batch[seq_of_seg[s]];
      const size_t from = done[seq_of_seg[s]];
      tokens.insert(tokens.end(), q.tokens.begin() + ptrdiff_t(from),
                    q.tokens.begin() + ptrdiff_t(from + size_t(segs[s].rows)));
    }
    GraphPass pass{w, be, segs, R, ws};
    pass.embed(tokens.data(), x.data(), nullptr, nullptr);
    pass.layers(x, v_first, nullptr);
    // Head only on the rows whose logits were asked for.
    std::vector<std::pair<size_t, int64_t>>& wanted = ws.wanted;  // (segment, row within it)
    wanted.clear();
    for (size_t s = 0; s < segs.size(); ++s) {
      const SequenceRequest& q = batch[seq_of_seg[s]];
      const bool last_pass = done[seq_of_seg[s]] + size_t(segs[s].rows) == q.tokens.size();
      if (q.logits == Logits::All) {
        for (int64_t i = 0; i < segs[s].rows; ++i) wanted.emplace_back(s, i);
      } else if (q.logits == Logits::Last && last_pass) {
        wanted.emplace_back(s, segs[s].rows - 1);
      }
    }
    if (!wanted.empty()) {
      Buf &normed = ws.normed, &logits = ws.logits;
      normed.resize(wanted.size() * size_t(C));
      logits.resize(wanted.size() * size_t(V));
      for (size_t i = 0; i < wanted.size(); ++i) {
        train::norm_forward<float>(
            {1, C, 1, kLnEps, &x[size_t((segs[wanted[i].first].row0 + wanted[i].second) * C)],
             w.ln_out_w.data(), w.ln_out_b.data(), &normed[i * size_t(C)], nullptr});
      }
      be.matmul(MatmulArgs{w.head, normed.data(), logits.data(), int64_t(wanted.size())});
      // Out to each sequence's logits, over the threads (32 sequences: 8 MB).
      be.parallel_rows(int64_t(wanted.size()), [&](int64_t i0, int64_t i1) {
        for (size_t i = size_t(i0); i < size_t(i1); ++i) {
          const size_t b = seq_of_seg[wanted[i].first];
          const SequenceRequest& q = batch[b];
          const size_t pos = q.logits == Logits::All ? done[b] + size_t(wanted[i].second) : 0;
          std::copy_n(&logits[i * size_t(V)], V, q.logits_out->data() + pos * size_t(V));
        }
      });
    }
    for (size_t s = 0; s < segs.size(); ++s) {
      done[seq_of_seg[s]] += size_t(segs[s].rows);
      segs[s].state->tokens_consumed += segs[s].rows;
    }
  }
}

}  // namespace rwkv7

namespace rwkv7 {

void run_blocks_embedded(const ModelWeights& w, const Backend& be, ForwardScratch& ws, State& state,
                         std::span<const float> emb, std::vector<float>& hidden) {
  const int64_t C = w.config.n_embd;
  if (emb.empty() || emb.size() % size_t(C) != 0)
    throw Error("blocks: " + std::to_string(emb.size()) + " input values are not rows of " +
                std::to_string(C));
  check_state(state, w.config, "");
  const int64_t T = int64_t(emb.size()) / C;
  std::vector<Segment>& segs = ws.segs;
  segs.assign(1, Segment{&state, 0, T});
  Buf &x = ws.x, &v_first = ws.v_first;
  x.resize(emb.size());
  GraphPass pass{w, be, segs, T, ws};
  pass.layer_norm_rows(emb.data(), w.ln0_w, w.ln0_b, x.data(), nullptr);
  pass.layers(x, v_first, nullptr);
  hidden.resize(emb.size());
  pass.layer_norm_rows(x.data(), w.ln_out_w, w.ln_out_b, hidden.data(), nullptr);
  state.tokens_consumed += T;
}

}  // namespace rwkv7
