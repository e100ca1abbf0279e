// The prefix state cache: longest-prefix lookups over a radix trie, logits needed for a whole
// match, the memory budget (LRU), and the disk tier across restarts, including damaged files.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "rwkv7/error.hpp"
#include "rwkv7/serve.hpp"
#include "rwkv7/state_compress.hpp"
#include "serve/cache_key_file.hpp"
#include "serve_support.hpp"
#include "temp_dir.hpp"

namespace rwkv7 {
namespace {

using testing::kShippedModel;

// A state whose contents say which prefix it belongs to (its first value = the length).
State marked(const Model& m, int64_t length) {
  State s = m.new_state();
  s.att_shift[0] = float(length);
  s.tokens_consumed = length;
  return s;
}

std::vector<int32_t> seq(int n, int32_t base = 1) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[size_t(i)] = base + (i % 200);
  return v;
}

TEST(PrefixCache, FindsTheLongestCachedPrefix) {
  auto m = Model::load(kShippedModel);
  PrefixCache cache(m, {});
  const auto a = seq(100);
  cache.insert(std::span(a).first(10), marked(*m, 10));
  cache.insert(std::span(a).first(60), marked(*m, 60));
  cache.insert(std::span(a).first(40), marked(*m, 40));  // splits the 10→60 edge
  auto hit = cache.lookup(a);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 60);
  EXPECT_EQ(hit->state.att_shift[0], 60.0f);
  EXPECT_TRUE(hit->logits.empty());
  hit = cache.lookup(std::span(a).first(50));
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 40);
  // A prompt that leaves the path after 20 tokens: the entry at 10.
  auto b = a;
  b[20] = 255;
  hit = cache.lookup(b);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 10);
  EXPECT_FALSE(cache.lookup(seq(30, 2)));  // differs at the first token
  const PrefixCacheStats st = cache.stats();
  EXPECT_EQ(st.lookups, 4);
  EXPECT_EQ(st.hits, 3);
  EXPECT_EQ(st.tokens_saved, 60 + 40 + 10);
  EXPECT_EQ(st.entries, 3);
}

TEST(PrefixCache, AWholeMatchNeedsLogits) {
  auto m = Model::load(kShippedModel);
  PrefixCache cache(m, {});
  const auto a = seq(30);
  cache.insert(std::span(a).first(20), marked(*m, 20));
  cache.insert(a, marked(*m, 30));  // no logits: nothing to sample from
  auto hit = cache.lookup(a);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 20);
  std::vector<float> logits(size_t(m->config().vocab_size), 0.5f);
  cache.insert(a, marked(*m, 30), &logits);  // the same entry, now with logits
  hit = cache.lookup(a);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 30);
  EXPECT_EQ(hit->logits, logits);
  EXPECT_EQ(cache.stats().entries, 2);
}

TEST(PrefixCache, KeepsWithinItsMemoryBudgetDroppingTheLeastRecentlyUsed) {
  auto m = Model::load(kShippedModel);
  const int64_t one = int64_t(m->new_state().bytes());
  PrefixCacheOptions o;
  o.memory_bytes = 3 * one + 3 * 2000;  // three small entries fit, not four
  PrefixCache cache(m, o);
  const auto a = seq(50), b = seq(50, 3), c = seq(50, 5), d = seq(50, 7);
  cache.insert(a, marked(*m, 50));
  cache.insert(b, marked(*m, 50));
  cache.insert(c, marked(*m, 50));
  auto b1 = b;
  b1.push_back(9);
  ASSERT_TRUE(cache.lookup(b1));  // b is now the most recent; a the least
  auto a1 = a;
  a1.push_back(9);
  cache.insert(d, marked(*m, 50));
  EXPECT_EQ(cache.stats().entries, 3);
  EXPECT_LE(cache.stats().bytes, o.memory_bytes);
  EXPECT_EQ(cache.stats().evictions, 1);
  ASSERT_TRUE(cache.lookup(b1));
  EXPECT_FALSE(cache.lookup(a1)) << "the least recently used entry should have been evicted";
}

