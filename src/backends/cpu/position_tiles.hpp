#pragma once
// How the integer panel kernels walk T positions: tiles of MR positions (the kernel's rows, a
// compile-time count so its accumulators stay in registers), then one tile of the T mod MR
// left. tile is a generic lambda, [&]<size_t R>(size_t t) { Kernel<R>(… position t …); },
// called as tile.template operator()<R>(t).
#include <cstddef>

namespace rwkv7::cpu {

template <size_t R, class Tile>
inline void remainder_tile(size_t rest, size_t t, Tile& tile) {
  if constexpr (R > 0) {
    if (rest == R) return tile.template operator()<R>(t);
    remainder_tile<R - 1>(rest, t, tile);
  }
}

template <size_t MR, class Tile>
inline void for_position_tiles(size_t T, Tile&& tile) {
  size_t t = 0;
  for (; t + MR <= T; t += MR) tile.template operator()<MR>(t);
  remainder_tile<MR - 1>(T - t, t, tile);
}

}  // namespace rwkv7::cpu
