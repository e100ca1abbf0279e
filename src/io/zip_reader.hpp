#pragma once
// Read-only view of a zip archive held in a memory mapping (the `.pth` container). Parses the
// (zip64) end-of-central-directory, the central directory and each local header; every offset
// and size is checked against the file size. Entry data is returned as a view into the mapping.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/mapped_file.hpp"

namespace rwkv7::io {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 = stored
  uint16_t flags = 0;
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;           // uncompressed
  uint64_t header_offset = 0;  // local header
  uint64_t data_offset = 0;    // first byte of the (stored) data
};

class ZipReader {
 public:
  // Throws Error("<path>: ...") on anything malformed.
  explicit ZipReader(std::shared_ptr<const MappedFile> file);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;
  // The bytes of a stored entry (throws for compressed or encrypted entries).
  std::span<const unsigned char> data(const ZipEntry& e) const;
  const std::string& path() const { return file_->path(); }
  const std::shared_ptr<const MappedFile>& file() const { return file_; }

 private:
  void parse();
  [[noreturn]] void fail(const std::string& what) const;

  std::shared_ptr<const MappedFile> file_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
};

// CRC-32 (IEEE, as zip uses). `crc` is the running value (0 to start).
uint32_t crc32_update(uint32_t crc, const void* data, size_t n);

}  // namespace rwkv7::io
