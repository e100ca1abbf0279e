#include "rwkv7/tokenizer.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <unordered_map>

#include "../test_support.hpp"
#include "engine/tokenizer_literal.hpp"
#include "rwkv7/error.hpp"

namespace {

using rwkv7::Error;
using rwkv7::StreamDecoder;
using rwkv7::Tokenizer;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// The world tokenizer is loaded once for all tests (about 65k tokens).
const Tokenizer& world(const std::string& path) {
  static Tokenizer tok = Tokenizer::load_world(path);
  return tok;
}

std::string temp_vocab(const std::string& name, const std::string& content) {
  auto p = std::filesystem::temp_directory_path() /
           ("rwkv7_tok_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(p, std::ios::binary) << content;
  return p.string();
}

// A small valid vocabulary: the 256 bytes plus the given extra lines.
std::string small_vocab(const std::string& extra) {
  std::string s;
  char buf[64];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof buf, "%d b'\\x%02x' 1\n", b + 1, b);
    s += buf;
  }
  return s + extra;
}

TEST(TokenizerLiteral, Escapes) {
  using rwkv7::detail::parse_python_literal;
  const std::string w = "test:1";
  EXPECT_EQ(parse_python_literal("'\\t\\t'", w), "\t\t");
  EXPECT_EQ(parse_python_literal("b'\\x80'", w), "\x80");
  EXPECT_EQ(parse_python_literal("\"'\"", w), "'");
  EXPECT_EQ(parse_python_literal("'\\''", w), "'");
  EXPECT_EQ(parse_python_literal("'\"'", w), "\"");
  EXPECT_EQ(parse_python_literal("'\\\\'", w), "\\");
  EXPECT_EQ(parse_python_literal("'\\n\\r\\a\\b\\f\\v'", w), "\n\r\a\b\f\v");
  EXPECT_EQ(parse_python_literal("'\\x00'", w), std::string(1, '\0'));
  EXPECT_EQ(parse_python_literal("'\\0'", w), std::string(1, '\0'));
  EXPECT_EQ(parse_python_literal("b'\\101\\7'", w), "A\x07");
  // \xNN in a str literal is a code point, stored as UTF-8.
  EXPECT_EQ(parse_python_literal("'\\xe9'", w), "\xc3\xa9");
  EXPECT_EQ(parse_python_literal("'\\u2002'", w), "\xe2\x80\x82");
  EXPECT_EQ(parse_python_literal("'\\U0001F9A2'", w), "\xf0\x9f\xa6\xa2");
  EXPECT_EQ(parse_python_literal("'你好'", w), "你好");
  // Unknown escapes keep the backslash, as in Python.
  EXPECT_EQ(parse_python_literal("'\\$'", w), "\\$");
  EXPECT_EQ(parse_python_literal("b'\\u1234'", w), "\\u1234");
  EXPECT_EQ(parse_python_literal("''", w), "");
}

TEST(TokenizerLiteral, BadLiteralsThrowNamingTheLine) {
  using rwkv7::detail::parse_python_literal;
  for (const char* bad :
       {"abc", "'abc", "'abc\"", "'\\x4'", "'\\xzz'", "'a'b'", "'\\'", "'\\uD800'"}) {
    try {
      parse_python_literal(bad, "vocab.txt:7");
      ADD_FAILURE() << "no error for " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("vocab.txt:7"), std::string::npos) << e.what();
    }
  }
}