// With memory_compression, a full memory tier compresses its cold entries (least recent
// first, never the newest) before evicting any: int8 holds four states where f32 holds
// three. A compressed entry resumes as its decompressed form; the newest stays exact.
TEST(PrefixCache, CompressesColdEntriesBeforeEvictingAny) {
  auto m = Model::load(kShippedModel);
  const int64_t one = int64_t(m->new_state().bytes());
  auto varied = [&](int64_t length) {  // values int8 rows cannot hold exactly
    State s = marked(*m, length);
    for (size_t i = 0; i < s.wkv.size(); ++i) s.wkv[i] = std::sin(float(i) * 0.37f + length);
    return s;
  };
  const std::vector<std::vector<int32_t>> keys{seq(50), seq(50, 3), seq(50, 5), seq(50, 7)};
  for (const std::string method : {"f32", "int8"}) {
    PrefixCacheOptions o;
    o.memory_bytes = 3 * one + 3 * 2000;  // three f32 entries fit, not four
    o.memory_compression.method = method;
    PrefixCache cache(m, o);
    for (size_t k = 0; k < keys.size(); ++k) cache.insert(keys[k], varied(int64_t(10 + k)));
    const PrefixCacheStats st = cache.stats();
    EXPECT_LE(st.bytes, o.memory_bytes) << method;
    auto longer = [](std::vector<int32_t> v) {
      v.push_back(9);
      return v;
    };
    if (method == "f32") {
      EXPECT_EQ(st.evictions, 1);
      EXPECT_EQ(st.compressed_entries, 0);
      EXPECT_FALSE(cache.lookup(longer(keys[0])));
      continue;
    }
    EXPECT_EQ(st.evictions, 0);
    EXPECT_EQ(st.entries, 4);
    EXPECT_GE(st.compressed_entries, 1);
    EXPECT_LE(st.compressed_entries, 3);
    auto oldest = cache.lookup(longer(keys[0]));
    ASSERT_TRUE(oldest);
    const State want = decompress_state(compress_state(varied(10), o.memory_compression));
    EXPECT_EQ(oldest->state.wkv, want.wkv);
    EXPECT_NE(oldest->state.wkv, varied(10).wkv) << "int8 should have rounded something";
    auto newest = cache.lookup(longer(keys[3]));
    ASSERT_TRUE(newest);
    EXPECT_EQ(newest->state.wkv, varied(13).wkv);
  }
}

TEST(PrefixCache, OffMeansNothingIsKept) {
  auto m = Model::load(kShippedModel);
  PrefixCacheOptions o;
  o.memory_bytes = 0;
  PrefixCache cache(m, o);
  const auto a = seq(10);
  cache.insert(a, marked(*m, 10));
  auto a1 = a;
  a1.push_back(1);
  EXPECT_FALSE(cache.lookup(a1));
  EXPECT_FALSE(cache.enabled());
}

// Keys of requests from a start state begin with its (negative) namespace: they survive a
// restart like any other, and a zero-state key with the same tokens does not reach them.
TEST(PrefixCache, StartStateNamespacesSurviveARestartApartFromTheZeroState) {
  auto m = Model::load(kShippedModel);
  testing::TempDir tmp;
  PrefixCacheOptions o;
  o.disk_dir = tmp.path().string();
  const auto tokens = seq(30);
  std::vector<int32_t> spaced{-12345};
  spaced.insert(spaced.end(), tokens.begin(), tokens.end());
  {
    PrefixCache cache(m, o);
    cache.insert(spaced, marked(*m, 30));
    cache.persist();
  }
  PrefixCache cache(m, o);
  EXPECT_EQ(cache.stats().disk_entries, 1);
  std::vector<int32_t> longer = spaced;
  longer.push_back(7);
  auto hit = cache.lookup(longer);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 31);
  EXPECT_EQ(hit->state.att_shift[0], 30.0f);
  std::vector<int32_t> plain = tokens;
  plain.push_back(7);
  EXPECT_FALSE(cache.lookup(plain));
}

TEST(PrefixCache, DiskTierSurvivesARestartAndDropsDamagedFiles) {
  auto m = Model::load(kShippedModel);
  testing::TempDir tmp;
  PrefixCacheOptions o;
  o.disk_dir = tmp.path().string();
  const auto a = seq(80), b = seq(40, 3);
  std::vector<float> logits(size_t(m->config().vocab_size));
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(i) * 0.25f;
  {
    PrefixCache cache(m, o);
    cache.insert(a, marked(*m, 80), &logits);
    cache.insert(b, marked(*m, 40));
    cache.persist();
    EXPECT_EQ(cache.stats().disk_entries, 2);
  }
  std::filesystem::path folder;
  for (auto& e : std::filesystem::directory_iterator(tmp.path())) folder = e.path();
  ASSERT_FALSE(folder.empty());
  int keys = 0;
  for (auto& e : std::filesystem::directory_iterator(folder))
    keys += e.path().extension() == ".key";
  EXPECT_EQ(keys, 2);
  {
    PrefixCache cache(m, o);  // a restart: the index is read from disk
    EXPECT_EQ(cache.stats().disk_entries, 2);
    auto hit = cache.lookup(a);
    ASSERT_TRUE(hit);
    EXPECT_EQ(hit->length, 80);
    EXPECT_EQ(hit->state.att_shift[0], 80.0f);
    EXPECT_EQ(hit->logits, logits);
    EXPECT_EQ(cache.stats().disk_hits, 1);
  }
  // Damage one key file (flip a byte of its tokens): the restart drops it and keeps the other.
  for (auto& e : std::filesystem::directory_iterator(folder)) {
    if (e.path().extension() != ".key") continue;
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(30);
    f.put(char(0x7f));
    break;
  }
  PrefixCache cache(m, o);
  EXPECT_EQ(cache.stats().disk_entries, 1);
}

