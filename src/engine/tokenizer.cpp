#include "rwkv7/tokenizer.hpp"

#include <algorithm>
#include <fstream>
#include <utility>

#include "engine/tokenizer_literal.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {

namespace {

// A byte trie flattened for lookup speed. Nodes with many children get a dense 256-entry
// table; the rest keep their children as a short sorted run of (byte, child) edges.
class ByteTrie {
 public:
  static constexpr uint32_t kNone = 0xFFFFFFFFu;

  void build(const std::vector<std::string>& tokens) {
    struct BuildNode {
      int32_t id = -1;
      std::vector<std::pair<uint8_t, uint32_t>> kids;
    };
    std::vector<BuildNode> nodes(1);
    for (size_t id = 0; id < tokens.size(); ++id) {
      const std::string& t = tokens[id];
      if (t.empty()) continue;
      uint32_t cur = 0;
      for (char ch : t) {
        const uint8_t b = static_cast<uint8_t>(ch);
        uint32_t next = kNone;
        for (const auto& [kb, kc] : nodes[cur].kids) {
          if (kb == b) {
            next = kc;
            break;
          }
        }
        if (next == kNone) {
          next = static_cast<uint32_t>(nodes.size());
          nodes[cur].kids.emplace_back(b, next);
          nodes.emplace_back();
        }
        cur = next;
      }
      if (nodes[cur].id < 0) nodes[cur].id = static_cast<int32_t>(id);
    }
    const size_t n = nodes.size();
    id_.assign(n, -1);
    edge_begin_.assign(n, 0);
    edge_count_.assign(n, 0);
    dense_.assign(n, kNone);
    edge_byte_.clear();
    edge_child_.clear();
    tables_.clear();
    for (size_t i = 0; i < n; ++i) {
      auto& kids = nodes[i].kids;
      std::sort(kids.begin(), kids.end());
      id_[i] = nodes[i].id;
      if (kids.size() > kDenseThreshold) {
        dense_[i] = static_cast<uint32_t>(tables_.size() / 256);
        tables_.resize(tables_.size() + 256, kNone);
        uint32_t* tab = tables_.data() + static_cast<size_t>(dense_[i]) * 256;
        for (const auto& [b, c] : kids) tab[b] = c;
      } else {
        edge_begin_[i] = static_cast<uint32_t>(edge_byte_.size());
        edge_count_[i] = static_cast<uint8_t>(kids.size());
        for (const auto& [b, c] : kids) {
          edge_byte_.push_back(b);
          edge_child_.push_back(c);
        }
      }
    }
  }

  uint32_t child(uint32_t node, uint8_t b) const {
    const uint32_t d = dense_[node];
    if (d != kNone) return tables_[static_cast<size_t>(d) * 256 + b];
    const uint32_t begin = edge_begin_[node];
    const uint32_t end = begin + edge_count_[node];
    for (uint32_t e = begin; e < end; ++e) {
      const uint8_t eb = edge_byte_[e];
      if (eb == b) return edge_child_[e];
      if (eb > b) break;
    }
    return kNone;
  }

  int32_t id(uint32_t node) const { return id_[node]; }
  // Whether a longer token continues from this node.
  bool has_children(uint32_t node) const { return dense_[node] != kNone || edge_count_[node] > 0; }

 private:
  static constexpr size_t kDenseThreshold = 12;
  std::vector<int32_t> id_;
  std::vector<uint32_t> edge_begin_;
  std::vector<uint8_t> edge_count_;
  std::vector<uint32_t> dense_;
  std::vector<uint8_t> edge_byte_;
  std::vector<uint32_t> edge_child_;
  std::vector<uint32_t> tables_;
};

}  // namespace