TEST(TokenizerLoad, LengthMismatchNamesFileAndLine) {
  const std::string path = temp_vocab("badlen.txt", small_vocab("257 'ab' 3\n"));
  try {
    Tokenizer::load_world(path);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":257"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

TEST(TokenizerLoad, MissingFileAndMalformedLines) {
  EXPECT_THROW(Tokenizer::load_world("/nonexistent/vocab.txt"), Error);
  const std::string p1 = temp_vocab("nolen.txt", small_vocab("257 'ab'\n"));
  EXPECT_THROW(Tokenizer::load_world(p1), Error);
  const std::string p2 = temp_vocab("badid.txt", small_vocab("x57 'ab' 2\n"));
  EXPECT_THROW(Tokenizer::load_world(p2), Error);
  const std::string p3 = temp_vocab("dup.txt", small_vocab("257 'ab' 2\n257 'cd' 2\n"));
  EXPECT_THROW(Tokenizer::load_world(p3), Error);
  const std::string p4 = temp_vocab("gap.txt", small_vocab("258 'ab' 2\n"));
  EXPECT_THROW(Tokenizer::load_world(p4), Error);
  for (const auto& p : {p1, p2, p3, p4}) std::filesystem::remove(p);
}

TEST(TokenizerLoad, SmallVocabularyGreedy) {
  const std::string path =
      temp_vocab("small.txt", small_vocab("257 'ab' 2\n258 'abc' 3\n259 'abcde' 5\n260 'cd' 2\n"));
  Tokenizer tok = Tokenizer::load_world(path);
  std::filesystem::remove(path);
  EXPECT_EQ(tok.vocab_size(), 261u);
  EXPECT_FALSE(tok.is_bytes());
  // "abcd": longest at 0 is "abc" (abcde does not match), then "d".
  EXPECT_EQ(tok.encode("abcd"), (std::vector<int32_t>{258, 'd' + 1}));
  EXPECT_EQ(tok.encode("abcdef"), (std::vector<int32_t>{259, 'f' + 1}));
  EXPECT_EQ(tok.encode("xabx"), (std::vector<int32_t>{'x' + 1, 257, 'x' + 1}));
  EXPECT_EQ(tok.encode("acd"), (std::vector<int32_t>{'a' + 1, 260}));
  EXPECT_TRUE(tok.encode("").empty());
}

TEST(TokenizerWorld, GoldenCases) {
  RWKV7_REQUIRE_SHARED(vocab, "vocab/rwkv_vocab_v20230424.txt");
  RWKV7_REQUIRE_SHARED(golden, "golden/tokenizer_cases.json");
  const Tokenizer& tok = world(vocab);
  EXPECT_EQ(tok.vocab_size(), 65530u);
  const auto cases = nlohmann::json::parse(read_file(golden));
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    const std::string text = c.contains("bytes_hex") ? from_hex(c["bytes_hex"].get<std::string>())
                                                     : c["text"].get<std::string>();
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text), expected) << "text: " << text;
    EXPECT_EQ(tok.decode(expected), text);
  }
}

TEST(TokenizerWorld, SpecExamplesAndEndOfText) {
  RWKV7_REQUIRE_SHARED(vocab, "vocab/rwkv_vocab_v20230424.txt");
  const Tokenizer& tok = world(vocab);
  EXPECT_EQ(tok.token_bytes(257), "\t\t");
  EXPECT_EQ(tok.token_bytes(129), "\x80");
  EXPECT_EQ(tok.token_bytes(40), "'");
  EXPECT_EQ(tok.token_bytes(0), "");
  EXPECT_EQ(tok.token_bytes(1), std::string(1, '\0'));
  EXPECT_EQ(tok.token_bytes(65529), std::string(128, ' '));
  const int32_t ids[] = {0, 33155, 0};
  EXPECT_EQ(tok.decode(ids), "Hello");
  EXPECT_THROW(tok.token_bytes(65530), Error);
  EXPECT_THROW(tok.token_bytes(-1), Error);
  const int32_t bad[] = {33155, 70000};
  EXPECT_THROW(tok.decode(bad), Error);
}

// Naive greedy longest match (hash of every token), the reference the trie must agree with.
std::vector<int32_t> naive_encode(const Tokenizer& tok, std::string_view text) {
  std::unordered_map<std::string_view, int32_t> map;
  size_t max_len = 0;
  for (size_t id = 1; id < tok.vocab_size(); ++id) {
    const std::string& b = tok.token_bytes(static_cast<int32_t>(id));
    map.emplace(b, static_cast<int32_t>(id));
    max_len = std::max(max_len, b.size());
  }
  std::vector<int32_t> out;
  size_t i = 0;
  while (i < text.size()) {
    for (size_t len = std::min(max_len, text.size() - i); len >= 1; --len) {
      auto it = map.find(text.substr(i, len));
      if (it != map.end()) {
        out.push_back(it->second);
        i += len;
        break;
      }
    }
  }
  return out;
}

