#pragma once
// Reading and writing named-tensor containers: PyTorch `.pth` (zip + pickle) and safetensors.
// Readers map the file and view tensors in place (no copy) when the data is aligned to the
// element size; otherwise they copy into an owned aligned buffer. Every error names the file,
// the tensor when there is one, and the problem; none crashes on hostile input.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.hpp"

namespace rwkv7 {

using NamedTensors = std::vector<std::pair<std::string, TensorView>>;
using Metadata = std::map<std::string, std::string>;

// Official `.pth`: zip (STORED entries, zip64), restricted unpickler accepting only
// collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.{Float,BFloat16,Half}Storage
// (plus the few others SPEC §2 allows); anything else is refused with a clear error.
TensorFile read_pth(const std::string& path);

// safetensors (F32/F16/BF16/I32/I64/U8/I8), `__metadata__` into TensorFile::metadata.
TensorFile read_safetensors(const std::string& path);

// The same over bytes in memory; `name` stands for the file in errors.
TensorFile read_safetensors_bytes(std::shared_ptr<const std::string> bytes,
                                  const std::string& name);

// Picks the reader from the file's first bytes (zip magic → pth, else safetensors).
TensorFile read_tensor_file(const std::string& path);

// Writes atomically (temporary file + rename). Tensors in the given order.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const Metadata& metadata = {});

// The bytes write_safetensors would write (`name` for errors).
std::string safetensors_bytes(const NamedTensors& tensors, const Metadata& metadata,
                              const std::string& name);

// Writes a `.pth` that torch.load(path, weights_only=True) reads as an OrderedDict of
// contiguous tensors (f32/bf16/f16). Atomic.
void write_pth(const std::string& path, const NamedTensors& tensors);

}  // namespace rwkv7
