// rwkv7/convert.hpp over the io layer's GGUF writer and llama.cpp mapping (io/gguf.hpp).
#include "rwkv7/convert.hpp"

#include <filesystem>

#include "io/gguf.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/tokenizer.hpp"

namespace rwkv7 {
namespace {

// --type → the big matrices' type and whether llama-quantize's mix applies (the _M types
// and q6_k; q4_k / q5_k alone are "pure", as llama-quantize --pure).
void parse_type(const std::string& t, GgufModelOptions& g) {
  static const struct {
    const char* name;
    DType type;
    bool mix;
  } kTypes[] = {
      {"f32", DType::F32, false},   {"bf16", DType::BF16, false},     {"f16", DType::F16, false},
      {"q8_0", DType::Q8_0, false}, {"q4_0", DType::Q4_0, false},     {"q5_0", DType::Q5_0, false},
      {"q5_1", DType::Q5_1, false}, {"iq4_nl", DType::IQ4_NL, false}, {"q4_k", DType::Q4_K, false},
      {"q5_k", DType::Q5_K, false}, {"q4_k_m", DType::Q4_K, true},    {"q5_k_m", DType::Q5_K, true},
      {"q6_k", DType::Q6_K, true}};
  for (const auto& k : kTypes) {
    if (t == k.name) {
      g.type = k.type;
      g.llama_mix = k.mix;
      return;
    }
  }
  throw Error(
      "convert: --type must be f32, bf16, f16, q8_0, q4_0, q5_0, q5_1, iq4_nl, q4_k, q5_k, q4_k_m, "
      "q5_k_m or q6_k (got '" +
      t + "')");
}

}  // namespace

ConvertResult convert_to_gguf(const std::string& in, const std::string& out,
                              const ConvertOptions& opts) {
  GgufModelOptions g;
  parse_type(opts.type, g);
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
  r.has_tokenizer = gguf.find("tokenizer.ggml.model") != nullptr;
  return r;
}

}  // namespace rwkv7