TEST(TokenizerWorld, MatchesNaiveGreedyAndRoundTrips) {
  RWKV7_REQUIRE_SHARED(vocab, "vocab/rwkv_vocab_v20230424.txt");
  RWKV7_REQUIRE_SHARED(data, "data/tinyshakespeare.txt");
  const Tokenizer& tok = world(vocab);
  const std::string text = read_file(data).substr(0, 200000);
  const auto ids = tok.encode(text);
  EXPECT_EQ(ids, naive_encode(tok, text));
  EXPECT_EQ(tok.decode(ids), text);

  std::mt19937 rng(123);
  std::string random;
  for (int i = 0; i < 20000; ++i) random.push_back(static_cast<char>(rng() & 0xFF));
  const auto rids = tok.encode(random);
  EXPECT_EQ(rids, naive_encode(tok, random));
  EXPECT_EQ(tok.decode(rids), random);
}

TEST(TokenizerWorld, EncodeSpeed) {
  RWKV7_REQUIRE_SHARED(vocab, "vocab/rwkv_vocab_v20230424.txt");
  RWKV7_REQUIRE_SHARED(data, "data/tinyshakespeare.txt");
  const auto t0 = std::chrono::steady_clock::now();
  Tokenizer tok = Tokenizer::load_world(vocab);
  const auto t1 = std::chrono::steady_clock::now();
  const std::string text = read_file(data);
  size_t n_ids = 0;
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto a = std::chrono::steady_clock::now();
    n_ids = tok.encode(text).size();
    const auto b = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(b - a).count());
  }
  const double mb = static_cast<double>(text.size()) / 1e6;
  std::printf("[tokenizer] load %.1f ms; encode %.2f MB -> %zu ids in %.2f ms: %.1f MB/s\n",
              std::chrono::duration<double, std::milli>(t1 - t0).count(), mb, n_ids, best * 1e3,
              mb / best);
  EXPECT_GT(n_ids, 0u);
}

TEST(TokenizerBytes, IdentityOnBytes) {
  Tokenizer tok = Tokenizer::bytes();
  EXPECT_TRUE(tok.is_bytes());
  EXPECT_EQ(tok.vocab_size(), 256u);
  const std::string s("A\xff\x00z", 4);
  const auto ids = tok.encode(s);
  EXPECT_EQ(ids, (std::vector<int32_t>{65, 255, 0, 122}));
  EXPECT_EQ(tok.decode(ids), s);
  EXPECT_EQ(tok.token_bytes(255), "\xff");
  EXPECT_THROW(tok.token_bytes(256), Error);
  EXPECT_THROW(tok.token_bytes(-3), Error);
}

// ---- StreamDecoder ----

