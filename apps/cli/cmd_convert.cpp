// `rwkv7 convert IN OUT --type f32|bf16|f16|q8_0|q4_0|q5_0|q5_1|q4_k|q5_k|q4_k_m|q5_k_m|q6_k
// [--vocab FILE]`: any checkpoint this
// engine reads (.pth, safetensors, GGUF) → GGUF in llama.cpp's `rwkv7` layout.
#include <chrono>
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "rwkv7/convert.hpp"

namespace rwkv7::cli {
namespace {

struct ConvertFlags {
  std::string in, out;
  ConvertOptions opts;
};

void run_convert(const ConvertFlags& f) {
  const auto t0 = std::chrono::steady_clock::now();
  const ConvertResult r = convert_to_gguf(f.in, f.out, f.opts);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "convert: %s → %s (%s, %lld tensors, %.1f MB of weights) in %.2f s\n",
               f.in.c_str(), f.out.c_str(), f.opts.type.c_str(), (long long)r.tensors,
               double(r.weight_bytes) / 1e6, secs);
  if (!r.has_tokenizer)
    std::fprintf(stderr,
                 "convert: warning: no tokenizer written (the model is not byte-level and no "
                 "--vocab was given): llama.cpp will refuse to load %s\n",
                 f.out.c_str());
}

}  // namespace

void register_convert(CLI::App& app) {
  auto o = std::make_shared<ConvertFlags>();
  CLI::App* cmd = app.add_subcommand(
      "convert", "Convert a checkpoint (.pth, safetensors, GGUF) to GGUF (llama.cpp rwkv7 layout)");
  cmd->add_option("IN", o->in, "Input checkpoint")->required();
  cmd->add_option("OUT", o->out, "Output .gguf file")->required();
  cmd->add_option("--type", o->opts.type,
                  "Type of the big matrices: f32, bf16, f16, q8_0, q4_0, q5_0, q5_1, q4_k, q5_k, "
                  "or llama.cpp's mixes q4_k_m, q5_k_m, q6_k (small tensors stay f32)")
      ->capture_default_str();
  cmd->add_option("--vocab", o->opts.vocab, "World vocabulary file to embed (tokenizer.ggml.*)");
  cmd->add_option("--name", o->opts.name, "general.name (default: the input file's stem)");
  cmd->callback([o] { run_convert(*o); });
}

}  // namespace rwkv7::cli
