// The World tokenizer on any text: decode(encode(x)) == x, and the streaming decoder gives back
// the same bytes; also decode of arbitrary ids (out of range must be an Error).
#include <cstring>
#include <memory>

#include "fuzz_util.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/tokenizer.hpp"

namespace {
std::unique_ptr<rwkv7::Tokenizer> tok;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* vocab = std::getenv("RWKV7_FUZZ_VOCAB");
  tok = std::make_unique<rwkv7::Tokenizer>(rwkv7::Tokenizer::load_world(
      vocab ? vocab : rwkv7::fuzz::source_path("../shared/vocab/rwkv_vocab_v20230424.txt")));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::vector<int32_t> ids = tok->encode(text);
  if (tok->decode(ids) != text) __builtin_trap();
  rwkv7::StreamDecoder dec(*tok);
  std::string streamed;
  for (int32_t id : ids) streamed += dec.push(id);
  streamed += dec.flush();
  if (streamed != text) __builtin_trap();
  // The same bytes read as ids.
  std::vector<int32_t> raw(size / 4);
  if (!raw.empty()) std::memcpy(raw.data(), data, raw.size() * 4);
  try {
    (void)tok->decode(raw);
  } catch (const rwkv7::Error&) {
  }
  return 0;
}
