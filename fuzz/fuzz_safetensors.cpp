// safetensors: header length, JSON header (depth, duplicates), offsets, views.
#include "fuzz_util.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = rwkv7::fuzz::write_input(data, size, ".safetensors");
  try {
    rwkv7::TensorFile f = rwkv7::read_safetensors(path);
    for (const auto& [name, v] : f.tensors) {
      volatile unsigned char sink = 0;
      const auto* p = static_cast<const unsigned char*>(v.data);
      for (size_t i = 0; i < v.nbytes(); ++i) sink ^= p[i];
      (void)sink;
    }
  } catch (const rwkv7::Error&) {
  }
  return 0;
}
