#pragma once
// Checkpoint conversion: any checkpoint this engine reads (.pth, safetensors, GGUF) → GGUF in
// llama.cpp's `rwkv7` layout, big matrices in the chosen type, small tensors in f32.
#include <cstdint>
#include <string>

namespace rwkv7 {

struct ConvertOptions {
  // Of the big matrices: f32, bf16, f16, q8_0, q4_0, q5_0, q5_1, q4_k, q5_k (pure), or
  // llama-quantize's mixes q4_k_m, q5_k_m, q6_k (head in Q6_K; see docs/quantisation.md).
  std::string type = "f16";
  std::string name;   // general.name; empty = the input file's stem
  std::string vocab;  // World vocabulary file to embed (tokenizer.ggml.*); empty = none
};

struct ConvertResult {
  int64_t tensors = 0;       // tensors written
  int64_t weight_bytes = 0;  // bytes of tensor data written
  // Tokenizer metadata written (a World vocabulary was given, or the model is byte-level):
  // without it llama.cpp refuses the file.
  bool has_tokenizer = false;
};

// Reads `in`, writes `out` (atomically: a temporary name, then rename). Error names the bad
// option, file or tensor.
ConvertResult convert_to_gguf(const std::string& in, const std::string& out,
                              const ConvertOptions& opts = {});

}  // namespace rwkv7