struct Tokenizer::Impl {
  bool bytes = false;
  std::string source;               // vocabulary path (or "<bytes>") for messages
  std::vector<std::string> tokens;  // id -> bytes
  std::vector<int32_t> byte_token;  // byte value -> id of the one-byte token
  ByteTrie trie;
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::bytes() {
  auto impl = std::make_unique<Impl>();
  impl->bytes = true;
  impl->source = "<byte tokenizer>";
  impl->tokens.resize(256);
  impl->byte_token.resize(256);
  for (int b = 0; b < 256; ++b) {
    impl->tokens[b] = std::string(1, static_cast<char>(b));
    impl->byte_token[b] = b;
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::load_world(const std::string& vocab_path) {
  std::ifstream in(vocab_path, std::ios::binary);
  if (!in) throw Error(vocab_path + ": cannot open vocabulary file");
  // The file's size bounds the ids (below). A pipe has none: then ids up to 2^22 (64 MiB of
  // token tables at most).
  long file_bytes = 6L << 22;
  if (in.seekg(0, std::ios::end) && in.tellg() >= 0) {
    file_bytes = static_cast<long>(in.tellg());
    in.seekg(0);
  } else {
    in.clear();
  }
  auto impl = std::make_unique<Impl>();
  impl->source = vocab_path;
  std::vector<bool> seen;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = vocab_path + ":" + std::to_string(line_no);
    const size_t sp1 = line.find(' ');
    const size_t sp2 = line.rfind(' ');
    if (sp1 == std::string::npos || sp2 == sp1) {
      throw Error(where + ": expected '<id> <literal> <byte length>'");
    }
    auto parse_uint = [&](std::string_view s, const char* what) {
      if (s.empty() || s.size() > 9)
        throw Error(where + ": bad " + what + " '" + std::string(s) + "'");
      long v = 0;
      for (char c : s) {
        if (c < '0' || c > '9') throw Error(where + ": bad " + what + " '" + std::string(s) + "'");
        v = v * 10 + (c - '0');
      }
      return v;
    };
    const std::string_view lv(line);
    const long id = parse_uint(lv.substr(0, sp1), "token id");
    const long len = parse_uint(lv.substr(sp2 + 1), "byte length");
    std::string bytes = detail::parse_python_literal(lv.substr(sp1 + 1, sp2 - sp1 - 1), where);
    if (static_cast<long>(bytes.size()) != len) {
      throw Error(where + ": literal has " + std::to_string(bytes.size()) +
                  " bytes but the line says " + std::to_string(len));
    }
    if (id == 0) throw Error(where + ": id 0 is reserved for end-of-text");
    // Ids 1..id each need a line of at least 6 bytes ("1 'a' 1"): a larger id cannot be part
    // of a complete vocabulary, and would size the tables from one line.
    if (id > file_bytes / 6) {
      throw Error(where + ": token id " + std::to_string(id) + " is larger than a file of " +
                  std::to_string(file_bytes) + " bytes can define (ids must run 1..N)");
    }
    if (bytes.empty()) throw Error(where + ": empty token");
    if (static_cast<size_t>(id) >= impl->tokens.size()) {
      impl->tokens.resize(static_cast<size_t>(id) + 1);
      seen.resize(static_cast<size_t>(id) + 1, false);
    }
    if (seen[id]) throw Error(where + ": duplicate token id " + std::to_string(id));
    seen[id] = true;
    if (id <= 256 && (bytes.size() != 1 || static_cast<uint8_t>(bytes[0]) != id - 1)) {
      throw Error(where + ": ids 1..256 must be the single bytes (id = byte + 1)");
    }
    impl->tokens[id] = std::move(bytes);
  }
  if (impl->tokens.size() < 257) {
    throw Error(vocab_path + ": vocabulary lacks the 256 single-byte tokens (ids 1..256)");
  }
  for (size_t id = 1; id < impl->tokens.size(); ++id) {
    if (!seen[id]) throw Error(vocab_path + ": token id " + std::to_string(id) + " is missing");
  }
  impl->byte_token.resize(256);
  for (int b = 0; b < 256; ++b) impl->byte_token[b] = b + 1;
  impl->trie.build(impl->tokens);
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  if (impl_->bytes) {
    out.assign(p, p + n);
    return out;
  }
  out.reserve(n / 3 + 4);
  const ByteTrie& trie = impl_->trie;
  size_t i = 0;
  while (i < n) {
    uint32_t node = trie.child(0, p[i]);  // every byte is a token, so this always exists
    int32_t best = trie.id(node);
    size_t best_len = 1;
    for (size_t j = i + 1; j < n; ++j) {
      node = trie.child(node, p[j]);
      if (node == ByteTrie::kNone) break;
      const int32_t id = trie.id(node);
      if (id >= 0) {
        best = id;
        best_len = j - i + 1;
      }
    }
    out.push_back(best);
    i += best_len;
  }
  return out;
}

std::vector<int32_t> Tokenizer::encode_block(std::string_view text, bool last,
                                             size_t* consumed) const {
  if (last || impl_->bytes) {
    *consumed = text.size();
    return encode(text);
  }
  std::vector<int32_t> out;
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  const ByteTrie& trie = impl_->trie;
  size_t i = 0;
  while (i < n) {
    uint32_t node = trie.child(0, p[i]);
    int32_t best = trie.id(node);
    size_t best_len = 1;
    bool open = true;  // the match reached the end of the text: more text could lengthen it
    for (size_t j = i + 1; j < n; ++j) {
      node = trie.child(node, p[j]);
      if (node == ByteTrie::kNone) {
        open = false;
        break;
      }
      const int32_t id = trie.id(node);
      if (id >= 0) {
        best = id;
        best_len = j - i + 1;
      }
    }
    if (open && trie.has_children(node)) break;
    out.push_back(best);
    i += best_len;
  }
  *consumed = i;
  return out;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->tokens.size()) {
    throw Error(impl_->source + ": token id " + std::to_string(id) + " is out of range [0, " +
                std::to_string(impl_->tokens.size()) + ")");
  }
  return impl_->tokens[static_cast<size_t>(id)];
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

size_t Tokenizer::vocab_size() const { return impl_->tokens.size(); }

bool Tokenizer::is_bytes() const { return impl_->bytes; }

// ---- StreamDecoder ----

namespace {

// Length of the UTF-8 sequence a lead byte starts, or 0 for a byte that cannot lead one.
int utf8_len(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

// Whether byte k (1-based position after the lead) may follow lead `lead`.
bool utf8_cont_ok(uint8_t lead, int k, uint8_t b) {
  if (k == 1) {
    switch (lead) {
      case 0xE0:
        return b >= 0xA0 && b <= 0xBF;  // no overlongs
      case 0xED:
        return b >= 0x80 && b <= 0x9F;  // no surrogates
      case 0xF0:
        return b >= 0x90 && b <= 0xBF;  // no overlongs
      case 0xF4:
        return b >= 0x80 && b <= 0x8F;  // <= U+10FFFF
      default:
        break;
    }
  }
  return b >= 0x80 && b <= 0xBF;
}

}  // namespace

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_->token_bytes(id);
  const auto* p = reinterpret_cast<const uint8_t*>(pending_.data());
  const size_t n = pending_.size();
  size_t i = 0;
  while (i < n) {
    const int len = utf8_len(p[i]);
    if (len <= 1) {  // ASCII, or a stray byte that is emitted as it is
      ++i;
      continue;
    }
    int k = 1;
    while (k < len && i + k < n && utf8_cont_ok(p[i], k, p[i + k])) ++k;
    if (k == len) {
      i += len;  // complete, valid character
    } else if (i + k == n) {
      break;  // valid so far, but incomplete: hold back from i
    } else {
      i += k;  // can never become valid: emit the broken prefix as it is
    }
  }
  std::string out = pending_.substr(0, i);
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace rwkv7
