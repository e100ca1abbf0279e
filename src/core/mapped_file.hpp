#pragma once
// A read-only memory mapping of a whole file. Weights are viewed in place, never copied.
#include <cstddef>
#include <memory>
#include <string>

namespace rwkv7 {

class MappedFile {
 public:
  // Throws Error naming the path when it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const unsigned char* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace rwkv7
