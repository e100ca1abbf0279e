#include "io/zip_writer.hpp"

#include <sstream>

#include "io/io_util.hpp"
#include "io/zip_reader.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::io {

namespace {
constexpr uint64_t k32 = 0xFFFFFFFFu;
constexpr uint16_t kDosTime = 0;
constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;  // 1980-01-01
constexpr uint64_t kAlign = 64;
}  // namespace

void ZipWriter::write(const void* p, uint64_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {  // ostream::write takes a streamsize; stay well below its limit
    const uint64_t chunk = n < (uint64_t(1) << 30) ? n : (uint64_t(1) << 30);
    out_.write(c, std::streamsize(chunk));
    c += chunk;
    n -= chunk;
  }
}

void ZipWriter::add(const std::string& name, const void* data, uint64_t size) {
  if (name.size() > 0xFFFF) throw Error("zip entry name too long: " + name.substr(0, 64));
  Entry e{name, pos_, size, 0};
  // CRC in 1 GiB pieces.
  const auto* p = static_cast<const unsigned char*>(data);
  for (uint64_t done = 0; done < size;) {
    const uint64_t chunk = std::min<uint64_t>(size - done, uint64_t(1) << 30);
    e.crc = crc32_update(e.crc, p + done, size_t(chunk));
    done += chunk;
  }
  const bool z64 = force_zip64_ || size >= k32;
  std::ostringstream h;
  put32(h, 0x04034b50);
  put16(h, z64 ? 45 : 20);  // version needed
  put16(h, 1 << 11);        // UTF-8 names
  put16(h, 0);              // stored
  put16(h, kDosTime);
  put16(h, kDosDate);
  put32(h, e.crc);
  put32(h, uint32_t(z64 ? k32 : size));
  put32(h, uint32_t(z64 ? k32 : size));
  put16(h, uint16_t(name.size()));
  const uint64_t z64_len = z64 ? 20 : 0;
  uint64_t start = pos_ + 30 + name.size() + z64_len + 4;  // data start with empty padding
  const uint64_t pad = (kAlign - start % kAlign) % kAlign;
  put16(h, uint16_t(z64_len + 4 + pad));
  h.write(name.data(), std::streamsize(name.size()));
  if (z64) {
    put16(h, 0x0001);
    put16(h, 16);
    put64(h, size);
    put64(h, size);
  }
  put16(h, 0x4246);  // "FB": padding, as torch writes
  put16(h, uint16_t(pad));
  for (uint64_t i = 0; i < pad; ++i) h.put('Z');
  const std::string header = h.str();
  write(header.data(), header.size());
  pos_ += header.size();
  write(data, size);
  pos_ += size;
  entries_.push_back(std::move(e));
}

void ZipWriter::finish() {
  const uint64_t cd_offset = pos_;
  std::ostringstream c;
  for (const Entry& e : entries_) {
    const bool big_size = force_zip64_ || e.size >= k32;
    const bool big_off = force_zip64_ || e.offset >= k32;
    const uint16_t extra = uint16_t((big_size ? 16 : 0) + (big_off ? 8 : 0));
    put32(c, 0x02014b50);
    put16(c, 0x031e);  // made by: unix, 3.0
    put16(c, (big_size || big_off) ? 45 : 20);
    put16(c, 1 << 11);
    put16(c, 0);
    put16(c, kDosTime);
    put16(c, kDosDate);
    put32(c, e.crc);
    put32(c, uint32_t(big_size ? k32 : e.size));
    put32(c, uint32_t(big_size ? k32 : e.size));
    put16(c, uint16_t(e.name.size()));
    put16(c, extra ? uint16_t(extra + 4) : 0);
    put16(c, 0);  // comment
    put16(c, 0);  // disk
    put16(c, 0);  // internal attributes
    put32(c, 0100644u << 16);
    put32(c, uint32_t(big_off ? k32 : e.offset));
    c.write(e.name.data(), std::streamsize(e.name.size()));
    if (extra) {
      put16(c, 0x0001);
      put16(c, extra);
      if (big_size) {
        put64(c, e.size);
        put64(c, e.size);
      }
      if (big_off) put64(c, e.offset);
    }
  }
  const std::string cd = c.str();
  write(cd.data(), cd.size());
  pos_ += cd.size();
  const uint64_t count = entries_.size();
  const bool z64 = force_zip64_ || count >= 0xFFFF || cd_offset >= k32 || cd.size() >= k32;
  std::ostringstream t;
  if (z64) {
    const uint64_t rec = pos_;
    put32(t, 0x06064b50);
    put64(t, 44);
    put16(t, 0x031e);
    put16(t, 45);
    put32(t, 0);
    put32(t, 0);
    put64(t, count);
    put64(t, count);
    put64(t, cd.size());
    put64(t, cd_offset);
    put32(t, 0x07064b50);
    put32(t, 0);
    put64(t, rec);
    put32(t, 1);
  }
  put32(t, 0x06054b50);
  put16(t, 0);
  put16(t, 0);
  put16(t, uint16_t(z64 && count >= 0xFFFF ? 0xFFFF : count));
  put16(t, uint16_t(z64 && count >= 0xFFFF ? 0xFFFF : count));
  put32(t, uint32_t(z64 && cd.size() >= k32 ? k32 : cd.size()));
  put32(t, uint32_t(z64 ? k32 : cd_offset));
  put16(t, 0);
  const std::string tail = t.str();
  write(tail.data(), tail.size());
  pos_ += tail.size();
}

}  // namespace rwkv7::io
