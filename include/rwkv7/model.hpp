#pragma once
// The engine API: an immutable, shareable Model and the per-sequence State its caller owns.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "rwkv7/context.hpp"

namespace rwkv7 {

// Sizes read from the checkpoint's tensor shapes (SPEC §1).
struct ModelConfig {
  int64_t n_layer = 0;                                      // L
  int64_t n_embd = 0;                                       // C
  int64_t head_size = 0;                                    // N
  int64_t n_head = 0;                                       // H = C / N
  int64_t vocab_size = 0;                                   // V
  int64_t ffn_dim = 0;                                      // F
  int64_t d_decay = 0, d_aaa = 0, d_value = 0, d_gate = 0;  // LoRA widths Dw, Da, Dv, Dg

  std::string shape_string() const;  // "L12-C768-N64-V65536-F3072"
};

// The recurrent state of one sequence (SPEC §3/§7): per layer att_shift [C], ffn_shift [C],
// wkv [H, N, N]. Plain data: copy it to fork a sequence, save it to resume one.
struct State {
  int64_t n_layer = 0, n_embd = 0, n_head = 0, head_size = 0;
  std::vector<float> att_shift;  // [L, C]
  std::vector<float> ffn_shift;  // [L, C]
  std::vector<float> wkv;        // [L, H, N, N]
  int64_t tokens_consumed = 0;   // how many tokens this state has seen
  // Model::fingerprint() of the weights it was made for (empty: unknown, only the shape is
  // checked). A state of other weights of the same shape is refused.
  std::string model_fingerprint;

  size_t bytes() const { return (att_shift.size() + ffn_shift.size() + wkv.size()) * 4; }
};

enum class BackendKind { Cpu, Reference };  // which implementation runs the hot ops

struct LoadOptions {
  BackendKind backend = BackendKind::Cpu;
  int threads = 0;      // of the model's own Context (calls without one); 0 = all cores
  int64_t chunk = 256;  // positions per pass over the layers: bounds memory for long inputs
  // LoRA adapter file (rwkv7/lora.hpp) merged into the weights at load (fp32); "" = none.
  std::string lora;
  // Matrix products of the cpu backend: "fp32" (the weights' values times fp32 activations), or
  // "bf16": on CPUs with AVX512_BF16, the head and the layers' large matrices (bf16 or fp32
  // weights) are rounded to bf16 at load and every product over them rounds its activations to
  // bf16 and sums in fp32 (VDPBF16PS: twice the FMA rate; results still independent of the
  // batch and the chunking). Elsewhere "bf16" runs the fp32 products
  // (Model::product_precision() says which ran). The LoRA factors' products too, their x as
  // two bf16 terms (16 bits). Norms, WKV, logits stay fp32.
  std::string precision = "fp32";
};

// Which positions of a sequence need logits.
enum class Logits { None, Last, All };

// One sequence of a batch: its tokens are consumed, its state advanced in place.
struct SequenceRequest {
  std::span<const int32_t> tokens;
  State* state = nullptr;
  Logits logits = Logits::Last;
  std::vector<float>* logits_out = nullptr;  // resized to [positions, V]
};

class Model {
 public:
  // Loads `.pth` or safetensors; every size inferred from shapes. Error names file and tensor.
  static std::shared_ptr<const Model> load(const std::string& path, const LoadOptions& opts = {});
  ~Model();

  const ModelConfig& config() const;
  const std::string& path() const;
  int threads() const;  // LoadOptions::threads: for the model's own Context (0 = all cores)
  std::string weight_dtype() const;  // dtype of the big matrices, e.g. "bf16"
  // "bf16" when the large matrices' products run in bf16 (LoadOptions::precision on a CPU
  // with AVX512_BF16), else "fp32".
  std::string product_precision() const;
  int64_t parameter_count() const;
  // Identifies these weights (shape + a hash of samples of every tensor): states remember it.
  const std::string& fingerprint() const;
  // Bytes of weights one decoded token reads (every matrix once, one embedding row), and the
  // FLOPs of one position through the layers (2 per multiply-add, WKV included) and of one row
  // of logits: the decode and prefill limits are bandwidth / bytes and peak FLOP/s / FLOPs.
  int64_t decode_bytes_per_token() const;
  double flops_per_token() const;
  double head_flops() const;

  // Every stored tensor with its count of NaN/inf values (for `info`; reads all weights).
  struct TensorReport {
    std::string name, dtype;
    std::vector<int64_t> shape;
    int64_t nonfinite = 0;
  };
  std::vector<TensorReport> inspect_tensors() const;

  State new_state() const;  // all zeros, tied to these weights
  // Error unless `state` has this model's shape and (when it has one) fingerprint.
  void check_state(const State& state) const;

  // Runs every sequence of the batch on the caller's Context. Long inputs are processed in
  // chunks of LoadOptions::chunk tokens (memory stays constant); results do not depend on the
  // chunking, on the batch or on the Context beyond float rounding. Safe to call from any
  // number of threads at once, each with its own Context.
  void forward(Context& ctx, std::span<SequenceRequest> batch) const;
  // One sequence; logits [V] of the last position (or [T, V] with Logits::All) into
  // `logits_out`, whose capacity is reused (no allocation once warm).
  void forward(Context& ctx, std::span<const int32_t> tokens, State& state, Logits which,
               std::vector<float>& logits_out) const;
  std::vector<float> forward(Context& ctx, std::span<const int32_t> tokens, State& state,
                             Logits which = Logits::Last) const;
  // The same on the model's own Context (LoadOptions::threads): safe from any thread, but
  // concurrent callers take turns.
  void forward(std::span<SequenceRequest> batch) const;
  std::vector<float> forward(std::span<const int32_t> tokens, State& state,
                             Logits which = Logits::Last) const;

  struct Impl;  // defined by the engine (src/engine/model_impl.hpp), opaque here

 private:
  friend struct ModelFactory;  // the library's own constructor (src/engine/model_internal.hpp)
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// State files: safetensors with `state.att_shift` [L, C], `state.ffn_shift` [L, C],
// `state.wkv` [L, H, N, N] and metadata (format version, model shape and fingerprint, tokens).
void save_state(const std::string& path, const State& state, const Model& model);
// Refuses (Error) a state made for another model shape; warns via `warning` when the shape
// matches but the fingerprint differs (e.g. a fine-tuned model).
State load_state(const std::string& path, const Model& model, std::string* warning = nullptr);

}  // namespace rwkv7
