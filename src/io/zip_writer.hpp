#pragma once
// Streams a zip archive of STORED entries (the `.pth` container) into an ostream: correct
// CRC-32s, zip64 fields where sizes or offsets need them, and each entry's data aligned to
// 64 bytes with a padding extra field in the local header (as torch's writer does).
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace rwkv7::io {

class ZipWriter {
 public:
  // force_zip64: write zip64 fields even for small archives (tests exercise that path).
  explicit ZipWriter(std::ostream& out, bool force_zip64 = false)
      : out_(out), force_zip64_(force_zip64) {}
  void add(const std::string& name, const void* data, uint64_t size);
  void finish();  // central directory + end records

 private:
  struct Entry {
    std::string name;
    uint64_t offset;
    uint64_t size;
    uint32_t crc;
  };
  void write(const void* p, uint64_t n);

  std::ostream& out_;
  bool force_zip64_;
  uint64_t pos_ = 0;
  std::vector<Entry> entries_;
};

}  // namespace rwkv7::io
