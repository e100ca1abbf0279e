#include "model/dropout.hpp"

namespace rwkv7 {
namespace {

// SplitMix64's finaliser: a well-mixed 64-bit hash of a 64-bit key.
uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The key of (site, layer) under the seed, mixed once per call.
uint64_t site_key(uint64_t seed, uint32_t site, int64_t layer) {
  return mix(seed ^ mix((uint64_t(site) << 32) ^ uint64_t(layer)));
}

// Value (b, t, c) is kept when its hash, as a uniform number in [0, 1), is at least p.
bool kept(uint64_t key, uint64_t index, float p) {
  return double(mix(key ^ index) >> 11) * 0x1.0p-53 >= double(p);
}

}  // namespace

uint64_t Dropout::step_seed(uint64_t run_seed, int64_t step, int64_t micro) {
  return mix(mix(mix(run_seed) ^ uint64_t(step)) ^ uint64_t(micro));
}

bool Dropout::keeps(Site site, int64_t layer, int64_t r, int64_t c, int64_t C) const {
  const int64_t b = first_row + r / positions, t = first + r % positions;
  return kept(site_key(seed, site, layer), uint64_t((b * row_length + t) * C + c), p);
}

void Dropout::apply(float* x, int64_t R, int64_t C, Site site, int64_t layer) const {
  if (!active()) return;
  const float scale = 1.0f / (1.0f - p);
  const uint64_t key = site_key(seed, site, layer);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t b = first_row + r / positions, t = first + r % positions;
    const uint64_t base = uint64_t((b * row_length + t) * C);
    float* row = x + r * C;
    for (int64_t c = 0; c < C; ++c)
      row[c] = kept(key, base + uint64_t(c), p) ? row[c] * scale : 0.0f;
  }
}

}  // namespace rwkv7
