#pragma once
// Overflow-checked size arithmetic: the one helper every reader uses for sizes that come from
// a file (shape products, byte counts, offsets), so no product or sum read from input can
// wrap. Each returns false (or throws, for the *_or_throw forms) instead of overflowing.
#include <cstdint>
#include <string>
#include <vector>

namespace rwkv7::checked {

// *out = a + b; false on overflow.
inline bool add(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}
// *out = a * b; false on overflow.
inline bool mul(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}
// a + b <= limit, without overflow.
inline bool fits(uint64_t a, uint64_t b, uint64_t limit) { return a <= limit && b <= limit - a; }

// Product of the dimensions, false when a dimension is negative or the product of ALL the
// dimensions (the nonzero ones too, so a zero dimension cannot hide a huge other one)
// exceeds `limit`.
inline bool numel(const std::vector<int64_t>& shape, uint64_t* out,
                  uint64_t limit = uint64_t(INT64_MAX)) {
  uint64_t n = 1, nonzero = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d == 0) {
      n = 0;
      continue;
    }
    if (!mul(nonzero, uint64_t(d), &nonzero) || nonzero > limit) return false;
  }
  *out = n == 0 ? 0 : nonzero;
  return true;
}

}  // namespace rwkv7::checked
