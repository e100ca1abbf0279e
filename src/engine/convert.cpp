// rwkv7/convert.hpp over the io layer's GGUF writer and llama.cpp mapping (io/gguf.hpp).
#include "rwkv7/convert.hpp"

#include <filesystem>

#include "io/gguf.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7 {
namespace {

DType parse_type(const std::string& t) {
  if (t == "f32") return DType::F32;
  if (t == "bf16") return DType::BF16;
  if (t == "f16") return DType::F16;
  if (t == "q8_0") return DType::Q8_0;
  if (t == "q4_0") return DType::Q4_0;
  throw Error("convert: --type must be f32, bf16, f16, q8_0 or q4_0 (got '" + t + "')");
}

}  // namespace

ConvertResult convert_to_gguf(const std::string& in, const std::string& out,
                              const ConvertOptions& opts) {
  GgufModelOptions g;
  g.type = parse_type(opts.type);
  g.name = opts.name.empty() ? std::filesystem::path(in).stem().string() : opts.name;
  if (!opts.vocab.empty()) {
    const Tokenizer tok = Tokenizer::load_world(opts.vocab);
    g.tokens.resize(tok.vocab_size());
    for (size_t i = 1; i < g.tokens.size(); ++i) g.tokens[i] = tok.token_bytes(int32_t(i));
  }
  const TensorFile src = read_tensor_file(in);
  const GgufFile gguf = rwkv7_to_gguf(src, g);
  write_gguf_raw(out, gguf);
  ConvertResult r;
  r.tensors = int64_t(gguf.tensors.size());
  for (const GgufTensor& t : gguf.tensors) r.weight_bytes += int64_t(t.nbytes());
  return r;
}

}  // namespace rwkv7
