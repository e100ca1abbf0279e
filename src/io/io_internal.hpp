#pragma once
// Internal entry points shared by the readers (one mapping per file, sniffed once).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.hpp"
#include "core/mapped_file.hpp"
#include "core/tensor.hpp"
#include "io/tensor_io.hpp"

namespace rwkv7::io {

TensorFile read_pth_mapped(std::shared_ptr<const MappedFile> file);
TensorFile read_safetensors_mapped(std::shared_ptr<const MappedFile> file);

// Adds a view of `bytes` (already bounds-checked) to `out`: in place when aligned to the
// element size, else copied into an owned aligned buffer kept in out.owners.
void add_view(TensorFile& out, const std::string& name, DType dtype, Shape shape,
              const unsigned char* bytes);

// write_pth with the option to force zip64 records (tests exercise that path on small files).
void write_pth_impl(const std::string& path, const NamedTensors& tensors, bool force_zip64);

}  // namespace rwkv7::io
