// `rwkv7 init`: writes a freshly initialised RWKV-7 model (official initialisation).
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "io/tensor_io.hpp"
#include "model/init.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::cli {
namespace {

struct InitOptions {
  std::string preset;
  int64_t layers = 0, embd = 0;
  int64_t vocab = 65536, head_size = 64, ffn = 0;
  int64_t lora_decay = 0, lora_aaa = 0, lora_value = 0, lora_gate = 0;
  std::string dtype = "f32";
  uint64_t seed = 0;
  int threads = 0;
  std::string out;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void run_init(const InitOptions& o) {
  InitSpec spec;
  if (!o.preset.empty()) {
    if (o.layers != 0 || o.embd != 0)
      throw Error("init: give either --preset or --layers and --embd, not both");
    spec = init_preset(o.preset);
  } else {
    if (o.layers == 0 || o.embd == 0)
      throw Error("init: give --preset 0.1b|0.4b|1.5b, or both --layers and --embd");
    spec.n_layer = o.layers;
    spec.n_embd = o.embd;
  }
  spec.vocab_size = o.vocab;
  spec.head_size = o.head_size;
  spec.ffn_dim = o.ffn;
  if (o.lora_decay) spec.d_decay = o.lora_decay;
  if (o.lora_aaa) spec.d_aaa = o.lora_aaa;
  if (o.lora_value) spec.d_value = o.lora_value;
  if (o.lora_gate) spec.d_gate = o.lora_gate;
  if (o.dtype == "f32") {
    spec.dtype = DType::F32;
  } else if (o.dtype == "bf16") {
    spec.dtype = DType::BF16;
  } else if (o.dtype == "f16") {
    spec.dtype = DType::F16;
  } else {
    throw Error("init: --dtype must be f32, bf16 or f16 (got '" + o.dtype + "')");
  }
  spec.seed = o.seed;
  spec.threads = o.threads;
  if (o.out.empty()) throw Error("init: -o OUT is required");

  const ModelConfig cfg = resolve_init_config(spec);  // validates before any allocation
  std::fprintf(stderr,
               "init: L%lld C%lld N%lld V%lld F%lld, LoRA Dw=%lld Da=%lld Dv=%lld Dg=%lld, %s, "
               "seed %llu\n",
               (long long)cfg.n_layer, (long long)cfg.n_embd, (long long)cfg.head_size,
               (long long)cfg.vocab_size, (long long)cfg.ffn_dim, (long long)cfg.d_decay,
               (long long)cfg.d_aaa, (long long)cfg.d_value, (long long)cfg.d_gate, o.dtype.c_str(),
               (unsigned long long)spec.seed);
  const auto t0 = std::chrono::steady_clock::now();
  InitializedModel model = init_model(spec);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (ends_with(o.out, ".safetensors")) {
    Metadata meta{{"format", "pt"},
                  {"rwkv7.init", "official x070 initialisation"},
                  {"rwkv7.init.seed", std::to_string(spec.seed)},
                  {"rwkv7.init.config",
                   "L" + std::to_string(cfg.n_layer) + "-C" + std::to_string(cfg.n_embd) + "-N" +
                       std::to_string(cfg.head_size) + "-V" + std::to_string(cfg.vocab_size) +
                       "-F" + std::to_string(cfg.ffn_dim)}};
    write_safetensors(o.out, model.tensors, meta);
  } else {
    write_pth(o.out, model.tensors);
  }
  std::fprintf(stderr, "init: %lld parameters, generated in %.1f s, written to %s\n",
               (long long)model.parameter_count(), secs, o.out.c_str());
}

}  // namespace

void register_init(CLI::App& app) {
  auto opts = std::make_shared<InitOptions>();
  auto* cmd = app.add_subcommand(
      "init",
      "Write a fresh RWKV-7 model with the official initialisation (BlinkDL RWKV-LM x070 "
      "generate_init_weight). Orthogonal matrices use an exact QR (modified Gram-Schmidt in "
      "double); matrices with rows*cols*cols > 2e10 (e.g. head [65536, C] of large models) use a "
      "Gaussian matrix with normalised columns instead, which is nearly orthogonal for tall "
      "matrices. OUT ending in .safetensors writes safetensors, otherwise an official .pth.");
  cmd->add_option("--preset", opts->preset, "0.1b (L12 C768), 0.4b (L24 C1024) or 1.5b (L24 C2048)")
      ->check(CLI::IsMember({"0.1b", "0.4b", "1.5b"}));
  cmd->add_option("--layers", opts->layers, "Number of layers L (with --embd)");
  cmd->add_option("--embd", opts->embd, "Model width C (with --layers)");
  cmd->add_option("--vocab-size", opts->vocab, "Vocabulary size V")->capture_default_str();
  cmd->add_option("--head-size", opts->head_size, "Head size N (C must be divisible by N)")
      ->capture_default_str();
  cmd->add_option("--ffn", opts->ffn, "Channel-mix width F (default 4C)");
  cmd->add_option("--lora-decay", opts->lora_decay,
                  "Decay LoRA width Dw (default max(32, round(2.5 sqrt(C)/32)*32))");
  cmd->add_option("--lora-aaa", opts->lora_aaa,
                  "In-context-rate LoRA width Da (default max(32, round(2.5 sqrt(C)/32)*32))");
  cmd->add_option("--lora-value", opts->lora_value,
                  "Value-residual LoRA width Dv (default max(32, round(1.7 sqrt(C)/32)*32))");
  cmd->add_option("--lora-gate", opts->lora_gate,
                  "Gate LoRA width Dg (default max(32, round(5 sqrt(C)/32)*32))");
  cmd->add_option("--dtype", opts->dtype, "f32, bf16 or f16")->capture_default_str();
  cmd->add_option("--seed", opts->seed, "Random seed (same seed, same file)")
      ->capture_default_str();
  cmd->add_option("--threads", opts->threads, "Worker threads (0 = all cores)")
      ->capture_default_str()
      ->check(ThreadCount);
  cmd->add_option("-o,--output", opts->out, "Output file (.pth or .safetensors)")->required();
  cmd->callback([opts] { run_init(*opts); });
}

}  // namespace rwkv7::cli
