#pragma once
// The RWKV-7 weights, validated and arranged for the forward pass. Big matrices stay in their
// file dtype, viewed in place; small tensors (norms, mixes) are copied to fp32, LoRA factors to
// fp32 or, when every value is a bf16 number, bf16 (see OwnedMatrix).
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "io/rwkv7_parameters.hpp"
#include "ops/ops.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {

// A matrix owned by the weights (LoRA factors, transposed so that y = M·x). fp32, or bf16 when
// every value is exactly a bf16 number (official checkpoints are bf16, and GGUF files made from
// them store these small tensors as fp32): the same values in half the bytes read per token.
struct OwnedMatrix {
  std::vector<float> values;     // used when m.dtype == F32
  std::vector<uint16_t> halves;  // used when m.dtype == BF16
  Matrix m;
};

struct LayerWeights {
  std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;
  // time mix, each [C]
  std::vector<float> x_r, x_w, x_k, x_v, x_a, x_g, w0, a0, v0, k_k, k_a;
  std::vector<float> r_k;  // [H, N]
  std::vector<float> ln_x_w, ln_x_b;
  OwnedMatrix w1, w2, a1, a2, v1, v2, g1, g2;  // w1: [Dw, C] (= w1ᵀ), w2: [C, Dw], ...
  bool has_value_residual = false;             // layers >= 1
  Matrix receptance, key, value, output;       // [C, C]
  // channel mix
  std::vector<float> ffn_x_k;  // [C]
  Matrix ffn_key;              // [F, C]
  Matrix ffn_value;            // [C, F]
};

struct ModelWeights {
  ModelConfig config;
  TensorFile file;  // keeps the mapping alive
  Matrix emb;       // [V, C]
  std::vector<float> ln0_w, ln0_b, ln_out_w, ln_out_b;
  std::vector<LayerWeights> layers;
  Matrix head;  // [V, C]
  DType matrix_dtype = DType::F32;
  int64_t parameter_count = 0;
  std::string fingerprint;
  int64_t decode_bytes = 0;  // weights read per decoded token
  double flops = 0;          // FLOPs per position through the layers
  double head_flops = 0;     // FLOPs per row of logits
  bool trainable = false;    // WeightOptions::trainable
  // Owners of backend layouts made at load (prepare_for_cpu: the matrices' panels).
  std::vector<std::shared_ptr<const void>> prepared;
};

struct WeightOptions {
  // The file's tensors are fp32 parameters that change (training): LoRA factors stay fp32
  // (never the bf16 form) so that refresh_weights can copy new values in place.
  bool trainable = false;
};

// Infers the config from shapes and checks every tensor; Error names file, tensor, problem.
ModelWeights build_weights(TensorFile file, const WeightOptions& opts = {});

// Copies the current values of the file's tensors into the weights' own copies (vectors,
// transposed LoRA factors) without allocating: after an optimizer step changed them.
void refresh_weights(ModelWeights& w);

// Packs the product matrices (head and every layer's) into the cpu backend's panels, on the
// pool's threads (prepare_cpu_panels: bf16, f16, Q8_0 / Q4_0 where the CPU has their kernels,
// fp32 when viewed in the file's mapping, and fp32 LoRA factors as a small second copy); other
// dtypes are left as they are. With `bf16_products`, the head and every layer matrix (the
// LoRA factors too), when bf16 or fp32, go into pair panels instead where the CPU has
// AVX512_BF16 (their products then round activations to bf16: LoadOptions::precision).
void prepare_for_cpu(ModelWeights& w, ThreadPool& pool, bool bf16_products = false);

// The table's symbolic dimensions (io/rwkv7_parameters.hpp) for this config.
ParamDims param_dims(const ModelConfig& c);

// Infers sizes only (for `info` on files that may not be complete models).
ModelConfig infer_config(const TensorFile& file);

}  // namespace rwkv7
