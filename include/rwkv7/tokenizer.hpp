#pragma once
// Text <-> token ids. Two kinds: the RWKV World vocabulary (greedy longest match over bytes,
// SPEC §6) and raw bytes (V = 256: token id = byte value).
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rwkv7 {

class Tokenizer {
 public:
  // Loads `rwkv_vocab_v20230424.txt`-style files; Error names the file and line on bad input.
  static Tokenizer load_world(const std::string& vocab_path);
  // Byte-level tokenizer for V = 256 models.
  static Tokenizer bytes();

  std::vector<int32_t> encode(std::string_view text) const;  // text = raw bytes
  // A piece of a longer text: the tokens at its start that the whole text also has (a token
  // whose match runs into the end of the piece could grow with more text, so it and the rest
  // are left out), and in `consumed` the bytes they cover. Encoding a text piece by piece,
  // each from the first byte not consumed, gives exactly encode(text). last: the text ends
  // here (everything is encoded).
  std::vector<int32_t> encode_block(std::string_view text, bool last, size_t* consumed) const;
  std::string decode(std::span<const int32_t> ids) const;  // unknown ids → Error
  const std::string& token_bytes(int32_t id) const;        // unknown ids → Error
  size_t vocab_size() const;                               // number of ids (max id + 1)
  bool is_bytes() const;

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of token ids into text that never ends in half a UTF-8 character: bytes of
// an incomplete sequence are held back until it completes (or proves invalid, then emitted).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok) : tok_(&tok) {}
  std::string push(int32_t id);  // printable text now available
  std::string flush();           // whatever is held back
 private:
  const Tokenizer* tok_;
  std::string pending_;
};

}  // namespace rwkv7
