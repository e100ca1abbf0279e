#pragma once
// Writing named arrays (fp32 or int32) as a safetensors file, e.g. logits and a state for
// comparison with another implementation tensor by tensor.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace rwkv7 {

// A view of caller-owned data: exactly one of f32 / i32 is set, with product(shape) values.
struct ArrayView {
  std::string name;
  std::vector<int64_t> shape;  // {} = a scalar
  const float* f32 = nullptr;
  const int32_t* i32 = nullptr;
};

// Writes atomically (a temporary name, then rename); `metadata` goes to __metadata__.
void write_arrays_safetensors(const std::string& path, const std::vector<ArrayView>& arrays,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace rwkv7
