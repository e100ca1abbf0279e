#pragma once
// What a batched step costs, learnt from the steps the scheduler runs, so that the prompt share
// of a step can be sized to keep the generating streams' inter-token time within a factor of
// what a step of their tokens alone takes:
//   step seconds ≈ decode_only(d) + per_prompt · p,   decode_only(d) = fixed + per_decode · d
// (d generating rows, p prompt positions). `fixed` is mostly one pass over the weights, paid
// by every step whatever its rows: on a 2-core AVX2 machine, 0.1B bf16, ~10 ms against ~1.2 ms
// per prompt row, so a few decoding streams can carry many more prompt positions than their
// own count at the same relative slowdown.
// decode_only is fitted on the steps without prompt rows (a line in d; with one d seen, its
// value there), per_prompt on the others' excess over decode_only (a line through the origin
// in p). Both fits forget old steps geometrically, so they follow the machine's load.
#include <cstdint>
#include <optional>

namespace rwkv7 {

class StepCostModel {
 public:
  // Each step weighs 1; older ones decay by `forget` per new one of their kind.
  explicit StepCostModel(double forget = 0.98) : forget_(forget) {}

  void observe(int64_t decoding, int64_t prompt, double seconds);

  // Predicted seconds of a step of `decoding` generating rows alone; nullopt before enough
  // such steps were seen.
  std::optional<double> decode_only(int64_t decoding) const;
  // Seconds one prompt position adds to a step; nullopt before enough mixed steps were seen.
  std::optional<double> per_prompt() const;

  // The most prompt positions a step with `decoding` rows may add so that its predicted time
  // is at most `slowdown` x decode_only(decoding); nullopt while either fit is missing.
  std::optional<int64_t> prompt_positions(int64_t decoding, double slowdown) const;

 private:
  static constexpr int64_t kMinSteps = 8;  // steps of a kind before its fit is used
  double forget_;
  int64_t seen0_ = 0, seen1_ = 0;
  // Decode-only steps: weighted sums of 1, d, d², t, d·t.
  double n0_ = 0, d_ = 0, dd_ = 0, t_ = 0, dt_ = 0;
  // Mixed steps, once decode_only exists: weighted Σ p·excess, Σ p².
  double pe_ = 0, pp_ = 0;
};

// The step duration --stream-step-ms allows with `decoding` generating rows while `reading`
// sequences read their prompts. One stream may slow to `step_seconds` while a prompt is read (at
// light load its own steps are short and a relative bound alone would read a prompt 16 positions
// a step, a pass over the weights each time); d streams share that wait for each prompt being
// read: each may lose (step_seconds - alone) · min(r, d) / d, so together they wait no more than
// one stream would per prompt, and no step exceeds step_seconds. With 16 Q8_0 streams (alone
// ~17 ms, 2 cores) and one prompt that is ~19 ms and --stream-slowdown decides; a fixed 50 ms let
// their steps triple while a long prompt was read. With as many prompts waiting as streams (a
// backlog) the steps run at step_seconds, where a pass over the weights carries ~80 prompt
// positions instead of 16-25: the waiting requests' time to first token and the server's
// capacity no longer pay for streams that already run faster than anyone reads.
// `alone` is the streams' rows' predicted time alone; nullopt (not known: under steady load
// decode-only steps are rare, and known only near the stream counts they had) counts as 0, the
// least this allows: step_seconds · min(r, d) / d.
double shared_step_target(double step_seconds, int64_t decoding, std::optional<double> alone,
                          int64_t reading = 1);

// The prompt share that keeps a step with generating rows near a duration (the target above).
// A feedback loop on measured steps, no model: after a step whose prompt positions were the
// whole budget (more prompt was waiting), the share becomes those positions x sqrt(target /
// measured seconds), at most doubled or halved, within [lo, hi].
//
// The allowance of a step is the part of the target its prompt positions may take (the target
// less the streams' own predicted time; <= 0 = not known). The number of streams can jump
// between two steps (a burst of arrivals, a prompt finishing), and with it the allowance; the
// feedback alone would then take a few steps over the target to halve its way down (16 streams
// joining one: 44 ms → 2 ms, four steps). So the share asked for a smaller allowance than the
// one it settled at is scaled down at once, in proportion (prompt time is linear in positions
// beyond the step's fixed cost); a larger allowance leaves it to the feedback (at most doubled
// per step).
class StepTimeController {
 public:
  StepTimeController(int64_t lo, int64_t hi);
  int64_t share() const { return share_; }
  int64_t share(double allowance_seconds) const;
  // `target_seconds` <= 0 leaves the share as it is.
  void observe(int64_t prompt_positions, double seconds, double target_seconds,
               double allowance_seconds = 0);

 private:
  int64_t lo_, hi_, share_;
  double settled_allowance_ = 0;  // the allowance of the step share_ was set after; 0 = unknown
};

}  // namespace rwkv7
