#pragma once
// A fresh RWKV-7 model with the official initialisation (BlinkDL/RWKV-LM, RWKV-v7
// train_temp/src/model.py: RWKV_Tmix_x070.__init__, RWKV_CMix_x070.__init__ and
// RWKV.generate_init_weight, which overrides the nn.Linear weights and ln_x.weight and is what
// the official trainer saves as rwkv-init.pth). Deterministic from the seed: every tensor has
// its own std::mt19937_64 seeded from (seed, tensor name), with our own normal/uniform draws,
// so results depend neither on the standard library's distributions nor on thread count.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {

struct InitSpec {
  int64_t n_layer = 0;         // L
  int64_t n_embd = 0;          // C
  int64_t vocab_size = 65536;  // V
  int64_t head_size = 64;      // N
  int64_t ffn_dim = 0;         // F; 0 = 4C
  int64_t d_decay = 0;         // LoRA widths; 0 = the official formula of C
  int64_t d_aaa = 0;
  int64_t d_value = 0;
  int64_t d_gate = 0;
  DType dtype = DType::F32;  // f32, bf16 or f16 (values are drawn in f32/f64, then rounded)
  uint64_t seed = 0;
  int threads = 0;  // tensors are generated in parallel; 0 = all cores
};

// 0.1b = L12 C768, 0.4b = L24 C1024 (both Dw=64 Da=64 Dv=32 Dg=128), 1.5b = L24 C2048 (LoRA
// widths from the formulas); all N=64, V=65536, F=4C. Throws Error for an unknown name.
InitSpec init_preset(const std::string& name);

// Official LoRA width: max(32, round(factor * sqrt(C) / 32) * 32), Python's round (half to
// even). Factors: decay 2.5, aaa 2.5, value 1.7, gate 5.
int64_t official_lora_width(double factor, int64_t n_embd);

// Validates the spec (positive sizes, C divisible by N, dtype f32/bf16/f16) and fills every
// size. Throws Error naming the bad field.
ModelConfig resolve_init_config(const InitSpec& spec);

// The tensor names and shapes init_model produces, in the official state_dict order,
// without allocating anything.
std::vector<std::pair<std::string, Shape>> init_tensor_shapes(const ModelConfig& cfg);

// Owns the buffers its views point into (heap blocks: moving the struct keeps views valid).
struct InitializedModel {
  ModelConfig config;
  NamedTensors tensors;  // official order and names, dtype as requested
  std::vector<std::unique_ptr<std::byte[]>> buffers;

  InitializedModel() = default;
  InitializedModel(InitializedModel&&) = default;
  InitializedModel& operator=(InitializedModel&&) = default;
  InitializedModel(const InitializedModel&) = delete;
  InitializedModel& operator=(const InitializedModel&) = delete;

  const TensorView& get(const std::string& name) const;  // throws Error when absent
  int64_t parameter_count() const;
};

InitializedModel init_model(const InitSpec& spec);

// Orthogonal init as torch.nn.init.orthogonal_(W [rows, cols], gain): orthonormal rows when
// rows < cols, orthonormal columns otherwise, times gain. Exact (modified Gram-Schmidt in
// double, equal to QR with a positive R diagonal, as torch's sign fix gives) unless
// max·min² > kOrthoExactLimit; then a Gaussian matrix with each short-side vector normalised
// to length `gain` (nearly orthogonal for very tall matrices such as head [65536, C]).
inline constexpr double kOrthoExactLimit = 2e10;
void orthogonal_init(float* out, int64_t rows, int64_t cols, double gain, uint64_t seed);

}  // namespace rwkv7
