#include "serve/cache_key_file.hpp"

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/atomic_write.hpp"
#include "core/checked.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::serve {
namespace {

constexpr char kMagic[8] = {'R', 'W', 'K', 'V', '7', 'K', 'E', 'Y'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeader = 8 + 4 + 8 + 8;

template <class T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);  // x86/ARM: little-endian
}
template <class T>
T get(const std::string& in, size_t at) {
  T v;
  std::memcpy(&v, in.data() + at, sizeof v);
  return v;
}

}  // namespace

uint64_t fnv1a64(const void* data, size_t bytes, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

void write_cache_key(const std::string& path, const CacheKey& key) {
  std::string out(kMagic, 8);
  put(out, kVersion);
  put(out, uint64_t(key.tokens.size()));
  put(out, uint64_t(key.logits.size()));
  if (!key.tokens.empty())
    out.append(reinterpret_cast<const char*>(key.tokens.data()), key.tokens.size() * 4);
  if (!key.logits.empty())
    out.append(reinterpret_cast<const char*>(key.logits.data()), key.logits.size() * 4);
  put(out, fnv1a64(out.data(), out.size()));
  write_file_atomic(path,
                    [&](std::ostream& o) { o.write(out.data(), std::streamsize(out.size())); });
}

CacheKey read_cache_key(const std::string& path, int64_t vocab) {
  auto bad = [&](const std::string& why) { return Error("cache key file " + path + ": " + why); };
  std::ifstream f(path, std::ios::binary);
  if (!f) throw bad("cannot open");
  f.seekg(0, std::ios::end);
  const auto size = static_cast<uint64_t>(f.tellg());
  // Keys of a few million tokens at most: refuse anything larger before reading it.
  if (size > (uint64_t(1) << 31)) throw bad("too large (" + std::to_string(size) + " bytes)");
  if (size < kHeader + 8) throw bad("too short");
  std::string in(size, '\0');
  f.seekg(0);
  if (!f.read(in.data(), std::streamsize(size))) throw bad("read failed");
  if (std::memcmp(in.data(), kMagic, 8) != 0) throw bad("not a cache key file (bad magic)");
  if (get<uint32_t>(in, 8) != kVersion) throw bad("unknown version");
  const uint64_t n_tokens = get<uint64_t>(in, 12), n_logits = get<uint64_t>(in, 20);
  uint64_t payload = 0;
  if (n_tokens > size || n_logits > size || !checked::mul(n_tokens + n_logits, 4, &payload) ||
      kHeader + payload + 8 != size)
    throw bad("sizes do not match the file size");
  if (get<uint64_t>(in, size - 8) != fnv1a64(in.data(), size - 8))
    throw bad("checksum mismatch (truncated or corrupted)");
  if (n_logits != 0 && int64_t(n_logits) != vocab)
    throw bad("holds " + std::to_string(n_logits) + " logits, the model has a vocabulary of " +
              std::to_string(vocab));
  CacheKey key;
  key.tokens.resize(n_tokens);
  key.logits.resize(n_logits);
  if (n_tokens) std::memcpy(key.tokens.data(), in.data() + kHeader, n_tokens * 4);
  if (n_logits) std::memcpy(key.logits.data(), in.data() + kHeader + n_tokens * 4, n_logits * 4);
  for (size_t i = 0; i < key.tokens.size(); ++i) {
    const int32_t t = key.tokens[i];
    if (i == 0 && t < 0) continue;  // the namespace of a start state (rwkv7/serve.hpp)
    if (t < 0 || t >= vocab) throw bad("token " + std::to_string(t) + " outside the vocabulary");
  }
  for (float x : key.logits)
    if (!std::isfinite(x)) throw bad("non-finite logit");
  return key;
}

}  // namespace rwkv7::serve
