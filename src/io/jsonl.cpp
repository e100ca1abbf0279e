#include "io/jsonl.hpp"

#include <fstream>
#include <nlohmann/json.hpp>

#include "rwkv7/error.hpp"

namespace rwkv7 {

namespace {

// Reads one line (without the '\n') into `line`, refusing lines longer than the limit before
// they are held in memory. False at the end of the file.
bool bounded_getline(std::istream& in, std::string& line, const std::string& where) {
  line.clear();
  char buf[4096];
  bool any = false;
  while (in.get(buf, sizeof buf, '\n')) {  // stops before '\n'
    any = true;
    if (line.size() + size_t(in.gcount()) > kMaxJsonlLineBytes) {
      throw Error(where + ": line is longer than " + std::to_string(kMaxJsonlLineBytes >> 20) +
                  " MiB (the limit for one JSONL document)");
    }
    line.append(buf, size_t(in.gcount()));
  }
  if (in.eof()) return any;
  in.clear();  // get() sets failbit on an empty line
  if (in.peek() == '\n') {
    in.ignore(1);
    return true;
  }
  return any;
}

}  // namespace

void for_each_jsonl_line(const std::string& path,
                         const std::function<void(const std::string& line, int64_t number)>& fn) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open");
  std::string line;
  int64_t n = 0;
  while (bounded_getline(in, line, path + ":" + std::to_string(n + 1))) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    fn(line, n);
  }
  if (in.bad()) throw Error(path + ": read failed");
}

namespace {

// Refuses nesting deeper than kMaxJsonlDepth while parsing.
void check_depth(int depth, nlohmann::json::parse_event_t ev, const std::string& where) {
  using Ev = nlohmann::json::parse_event_t;
  if ((ev == Ev::object_start || ev == Ev::array_start) && depth >= kMaxJsonlDepth)
    throw Error(where + ": JSON nests deeper than " + std::to_string(kMaxJsonlDepth) + " levels");
}

}  // namespace

nlohmann::json parse_jsonl_line(const std::string& line, const std::string& where) {
  return nlohmann::json::parse(line,
                               [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json&) {
                                 check_depth(depth, ev, where);
                                 return true;
                               });
}

void for_each_jsonl_text(const std::string& path,
                         const std::function<void(std::string&& text, int64_t line)>& fn) {
  for_each_jsonl_line(path, [&](const std::string& line, int64_t n) {
    const std::string where = path + ":" + std::to_string(n);
    const size_t first = line.find_first_not_of(" \t\r");
    if (line[first] != '{') throw Error(where + ": expected a JSON object with a \"text\" string");
    // Only the top-level "text" is kept: everything else is discarded as it is parsed, and
    // nesting deeper than kMaxJsonlDepth is refused, so memory stays a small multiple of the
    // line whatever it holds.
    auto keep = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
      using Ev = nlohmann::json::parse_event_t;
      check_depth(depth, ev, where);
      if (ev == Ev::key) return depth != 1 || parsed == "text";
      if (ev == Ev::value || ev == Ev::object_end || ev == Ev::array_end) return depth <= 1;
      return true;
    };
    std::string text;
    try {
      text = nlohmann::json::parse(line, keep).at("text").get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + ": expected a JSON object with a \"text\" string (" + e.what() + ")");
    }
    fn(std::move(text), n);
  });
}

}  // namespace rwkv7
