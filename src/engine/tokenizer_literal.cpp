#include "engine/tokenizer_literal.hpp"

#include "rwkv7/error.hpp"

namespace rwkv7::detail {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

unsigned long parse_hex(std::string_view body, size_t& i, int digits, const std::string& where) {
  if (i + digits > body.size()) {
    throw Error(where + ": truncated \\x/\\u/\\U escape in vocabulary literal");
  }
  unsigned long v = 0;
  for (int k = 0; k < digits; ++k) {
    int h = hex_value(body[i + k]);
    if (h < 0) throw Error(where + ": bad hex digit in escape of vocabulary literal");
    v = v * 16 + static_cast<unsigned long>(h);
  }
  i += digits;
  return v;
}

}  // namespace

void append_utf8(std::string& out, unsigned long cp, const std::string& where) {
  // Python str may hold lone surrogates, but they have no UTF-8 encoding ('strict' fails).
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    throw Error(where + ": code point out of range or surrogate in vocabulary literal");
  }
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string parse_python_literal(std::string_view lit, const std::string& where) {
  bool is_bytes = false;
  size_t pos = 0;
  if (pos < lit.size() && (lit[pos] == 'b' || lit[pos] == 'B')) {
    is_bytes = true;
    ++pos;
  }
  if (pos >= lit.size() || (lit[pos] != '\'' && lit[pos] != '"')) {
    throw Error(where + ": vocabulary literal must start with ' or \" (optionally b'...')");
  }
  const char quote = lit[pos];
  if (lit.size() < pos + 2 || lit.back() != quote) {
    throw Error(where + ": vocabulary literal is not closed by its opening quote");
  }
  std::string_view body = lit.substr(pos + 1, lit.size() - pos - 2);

  std::string out;
  out.reserve(body.size());
  size_t i = 0;
  while (i < body.size()) {
    const char c = body[i];
    if (c != '\\') {
      if (c == quote) throw Error(where + ": unescaped quote inside vocabulary literal");
      if (is_bytes && static_cast<unsigned char>(c) >= 0x80) {
        throw Error(where + ": non-ASCII character inside a bytes literal");
      }
      out.push_back(c);  // str literal: the file is UTF-8, so its bytes are already UTF-8
      ++i;
      continue;
    }
    if (i + 1 >= body.size()) throw Error(where + ": vocabulary literal ends with a backslash");
    const char e = body[i + 1];
    i += 2;
    switch (e) {
      case '\\':
        out.push_back('\\');
        break;
      case '\'':
        out.push_back('\'');
        break;
      case '"':
        out.push_back('"');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'a':
        out.push_back('\a');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case '\n':
        break;  // line continuation
      case 'x': {
        unsigned long v = parse_hex(body, i, 2, where);
        if (is_bytes) {
          out.push_back(static_cast<char>(v));
        } else {
          append_utf8(out, v, where);
        }
        break;
      }
      case 'u':
      case 'U': {
        if (is_bytes) {  // not an escape in bytes literals: kept verbatim
          out.push_back('\\');
          out.push_back(e);
          break;
        }
        append_utf8(out, parse_hex(body, i, e == 'u' ? 4 : 8, where), where);
        break;
      }
      case '0':
      case '1':
      case '2':
      case '3':
      case '4':
      case '5':
      case '6':
      case '7': {
        unsigned long v = static_cast<unsigned long>(e - '0');
        for (int k = 0; k < 2 && i < body.size() && body[i] >= '0' && body[i] <= '7'; ++k) {
          v = v * 8 + static_cast<unsigned long>(body[i] - '0');
          ++i;
        }
        if (is_bytes) {
          out.push_back(static_cast<char>(v & 0xFF));
        } else {
          append_utf8(out, v, where);
        }
        break;
      }
      default:
        // Python keeps unknown escapes such as \$ as the backslash plus the character.
        out.push_back('\\');
        out.push_back(e);
        break;
    }
  }
  return out;
}

}  // namespace rwkv7::detail
