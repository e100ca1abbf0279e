#include "core/tensor.hpp"

#include "core/checked.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {

int64_t shape_numel(const Shape& s) {
  uint64_t n = 0;
  if (!checked::numel(s, &n)) {
    throw Error("shape " + shape_str(s) + " is negative or has too many elements");
  }
  return int64_t(n);
}

bool split_indexed_name(std::string_view name, std::string_view prefix, std::string_view* digits,
                        std::string_view* rest) {
  if (name.substr(0, prefix.size()) != prefix) return false;
  size_t k = prefix.size();
  while (k < name.size() && name[k] >= '0' && name[k] <= '9') ++k;
  if (k == prefix.size() || k >= name.size() || name[k] != '.') return false;
  *digits = name.substr(prefix.size(), k - prefix.size());
  *rest = name.substr(k + 1);
  return true;
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

bool TensorFile::in_mapping(const void* p, size_t n) const {
  const auto begin = reinterpret_cast<uintptr_t>(mapping), at = reinterpret_cast<uintptr_t>(p);
  return mapping && at >= begin && at - begin <= mapping_size && n <= mapping_size - (at - begin);
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
