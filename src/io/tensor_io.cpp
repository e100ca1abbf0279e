// Format sniffing for read_tensor_file.
#include "io/tensor_io.hpp"

#include <cstring>

#include "io/gguf.hpp"
#include "io/io_internal.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {

namespace {

TensorFile read_mapped(std::shared_ptr<const MappedFile> file, const std::string& path) {
  const unsigned char* p = file->data();
  const size_t n = file->size();
  if (n == 0) throw Error(path + ": file is empty");
  if (n >= 4 && (std::memcmp(p, "PK\x03\x04", 4) == 0 || std::memcmp(p, "PK\x05\x06", 4) == 0)) {
    return io::read_pth_mapped(std::move(file));
  }
  if (n >= 4 && std::memcmp(p, "GGUF", 4) == 0) return read_gguf(std::move(file));
  if (n >= 9 && p[8] == '{') return io::read_safetensors_mapped(std::move(file));
  throw Error(path + ": unknown tensor file format (not a .pth zip, safetensors or GGUF file)");
}

}  // namespace

TensorFile read_tensor_file(const std::string& path) {
  auto file = MappedFile::open(path);
  const unsigned char* mapping = file->data();
  const size_t mapping_size = file->size();
  TensorFile out = read_mapped(std::move(file), path);  // `out.owners` keeps the mapping alive
  out.mapping = mapping;
  out.mapping_size = mapping_size;
  return out;
}

}  // namespace rwkv7
