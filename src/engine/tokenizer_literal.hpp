#pragma once
// Parses one Python string or bytes literal (as written by repr()) into raw bytes: a str
// literal becomes its UTF-8 encoding, a bytes literal its bytes. Used by the World vocabulary
// loader (SPEC §6).
#include <string>
#include <string_view>

namespace rwkv7::detail {

// `lit` is the whole literal including the optional b prefix and the quotes. `where` names
// the input ("<path>:<line>") and starts every Error message.
std::string parse_python_literal(std::string_view lit, const std::string& where);

// Appends the UTF-8 encoding of code point `cp` (Error when it is not a Unicode scalar value
// that Python's str could hold).
void append_utf8(std::string& out, unsigned long cp, const std::string& where);

}  // namespace rwkv7::detail
