#include "core/tensor.hpp"

#include "rwkv7/error.hpp"

namespace rwkv7 {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

const TensorView& TensorFile::get(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw Error(path + ": tensor '" + name + "' is missing");
  return it->second;
}

void TensorFile::add(const std::string& name, const TensorView& view) {
  if (!tensors.emplace(name, view).second) {
    throw Error(path + ": tensor '" + name + "' appears twice");
  }
  order.push_back(name);
}

std::vector<float> to_f32(const TensorView& v) {
  std::vector<float> out(size_t(v.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = load_as_f32(v.dtype, v.data, i);
  return out;
}

}  // namespace rwkv7
