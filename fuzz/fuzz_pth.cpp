// .pth checkpoints: zip container + restricted unpickler + tensor views into the storages.
#include "fuzz_util.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = rwkv7::fuzz::write_input(data, size, ".pth");
  try {
    rwkv7::TensorFile f = rwkv7::read_pth(path);
    for (const auto& [name, v] : f.tensors) {  // touch every byte the views claim
      volatile unsigned char sink = 0;
      const auto* p = static_cast<const unsigned char*>(v.data);
      for (size_t i = 0; i < v.nbytes(); ++i) sink ^= p[i];
      (void)sink;
    }
  } catch (const rwkv7::Error&) {
  }
  return 0;
}
