#pragma once
// Small helpers shared by the container readers/writers: little-endian loads from a byte
// buffer (callers check bounds first), overflow-safe arithmetic, owned aligned buffers.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <ostream>
#include <string>

#include "core/checked.hpp"

namespace rwkv7::io {

inline uint16_t le16(const unsigned char* p) { return uint16_t(p[0] | (p[1] << 8)); }
inline uint32_t le32(const unsigned char* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
inline uint64_t le64(const unsigned char* p) {
  return uint64_t(le32(p)) | (uint64_t(le32(p + 4)) << 32);
}

// Overflow-checked size arithmetic lives in core/checked.hpp; the readers' short names:
using checked::fits;  // a + b <= limit without overflow
inline bool mul_ok(uint64_t a, uint64_t b, uint64_t* out) { return checked::mul(a, b, out); }

// A 64-byte-aligned owned buffer, kept alive through TensorFile::owners.
inline std::shared_ptr<unsigned char> aligned_buffer(size_t bytes) {
  auto* p = static_cast<unsigned char*>(::operator new(bytes ? bytes : 1, std::align_val_t(64)));
  return std::shared_ptr<unsigned char>(
      p, [](unsigned char* q) { ::operator delete(q, std::align_val_t(64)); });
}

// Little-endian writers into an ostream.
inline void put16(std::ostream& o, uint16_t v) {
  unsigned char b[2] = {uint8_t(v), uint8_t(v >> 8)};
  o.write(reinterpret_cast<const char*>(b), 2);
}
inline void put32(std::ostream& o, uint32_t v) {
  put16(o, uint16_t(v));
  put16(o, uint16_t(v >> 16));
}
inline void put64(std::ostream& o, uint64_t v) {
  put32(o, uint32_t(v));
  put32(o, uint32_t(v >> 32));
}

}  // namespace rwkv7::io
