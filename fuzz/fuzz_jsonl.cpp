// JSON Lines ({"text": ...} per line): bounded lines, nesting, only "text" kept.
#include "fuzz_util.hpp"
#include "io/jsonl.hpp"
#include "rwkv7/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = rwkv7::fuzz::write_input(data, size, ".jsonl");
  try {
    size_t total = 0;
    rwkv7::for_each_jsonl_text(path, [&](std::string&& text, int64_t) { total += text.size(); });
    if (total > size) __builtin_trap();  // text cannot be longer than the file
  } catch (const rwkv7::Error&) {
  }
  return 0;
}
