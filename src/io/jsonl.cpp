#include "io/jsonl.hpp"

#include <fstream>
#include <nlohmann/json.hpp>

#include "rwkv7/error.hpp"

namespace rwkv7 {

void for_each_jsonl_text(const std::string& path,
                         const std::function<void(std::string&& text, int64_t line)>& fn) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open");
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string text;
    try {
      text = nlohmann::json::parse(line).at("text").get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ":" + std::to_string(n) +
                  ": expected a JSON object with a \"text\" string (" + e.what() + ")");
    }
    fn(std::move(text), n);
  }
}

}  // namespace rwkv7
