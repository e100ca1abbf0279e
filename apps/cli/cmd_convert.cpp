// `rwkv7 convert IN OUT --type f32|bf16|f16|q8_0|q4_0 [--vocab FILE]`: any checkpoint this
// engine reads (.pth, safetensors, GGUF) → GGUF in llama.cpp's `rwkv7` layout.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "commands.hpp"
#include "io/gguf.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7::cli {
namespace {

struct ConvertOptions {
  std::string in, out, type = "f16", vocab, name;
};

DType parse_type(const std::string& t) {
  if (t == "f32") return DType::F32;
  if (t == "bf16") return DType::BF16;
  if (t == "f16") return DType::F16;
  if (t == "q8_0") return DType::Q8_0;
  if (t == "q4_0") return DType::Q4_0;
  throw Error("convert: --type must be f32, bf16, f16, q8_0 or q4_0 (got '" + t + "')");
}

void run_convert(const ConvertOptions& o) {
  GgufModelOptions g;
  g.type = parse_type(o.type);
  g.name = o.name.empty() ? std::filesystem::path(o.in).stem().string() : o.name;
  if (!o.vocab.empty()) {
    const Tokenizer tok = Tokenizer::load_world(o.vocab);
    g.tokens.resize(tok.vocab_size());
    for (size_t i = 1; i < g.tokens.size(); ++i) g.tokens[i] = tok.token_bytes(int32_t(i));
  }
  const auto t0 = std::chrono::steady_clock::now();
  const TensorFile src = read_tensor_file(o.in);
  const GgufFile out = rwkv7_to_gguf(src, g);
  write_gguf_raw(o.out, out);
  size_t bytes = 0;
  for (const GgufTensor& t : out.tensors) bytes += t.nbytes();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "convert: %s → %s (%s, %zu tensors, %.1f MB of weights) in %.2f s\n",
               o.in.c_str(), o.out.c_str(), o.type.c_str(), out.tensors.size(), bytes / 1e6, secs);
}

}  // namespace

void register_convert(CLI::App& app) {
  auto o = std::make_shared<ConvertOptions>();
  CLI::App* cmd = app.add_subcommand(
      "convert", "Convert a checkpoint (.pth, safetensors, GGUF) to GGUF (llama.cpp rwkv7 layout)");
  cmd->add_option("IN", o->in, "Input checkpoint")->required();
  cmd->add_option("OUT", o->out, "Output .gguf file")->required();
  cmd->add_option("--type", o->type,
                  "Type of the big matrices: f32, bf16, f16, q8_0, q4_0 (small tensors stay f32)")
      ->capture_default_str();
  cmd->add_option("--vocab", o->vocab, "World vocabulary file to embed (tokenizer.ggml.*)");
  cmd->add_option("--name", o->name, "general.name (default: the input file's stem)");
  cmd->callback([o] { run_convert(*o); });
}

}  // namespace rwkv7::cli
