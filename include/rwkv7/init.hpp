#pragma once
// A fresh RWKV-7 model with the official initialisation (BlinkDL RWKV-LM x070
// generate_init_weight), written as an official `.pth` or as safetensors.
#include <cstdint>
#include <string>

#include "rwkv7/model.hpp"

namespace rwkv7 {

struct InitOptions {
  std::string preset;               // 0.1b, 0.4b or 1.5b; or give n_layer and n_embd
  int64_t n_layer = 0, n_embd = 0;  // L, C
  int64_t vocab_size = 65536;       // V
  int64_t head_size = 64;           // N (C must be divisible by N)
  int64_t ffn_dim = 0;              // F; 0 = 4C
  int64_t d_decay = 0, d_aaa = 0;   // LoRA widths; 0 = the official formula of C
  int64_t d_value = 0, d_gate = 0;
  std::string dtype = "f32";  // f32, bf16 or f16
  uint64_t seed = 0;          // same seed, same bytes
  int threads = 0;            // tensors are generated in parallel; 0 = all cores
};

// Validates the options without allocating the model (Error names the bad field) and returns
// every size, defaults filled in.
ModelConfig check_init_options(const InitOptions& opts);

struct InitResult {
  ModelConfig config;
  int64_t parameters = 0;
  double seconds = 0;  // generating the tensors (not writing them)
};

// Generates the model and writes it to `path`: safetensors when it ends in ".safetensors",
// otherwise an official `.pth`.
InitResult write_initialized_model(const std::string& path, const InitOptions& opts);

}  // namespace rwkv7
