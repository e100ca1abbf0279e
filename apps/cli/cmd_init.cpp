// `rwkv7 init`: writes a freshly initialised RWKV-7 model (official initialisation).
#include <cstdio>
#include <memory>
#include <string>

#include "commands.hpp"
#include "common.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/init.hpp"

namespace rwkv7::cli {
namespace {

struct InitFlags {
  InitOptions o;
  std::string out;
};

void run_init(const InitFlags& f) {
  const InitOptions& o = f.o;
  if (!o.preset.empty() && (o.n_layer != 0 || o.n_embd != 0))
    throw Error("init: give either --preset or --layers and --embd, not both");
  if (o.preset.empty() && (o.n_layer == 0 || o.n_embd == 0))
    throw Error("init: give --preset 0.1b|0.4b|1.5b, or both --layers and --embd");
  if (o.dtype != "f32" && o.dtype != "bf16" && o.dtype != "f16")
    throw Error("init: --dtype must be f32, bf16 or f16 (got '" + o.dtype + "')");
  if (f.out.empty()) throw Error("init: -o OUT is required");

  const ModelConfig cfg = check_init_options(o);  // validates before any allocation
  std::fprintf(stderr,
               "init: L%lld C%lld N%lld V%lld F%lld, LoRA Dw=%lld Da=%lld Dv=%lld Dg=%lld, %s, "
               "seed %llu\n",
               (long long)cfg.n_layer, (long long)cfg.n_embd, (long long)cfg.head_size,
               (long long)cfg.vocab_size, (long long)cfg.ffn_dim, (long long)cfg.d_decay,
               (long long)cfg.d_aaa, (long long)cfg.d_value, (long long)cfg.d_gate, o.dtype.c_str(),
               (unsigned long long)o.seed);
  const InitResult r = write_initialized_model(f.out, o);
  std::fprintf(stderr, "init: %lld parameters, generated in %.1f s, written to %s\n",
               (long long)r.parameters, r.seconds, f.out.c_str());
}

}  // namespace

void register_init(CLI::App& app) {
  auto opts = std::make_shared<InitFlags>();
  auto* cmd = app.add_subcommand(
      "init",
      "Write a fresh RWKV-7 model with the official initialisation (BlinkDL RWKV-LM x070 "
      "generate_init_weight). Orthogonal matrices use an exact QR (modified Gram-Schmidt in "
      "double); matrices with rows*cols*cols > 2e10 (e.g. head [65536, C] of large models) use a "
      "Gaussian matrix with normalised columns instead, which is nearly orthogonal for tall "
      "matrices. OUT ending in .safetensors writes safetensors, otherwise an official .pth.");
  cmd->add_option("--preset", opts->o.preset,
                  "0.1b (L12 C768), 0.4b (L24 C1024) or 1.5b (L24 C2048)")
      ->check(CLI::IsMember({"0.1b", "0.4b", "1.5b"}));
  cmd->add_option("--layers", opts->o.n_layer, "Number of layers L (with --embd)");
  cmd->add_option("--embd", opts->o.n_embd, "Model width C (with --layers)");
  cmd->add_option("--vocab-size", opts->o.vocab_size, "Vocabulary size V")->capture_default_str();
  cmd->add_option("--head-size", opts->o.head_size, "Head size N (C must be divisible by N)")
      ->capture_default_str();
  cmd->add_option("--ffn", opts->o.ffn_dim, "Channel-mix width F (default 4C)");
  cmd->add_option("--lora-decay", opts->o.d_decay,
                  "Decay LoRA width Dw (default max(32, round(2.5 sqrt(C)/32)*32))");
  cmd->add_option("--lora-aaa", opts->o.d_aaa,
                  "In-context-rate LoRA width Da (default max(32, round(2.5 sqrt(C)/32)*32))");
  cmd->add_option("--lora-value", opts->o.d_value,
                  "Value-residual LoRA width Dv (default max(32, round(1.7 sqrt(C)/32)*32))");
  cmd->add_option("--lora-gate", opts->o.d_gate,
                  "Gate LoRA width Dg (default max(32, round(5 sqrt(C)/32)*32))");
  cmd->add_option("--dtype", opts->o.dtype, "f32, bf16 or f16")->capture_default_str();
  cmd->add_option("--seed", opts->o.seed, "Random seed (same seed, same file)")
      ->capture_default_str();
  cmd->add_option("--threads", opts->o.threads, "Worker threads (0 = all cores)")
      ->capture_default_str()
      ->check(ThreadCount);
  cmd->add_option("-o,--output", opts->out, "Output file (.pth or .safetensors)")->required();
  cmd->callback([opts] { run_init(*opts); });
}

}  // namespace rwkv7::cli