// States computed with bf16 products (LoadOptions::precision) are kept apart on disk: a restart
// with the other precision resumes from none of them.
TEST(PrefixCache, DiskTierKeepsBf16ProductStatesApart) {
  LoadOptions bf16;
  bf16.precision = "bf16";
  auto m16 = Model::load(kShippedModel, bf16);
  if (m16->product_precision() != "bf16")
    GTEST_SKIP() << "no AVX512_BF16 here: --precision bf16 runs the fp32 products";
  auto m32 = Model::load(kShippedModel);
  testing::TempDir tmp;
  PrefixCacheOptions o;
  o.disk_dir = tmp.path().string();
  const auto a = seq(50);
  {
    PrefixCache cache(m16, o);
    cache.insert(a, marked(*m16, 50));
    cache.persist();
    EXPECT_EQ(cache.stats().disk_entries, 1);
  }
  EXPECT_EQ(PrefixCache(m32, o).stats().disk_entries, 0) << "fp32 products resumed bf16 states";
  PrefixCache again(m16, o);
  EXPECT_EQ(again.stats().disk_entries, 1);
  auto hit = again.lookup(seq(60));  // a longer prompt resumes at the 50 (a whole match needs
  ASSERT_TRUE(hit);                  // logits, which this entry has not)
  EXPECT_EQ(hit->length, 50);
}

TEST(PrefixCache, DiskTierKeepsStatesCompressedWhenAsked) {
  auto m = Model::load(kShippedModel);
  testing::TempDir tmp;
  PrefixCacheOptions o;
  o.disk_dir = tmp.path().string();
  o.disk_compression.method = "int8";
  const auto a = seq(50);
  State s = m->new_state();
  std::vector<int32_t> text(a.begin(), a.end());
  m->forward(text, s, Logits::None);
  {
    PrefixCache cache(m, o);
    cache.insert(a, s);
    cache.persist();
  }
  std::filesystem::path state_file;
  for (auto& e : std::filesystem::recursive_directory_iterator(tmp.path()))
    if (e.path().extension() == ".state") state_file = e.path();
  ASSERT_FALSE(state_file.empty());
  EXPECT_EQ(read_state_file(state_file.string()).method, "int8");
  EXPECT_LT(std::filesystem::file_size(state_file), s.bytes() / 3);
  PrefixCache cache(m, o);
  auto longer = a;
  longer.push_back(7);  // a hit at the full length needs logits; one token more does not
  auto hit = cache.lookup(longer);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 50);
  CompressOptions c;
  c.method = "int8";
  EXPECT_EQ(hit->state.wkv, decompress_state(compress_state(s, c)).wkv);
  o.disk_compression.method = "zip";
  EXPECT_THROW(PrefixCache(m, o), Error);
}

TEST(PrefixCache, KeyFilesRefuseWhatTheyDoNotHold) {
  testing::TempDir tmp;
  const std::string path = (tmp.path() / "k.key").string();
  serve::write_cache_key(path, {{1, 2, 3}, {}});
  EXPECT_EQ(serve::read_cache_key(path, 256).tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_THROW(serve::read_cache_key(path, 3), Error);  // token 3 outside a vocabulary of 3
  serve::write_cache_key(path, {{1}, {0.5f, 1.5f}});
  EXPECT_THROW(serve::read_cache_key(path, 256), Error);  // 2 logits for 256 tokens
  std::ofstream(path, std::ios::binary | std::ios::trunc) << "RWKV7KEY garbage";
  EXPECT_THROW(serve::read_cache_key(path, 256), Error);
}

}  // namespace
}  // namespace rwkv7
