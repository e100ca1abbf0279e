// The restricted unpickler alone (data.pkl of a .pth), on raw pickle bytes.
#include <span>

#include "fuzz_util.hpp"
#include "io/pickle.hpp"
#include "rwkv7/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto tensors =
        rwkv7::io::unpickle_state_dict(std::span<const unsigned char>(data, size), "fuzz.pkl");
    (void)tensors;
  } catch (const rwkv7::Error&) {
  }
  return 0;
}
