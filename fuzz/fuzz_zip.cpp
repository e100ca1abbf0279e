// The zip reader (the .pth container): directory, local headers, every entry's bytes.
#include "core/mapped_file.hpp"
#include "fuzz_util.hpp"
#include "io/zip_reader.hpp"
#include "rwkv7/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = rwkv7::fuzz::write_input(data, size, ".zip");
  try {
    rwkv7::io::ZipReader zip(rwkv7::MappedFile::open(path));
    for (const auto& e : zip.entries()) {
      if (zip.find(e.name) == nullptr) __builtin_trap();
      const auto bytes = zip.data(e);
      (void)rwkv7::io::crc32_update(0, bytes.data(), bytes.size());
    }
  } catch (const rwkv7::Error&) {
  }
  return 0;
}
