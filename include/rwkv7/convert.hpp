#pragma once
// Checkpoint conversion: any checkpoint this engine reads (.pth, safetensors, GGUF) → GGUF in
// llama.cpp's `rwkv7` layout, big matrices in the chosen type, small tensors in f32.
#include <cstdint>
#include <string>

namespace rwkv7 {

struct ConvertOptions {
  std::string type = "f16";  // of the big matrices: f32, bf16, f16, q8_0 or q4_0
  std::string name;          // general.name; empty = the input file's stem
  std::string vocab;         // World vocabulary file to embed (tokenizer.ggml.*); empty = none
};

struct ConvertResult {
  int64_t tensors = 0;       // tensors written
  int64_t weight_bytes = 0;  // bytes of tensor data written
};

// Reads `in`, writes `out` (atomically: a temporary name, then rename). Error names the bad
// option, file or tensor.
ConvertResult convert_to_gguf(const std::string& in, const std::string& out,
                              const ConvertOptions& opts = {});

}  // namespace rwkv7
