#pragma once
// The key half of a disk-tier cache entry (the state half is a state file, save_state):
// which tokens the state has read and the logits after them. Layout, little-endian:
//   "RWKV7KEY" | u32 version = 1 | u64 n_tokens | u64 n_logits | i32 tokens[n_tokens]
//   | f32 logits[n_logits] | u64 FNV-1a of everything before it
#include <cstdint>
#include <string>
#include <vector>

namespace rwkv7::serve {

struct CacheKey {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // empty: unknown
};

// Atomic (temporary file, then rename).
void write_cache_key(const std::string& path, const CacheKey& key);
// Error naming the file on anything malformed (bad magic, sizes that do not add up to the
// file's size, a checksum mismatch, tokens outside [0, vocab), non-finite logits or a logits
// count other than 0 or `vocab`).
CacheKey read_cache_key(const std::string& path, int64_t vocab);

// 64-bit FNV-1a, for the checksum and for entry file names.
uint64_t fnv1a64(const void* data, size_t bytes, uint64_t h = 0xcbf29ce484222325ull);

}  // namespace rwkv7::serve
