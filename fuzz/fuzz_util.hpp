#pragma once
// Shared by the libFuzzer harnesses: the readers take paths (as users give them), so each input
// is written to one per-process file in a RAM-backed folder. A harness accepts rwkv7::Error
// (the documented outcome of bad input); any other exception, crash, leak, sanitizer report,
// timeout or out-of-memory is a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace rwkv7::fuzz {

inline const std::string& input_path(const char* ext) {
  static const std::string path = [ext] {
    const char* dir = std::getenv("RWKV7_FUZZ_TMP");
    std::string d = dir ? dir : (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    return d + "/rwkv7-fuzz-" + std::to_string(getpid()) + ext;
  }();
  return path;
}

// Writes the input to input_path(ext) and returns that path.
inline const std::string& write_input(const uint8_t* data, size_t size, const char* ext) {
  const std::string& path = input_path(ext);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

// The repository root (compiled in), for models and vocabularies the harnesses need.
inline std::string source_path(const std::string& rel) {
  return std::string(RWKV7_SOURCE_DIR) + "/" + rel;
}

}  // namespace rwkv7::fuzz
