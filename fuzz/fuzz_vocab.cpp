// World vocabulary files (rwkv_vocab_v20230424.txt format): lines, Python literals, ids.
#include "fuzz_util.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = rwkv7::fuzz::write_input(data, size, ".txt");
  try {
    rwkv7::Tokenizer t = rwkv7::Tokenizer::load_world(path);
    const auto ids = t.encode("Hello, world\n\xe4\xbd\xa0\xe5\xa5\xbd");
    (void)t.decode(ids);
  } catch (const rwkv7::Error&) {
  }
  return 0;
}
