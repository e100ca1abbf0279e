#pragma once
// LoRA adapters (rwkv7/lora.hpp) for the engine's loader and the trainer: which matrices are
// adapted, the product B·A added to a weight, its gradients, the adapter file.
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.hpp"

namespace rwkv7 {

// The adapted weights of an L-layer model, official names, in layer order.
std::vector<std::string> lora_target_names(int64_t n_layer);
// Whether LoRA adapts this weight (blocks.<l>. + one of the six large matrices).
bool is_lora_target(const std::string& weight);
// "blocks.0.att.key.weight" → "blocks.0.att.key.lora_A" / ".lora_B".
std::string lora_a_name(const std::string& weight);
std::string lora_b_name(const std::string& weight);

// W [out, in] += scale · B [out, r] · A [r, in].
void add_lora_product(float* W, const float* A, const float* B, int64_t out, int64_t in, int64_t r,
                      float scale);
// From dW = d loss / d W' [out, in]: dA = scale · Bᵀ·dW [r, in], dB = scale · dW·Aᵀ [out, r]
// (overwritten).
void lora_gradients(const float* dW, const float* A, const float* B, int64_t out, int64_t in,
                    int64_t r, float scale, float* dA, float* dB);

struct LoraAdapters {
  int64_t rank = 0;
  double alpha = 0;
  TensorMap tensors;  // lora_A / lora_B by name, fp32
  float scale() const { return float(alpha / double(rank)); }
};

// Reads and checks an adapter file against the base model's tensors (names, shapes, pairs,
// metadata); Error naming the file.
LoraAdapters read_lora(const std::string& path, const TensorFile& base);
void write_lora(const std::string& path, const LoraAdapters& adapters);

// `base` with every adapted matrix replaced by its merged fp32 value (buffers owned by the
// returned file).
TensorFile merge_lora(TensorFile base, const LoraAdapters& adapters);

}  // namespace rwkv7