std::string stream_all(const Tokenizer& tok, const std::vector<int32_t>& ids,
                       std::vector<std::string>* pieces = nullptr) {
  StreamDecoder dec(tok);
  std::string out;
  for (int32_t id : ids) {
    std::string s = dec.push(id);
    if (pieces) pieces->push_back(s);
    out += s;
  }
  out += dec.flush();
  return out;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<uint8_t>(s[i]);
    int len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (int k = 1; k < len; ++k) {
      if ((static_cast<uint8_t>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

TEST(StreamDecoder, ByteLevelEmojiHeldUntilComplete) {
  Tokenizer tok = Tokenizer::bytes();
  const std::string swan = "\xf0\x9f\xa6\xa2";  // U+1F9A2
  StreamDecoder dec(tok);
  EXPECT_EQ(dec.push('a'), "a");
  EXPECT_EQ(dec.push(0xf0), "");
  EXPECT_EQ(dec.push(0x9f), "");
  EXPECT_EQ(dec.push(0xa6), "");
  EXPECT_EQ(dec.push(0xa2), swan);
  EXPECT_EQ(dec.push(0xe4), "");  // 你 = e4 bd a0
  EXPECT_EQ(dec.push(0xbd), "");
  EXPECT_EQ(dec.push(0xa0), "你");
  EXPECT_EQ(dec.flush(), "");
}

TEST(StreamDecoder, InvalidBytesAreEmittedNotLost) {
  Tokenizer tok = Tokenizer::bytes();
  StreamDecoder dec(tok);
  EXPECT_EQ(dec.push(0xff), "\xff");  // can never lead
  EXPECT_EQ(dec.push(0x80), "\x80");  // stray continuation
  EXPECT_EQ(dec.push(0xe4), "");      // could still complete
  EXPECT_EQ(dec.push('x'), "\xe4x");  // proved invalid: emitted as it is
  EXPECT_EQ(dec.push(0xe0), "");
  EXPECT_EQ(dec.push(0x80), "\xe0\x80");  // overlong: E0 needs A0..BF next
  EXPECT_EQ(dec.push(0xc3), "");
  EXPECT_EQ(dec.flush(), "\xc3");  // flush returns what is held back
  EXPECT_EQ(dec.flush(), "");
  EXPECT_THROW(dec.push(300), Error);
}

TEST(StreamDecoder, WorldEmojiAndChineseAcrossTokens) {
  RWKV7_REQUIRE_SHARED(vocab, "vocab/rwkv_vocab_v20230424.txt");
  const Tokenizer& tok = world(vocab);
  const std::string text =
      "emoji 🦢\U0001FABF 你好，世界！RWKV-7 "
      "是一种线性注意力模型。日本語のテキストと한국어";
  const auto ids = tok.encode(text);
  // At least one token must end inside a character, or the test proves nothing.
  bool split = false;
  std::string acc;
  for (int32_t id : ids) {
    acc += tok.token_bytes(id);
    if (!valid_utf8(acc)) split = true;
  }
  EXPECT_TRUE(split) << "no token boundary falls inside a character";
  std::vector<std::string> pieces;
  EXPECT_EQ(stream_all(tok, ids, &pieces), text);
  for (const auto& p : pieces) EXPECT_TRUE(valid_utf8(p)) << "piece is not whole UTF-8";

  // Splitting the emoji's bytes into single-byte tokens (ids byte + 1) also works.
  std::vector<int32_t> byte_ids;
  for (unsigned char c : std::string("\xf0\x9f\xa6\xa2")) byte_ids.push_back(c + 1);
  StreamDecoder dec(tok);
  EXPECT_EQ(dec.push(byte_ids[0]), "");
  EXPECT_EQ(dec.push(byte_ids[1]), "");
  EXPECT_EQ(dec.push(byte_ids[2]), "");
  EXPECT_EQ(dec.push(byte_ids[3]), "\xf0\x9f\xa6\xa2");
  EXPECT_EQ(dec.push(0), "");  // end-of-text decodes to nothing
}

TEST(StreamDecoder, RandomBytesLoseNothing) {
  Tokenizer tok = Tokenizer::bytes();
  std::mt19937 rng(7);
  std::vector<int32_t> ids;
  std::string expected;
  for (int i = 0; i < 5000; ++i) {
    int b = static_cast<int>(rng() % 256);
    ids.push_back(b);
    expected.push_back(static_cast<char>(b));
  }
  EXPECT_EQ(stream_all(tok, ids), expected);
}

// Reading a long text block by block (doc read): each block's stable tokens, the next block
// starting at the first byte not consumed, give exactly the tokens of the whole text, even
// where a block ends inside a run of spaces or inside a word.
TEST(TokenizerWorld, EncodeBlockPiecesMakeTheWholeEncoding) {
  RWKV7_REQUIRE_SHARED(vocab, "vocab/rwkv_vocab_v20230424.txt");
  RWKV7_REQUIRE_SHARED(data, "data/tinyshakespeare.txt");
  const Tokenizer& tok = world(vocab);
  std::ifstream in(data, std::ios::binary);
  std::string text(30000, '\0');
  in.read(text.data(), std::streamsize(text.size()));
  text.resize(size_t(in.gcount()));
  text += std::string(300, ' ') + "\n\n\n\n" + std::string(100, '=') + "end";
  const auto want = tok.encode(text);
  for (size_t block : {size_t(129), size_t(1000), size_t(4096)}) {  // longest token: 128 bytes
    std::vector<int32_t> got;
    size_t at = 0;
    while (at < text.size()) {
      const size_t len = std::min(block, text.size() - at);
      size_t used = 0;
      const auto ids =
          tok.encode_block(std::string_view(text).substr(at, len), at + len == text.size(), &used);
      ASSERT_GT(used, 0u) << "at " << at;
      ASSERT_LE(used, len);
      EXPECT_EQ(tok.decode(ids).size(), used);
      got.insert(got.end(), ids.begin(), ids.end());
      at += used;
    }
    EXPECT_EQ(got, want) << "block " << block;
  }
  // A piece that ends inside a possible longer token leaves it for the next piece.
  size_t used = 0;
  const auto part = tok.encode_block("Hello wor", false, &used);
  EXPECT_LT(used, 9u);
  EXPECT_EQ(tok.decode(part), std::string("Hello wor").substr(0, used));
  EXPECT_EQ(Tokenizer::bytes().encode_block("abc", false, &used).size(), 3u);
  EXPECT_EQ(used, 3u);
}

}  // namespace
