#pragma once
// LoRA adapters (as RWKV-PEFT applies them) on the large matrices of every layer:
// att.receptance/key/value/output.weight and ffn.key/value.weight. An adapted matrix is
//   W' = W + (alpha / rank) · B · A,   A [rank, in] ("lora_A"), B [out, rank] ("lora_B"),
// stored as a safetensors file with "<module>.lora_A" and "<module>.lora_B" (module = the
// weight's name without ".weight", e.g. "blocks.0.att.key") and metadata lora_rank and
// lora_alpha. `rwkv7 train --lora-rank` writes one; LoadOptions::lora applies one at load.
#include <string>

namespace rwkv7 {

// Writes base + adapters as one checkpoint in the official .pth layout (dtype "f32", "bf16" or
// "f16"; the merge itself is in fp32), atomically. Error naming the adapter file when a
// tensor is unknown to the base model, lacks its partner, or has another shape.
void merge_lora_checkpoint(const std::string& base_path, const std::string& adapter_path,
                           const std::string& out_path, const std::string& dtype = "f32");

}  // namespace rwkv7
