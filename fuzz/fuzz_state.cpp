// State files (safetensors + metadata) loaded against the shipped model.
#include <memory>

#include "fuzz_util.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/model.hpp"

namespace {
std::shared_ptr<const rwkv7::Model> model;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  model = rwkv7::Model::load(rwkv7::fuzz::source_path("models/rwkv7-shakespeare-L4-C128.pth"), {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = rwkv7::fuzz::write_input(data, size, ".state");
  try {
    std::string warning;
    rwkv7::State s = rwkv7::load_state(path, *model, &warning);
    (void)s;
  } catch (const rwkv7::Error&) {
  }
  return 0;
}
