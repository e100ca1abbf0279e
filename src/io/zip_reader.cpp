#include "io/zip_reader.hpp"

#include <array>

#include "io/io_util.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::io {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kEocdSize = 22;
constexpr size_t kCentralSize = 46;
constexpr size_t kLocalSize = 30;

// Slice-by-8 tables for CRC-32.
struct CrcTables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  CrcTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    }
  }
};

const CrcTables& crc_tables() {
  static const CrcTables tables;
  return tables;
}

}  // namespace

uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
  const auto& t = crc_tables().t;
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
  while (n >= 8) {
    uint32_t lo = c ^ le32(p);
    uint32_t hi = le32(p + 4);
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
        t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return ~c;
}

ZipReader::ZipReader(std::shared_ptr<const MappedFile> file) : file_(std::move(file)) { parse(); }

void ZipReader::fail(const std::string& what) const { throw Error(file_->path() + ": " + what); }

void ZipReader::parse() {
  const unsigned char* base = file_->data();
  const uint64_t size = file_->size();
  if (size == 0) fail("file is empty");
  if (size < kEocdSize) fail("zip archive is truncated (" + std::to_string(size) + " bytes)");

  // End of central directory: search backwards (comment up to 64 KiB).
  uint64_t eocd = UINT64_MAX;
  const uint64_t lowest = size - kEocdSize > 0xFFFF ? size - kEocdSize - 0xFFFF : 0;
  for (uint64_t pos = size - kEocdSize + 1; pos-- > lowest;) {
    if (le32(base + pos) == kEocdSig && pos + kEocdSize + le16(base + pos + 20) <= size) {
      eocd = pos;
      break;
    }
  }
  if (eocd == UINT64_MAX) {
    fail("not a complete zip archive (no end-of-central-directory record; truncated?)");
  }
  const unsigned char* e = base + eocd;
  uint64_t disk = le16(e + 4), cd_disk = le16(e + 6);
  uint64_t count = le16(e + 10);
  uint64_t cd_size = le32(e + 12);
  uint64_t cd_offset = le32(e + 16);
  if (le16(e + 8) != le16(e + 10)) fail("multi-disk zip archives are not supported");

  // Zip64 locator sits right before the EOCD.
  if (eocd >= 20 && le32(base + eocd - 20) == kZip64LocatorSig) {
    const unsigned char* loc = base + eocd - 20;
    uint64_t rec = le64(loc + 8);
    if (!fits(rec, 56, size)) fail("zip64 end-of-central-directory offset is out of range");
    const unsigned char* z = base + rec;
    if (le32(z) != kZip64EocdSig) fail("zip64 end-of-central-directory record is corrupt");
    disk = le32(z + 16);
    cd_disk = le32(z + 20);
    if (le64(z + 24) != le64(z + 32)) fail("multi-disk zip archives are not supported");
    count = le64(z + 32);
    cd_size = le64(z + 40);
    cd_offset = le64(z + 48);
  } else if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu) {
    fail("zip64 archive without a zip64 end-of-central-directory locator (truncated?)");
  }
  if (disk != 0 || cd_disk != 0) fail("multi-disk zip archives are not supported");
  if (!fits(cd_offset, cd_size, size)) {
    fail("central directory (offset " + std::to_string(cd_offset) + ", " + std::to_string(cd_size) +
         " bytes) lies outside the file (" + std::to_string(size) + " bytes; truncated?)");
  }
  if (count > cd_size / kCentralSize) fail("central directory is too small for its entry count");

  entries_.reserve(size_t(count));
  uint64_t pos = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (!fits(pos, kCentralSize, cd_end) || le32(base + pos) != kCentralSig) {
      fail("central directory entry " + std::to_string(i) + " is corrupt");
    }
    const unsigned char* c = base + pos;
    ZipEntry ent;
    ent.flags = le16(c + 8);
    ent.method = le16(c + 10);
    ent.crc32 = le32(c + 16);
    ent.compressed_size = le32(c + 20);
    ent.size = le32(c + 24);
    const uint64_t name_len = le16(c + 28), extra_len = le16(c + 30), comment_len = le16(c + 32);
    uint64_t start_disk = le16(c + 34);
    ent.header_offset = le32(c + 42);
    if (!fits(pos + kCentralSize, name_len + extra_len + comment_len, cd_end)) {
      fail("central directory entry " + std::to_string(i) + " runs past the directory");
    }
    ent.name.assign(reinterpret_cast<const char*>(c + kCentralSize), size_t(name_len));

    // Zip64 extended information: fields present only where the 32-bit one is saturated.
    const unsigned char* x = c + kCentralSize + name_len;
    const unsigned char* x_end = x + extra_len;
    while (x_end - x >= 4) {
      const uint16_t id = le16(x), len = le16(x + 2);
      const unsigned char* d = x + 4;
      if (uint64_t(x_end - d) < len) fail("zip entry '" + ent.name + "': extra field is corrupt");
      if (id == 0x0001) {
        const unsigned char* q = d;
        auto take = [&](uint64_t* field) {
          if (d + len - q < 8) fail("zip entry '" + ent.name + "': zip64 extra field is too short");
          *field = le64(q);
          q += 8;
        };
        if (ent.size == 0xFFFFFFFFu) take(&ent.size);
        if (ent.compressed_size == 0xFFFFFFFFu) take(&ent.compressed_size);
        if (ent.header_offset == 0xFFFFFFFFu) take(&ent.header_offset);
        if (start_disk == 0xFFFF && d + len - q >= 4) start_disk = le32(q);
      }
      x = d + len;
    }
    if (start_disk != 0) fail("zip entry '" + ent.name + "' is on another disk");

    // Local header: its own name/extra lengths decide where the data begins.
    if (!fits(ent.header_offset, kLocalSize, size) || le32(base + ent.header_offset) != kLocalSig) {
      fail("zip entry '" + ent.name + "': local header is missing or out of range (truncated?)");
    }
    const unsigned char* l = base + ent.header_offset;
    const uint64_t data_start = ent.header_offset + kLocalSize + le16(l + 26) + le16(l + 28);
    if (!fits(data_start, ent.compressed_size, size)) {
      fail("zip entry '" + ent.name + "': data (" + std::to_string(ent.compressed_size) +
           " bytes at offset " + std::to_string(data_start) + ") runs past the end of the file (" +
           std::to_string(size) + " bytes; truncated?)");
    }
    ent.data_offset = data_start;
    if (!by_name_.emplace(ent.name, entries_.size()).second) {
      fail("zip entry '" + ent.name + "' appears twice");
    }
    entries_.push_back(std::move(ent));
    pos += kCentralSize + name_len + extra_len + comment_len;
  }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

std::span<const unsigned char> ZipReader::data(const ZipEntry& e) const {
  if (e.flags & 1) fail("zip entry '" + e.name + "' is encrypted, which is not supported");
  if (e.method != 0) {
    fail("zip entry '" + e.name + "' is compressed (method " + std::to_string(e.method) +
         "); only uncompressed (stored) entries are supported, as torch.save writes them");
  }
  if (e.compressed_size != e.size) {
    fail("zip entry '" + e.name + "': stored entry with differing sizes (" +
         std::to_string(e.compressed_size) + " vs " + std::to_string(e.size) + ")");
  }
  return {file_->data() + e.data_offset, size_t(e.size)};
}

}  // namespace rwkv7::io
