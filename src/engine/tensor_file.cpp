// rwkv7/tensor_file.hpp over the io layer's safetensors writer.
#include "rwkv7/tensor_file.hpp"

#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {

void write_arrays_safetensors(const std::string& path, const std::vector<ArrayView>& arrays,
                              const std::map<std::string, std::string>& metadata) {
  NamedTensors tensors;
  for (const ArrayView& a : arrays) {
    if ((a.f32 == nullptr) == (a.i32 == nullptr))
      throw Error(path + ": array '" + a.name + "' needs exactly one of f32 and i32 data");
    for (int64_t d : a.shape)
      if (d < 0) throw Error(path + ": array '" + a.name + "' has a negative dimension");
    tensors.emplace_back(a.name, a.f32 ? TensorView{DType::F32, a.shape, a.f32}
                                       : TensorView{DType::I32, a.shape, a.i32});
  }
  write_safetensors(path, tensors, metadata);
}

}  // namespace rwkv7
