#pragma once
// JSON Lines with one {"text": "..."} object per line (LAMBADA, training corpora).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace rwkv7 {

// Limits on one line: its length (refused before it is read whole) and its JSON nesting.
constexpr size_t kMaxJsonlLineBytes = size_t(64) << 20;
constexpr int kMaxJsonlDepth = 32;

// Calls fn(line, line number) for every non-blank line of the file, refusing a line longer
// than kMaxJsonlLineBytes before it is held whole.
void for_each_jsonl_line(const std::string& path,
                         const std::function<void(const std::string& line, int64_t number)>& fn);

// One line parsed whole, refusing nesting deeper than kMaxJsonlDepth (Error naming `where`;
// a syntax error is nlohmann's exception, for the caller to name what it expected).
nlohmann::json parse_jsonl_line(const std::string& line, const std::string& where);

// Calls fn(text, line number) for every non-blank line of the file; a line that is not an
// object with a "text" string is an Error naming "<path>:<line>".
void for_each_jsonl_text(const std::string& path,
                         const std::function<void(std::string&& text, int64_t line)>& fn);

}  // namespace rwkv7
