// safetensors: 8-byte little-endian header length, JSON header, raw little-endian data.
#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <unordered_set>

#include "core/atomic_write.hpp"
#include "io/io_internal.hpp"
#include "io/io_util.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace io {

namespace {

constexpr uint64_t kMaxHeader = uint64_t(100) << 20;  // as the reference implementation
constexpr size_t kMaxDims = 64;
constexpr int kMaxJsonDepth = 8;  // {"name": {"shape": [..]}} is depth 3; metadata is flat

bool parse_dtype(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> kTypes[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"I32", DType::I32},
      {"I64", DType::I64}, {"U8", DType::U8},   {"I8", DType::I8}};
  for (const auto& [name, t] : kTypes) {
    if (s == name) {
      *out = t;
      return true;
    }
  }
  return false;
}

const char* dtype_tag(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
    case DType::U8:
      return "U8";
    case DType::I8:
      return "I8";
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::IQ4_NL:
      throw Error("block-quantised " + dtype_name(t) +
                  " tensors cannot be stored in safetensors; use GGUF");
  }
  return "?";
}

uint64_t json_uint(const nlohmann::ordered_json& j, const std::function<Error(std::string)>& fail,
                   const char* what) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer() && j.get<int64_t>() >= 0) return uint64_t(j.get<int64_t>());
  throw fail(std::string(what) + " must be non-negative integers");
}

}  // namespace

namespace {

// The reader over any bytes: `owner` keeps them alive for the views.
TensorFile read_safetensors_span(const unsigned char* base, uint64_t size, const std::string& path,
                                 std::shared_ptr<const void> owner) {
  if (size == 0) throw Error(path + ": file is empty");
  if (size < 8)
    throw Error(path + ": too short for a safetensors header (" + std::to_string(size) + " bytes)");
  const uint64_t n = le64(base);
  if (n > size - 8) {
    throw Error(path + ": safetensors header length " + std::to_string(n) +
                " runs past the end of the file (" + std::to_string(size) + " bytes; truncated?)");
  }
  if (n > kMaxHeader)
    throw Error(path + ": safetensors header of " + std::to_string(n) + " bytes is too large");
  nlohmann::ordered_json header;
  // The parse is refused past a small nesting depth (memory per byte stays bounded) and on a
  // key that appears twice in one object (JSON would keep one silently).
  std::vector<std::unordered_set<std::string>> keys;
  auto check = [&](int depth, nlohmann::ordered_json::parse_event_t ev,
                   nlohmann::ordered_json& parsed) {
    using Ev = nlohmann::ordered_json::parse_event_t;
    if (ev == Ev::object_start || ev == Ev::array_start) {
      if (depth >= kMaxJsonDepth) {
        throw Error(path + ": safetensors header nests deeper than " +
                    std::to_string(kMaxJsonDepth) + " levels");
      }
      if (ev == Ev::object_start) keys.emplace_back();
    } else if (ev == Ev::object_end) {
      keys.pop_back();
    } else if (ev == Ev::key && !keys.empty()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second) {
        throw Error(path + ": safetensors header has the key '" + k + "' twice");
      }
    }
    return true;
  };
  try {
    header = nlohmann::ordered_json::parse(base + 8, base + 8 + n, check);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": safetensors header is not valid JSON (" + e.what() + ")");
  }
  if (!header.is_object()) throw Error(path + ": safetensors header is not a JSON object");
  const unsigned char* data = base + 8 + n;
  const uint64_t data_size = size - 8 - n;

  TensorFile out;
  out.path = path;
  out.owners.push_back(std::move(owner));
  struct Item {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t begin, end;
  };
  std::vector<Item> items;
  for (const auto& [name, spec] : header.items()) {
    if (name == "__metadata__") {
      if (!spec.is_object()) throw Error(path + ": __metadata__ is not an object");
      for (const auto& [k, v] : spec.items()) {
        if (!v.is_string()) throw Error(path + ": __metadata__ '" + k + "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    // (A copy of the name: clang 14 cannot capture a structured binding.)
    auto fail = [&path, tensor = std::string(name)](const std::string& what) {
      return Error(path + ": tensor '" + tensor + "': " + what);
    };
    if (!spec.is_object()) throw fail("header entry is not an object");
    if (!spec.contains("dtype") || !spec["dtype"].is_string()) throw fail("dtype is missing");
    const std::string tag = spec["dtype"].get<std::string>();
    DType dtype;
    if (!parse_dtype(tag, &dtype)) {
      throw fail("dtype '" + tag + "' is not supported (F32, F16, BF16, I32, I64, U8, I8 are)");
    }
    if (!spec.contains("shape") || !spec["shape"].is_array()) throw fail("shape is missing");
    Shape shape;
    if (spec["shape"].size() > kMaxDims) throw fail("shape has more than 64 dimensions");
    for (const auto& d : spec["shape"]) {
      const uint64_t dim = json_uint(d, fail, "shape entries");
      if (dim > uint64_t(INT64_MAX)) throw fail("shape is too large");
      shape.push_back(int64_t(dim));
    }
    uint64_t numel = 0;
    if (!checked::numel(shape, &numel, std::max<uint64_t>(data_size, uint64_t(1) << 20))) {
      throw fail("shape " + shape_str(shape) + " is too large: more elements than the data " +
                 "section (" + std::to_string(data_size) + " bytes) can hold");
    }
    if (!spec.contains("data_offsets") || !spec["data_offsets"].is_array() ||
        spec["data_offsets"].size() != 2) {
      throw fail("data_offsets must be [begin, end]");
    }
    const uint64_t begin = json_uint(spec["data_offsets"][0], fail, "data_offsets");
    const uint64_t end = json_uint(spec["data_offsets"][1], fail, "data_offsets");
    uint64_t nbytes;
    if (!mul_ok(numel, dtype_size(dtype), &nbytes)) throw fail("shape is too large");
    if (begin > end || end > data_size) {
      throw fail("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                 "] lie outside the data section (" + std::to_string(data_size) +
                 " bytes; truncated?)");
    }
    if (end - begin != nbytes) {
      throw fail("data_offsets span " + std::to_string(end - begin) + " bytes but " + tag + " " +
                 shape_str(shape) + " needs " + std::to_string(nbytes));
    }
    items.push_back({name, dtype, std::move(shape), begin, end});
  }
  // File order is data order; no two tensors may share bytes.
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.begin < b.begin; });
  const Item* prev = nullptr;  // the last tensor with bytes
  for (const Item& it : items) {
    if (it.end == it.begin) continue;
    if (prev && it.begin < prev->end) {
      throw Error(path + ": tensors '" + prev->name + "' and '" + it.name +
                  "' overlap in the data section (data_offsets [" + std::to_string(prev->begin) +
                  ", " + std::to_string(prev->end) + "] and [" + std::to_string(it.begin) + ", " +
                  std::to_string(it.end) + "])");
    }
    prev = &it;
  }
  for (Item& it : items) add_view(out, it.name, it.dtype, std::move(it.shape), data + it.begin);
  return out;
}

}  // namespace

TensorFile read_safetensors_mapped(std::shared_ptr<const MappedFile> file) {
  const unsigned char* base = file->data();
  const uint64_t size = file->size();
  const std::string path = file->path();
  return read_safetensors_span(base, size, path, std::move(file));
}

}  // namespace io

TensorFile read_safetensors_bytes(std::shared_ptr<const std::string> bytes,
                                  const std::string& name) {
  const auto* base = reinterpret_cast<const unsigned char*>(bytes->data());
  const uint64_t size = bytes->size();
  return io::read_safetensors_span(base, size, name, std::move(bytes));
}

TensorFile read_safetensors(const std::string& path) {
  return io::read_safetensors_mapped(MappedFile::open(path));
}

namespace {

// The header text (padded to 8 bytes) of a safetensors file holding `tensors`.
std::string safetensors_header(const std::string& path, const NamedTensors& tensors,
                               const Metadata& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  std::unordered_set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__" || !seen.insert(name).second) {
      throw Error(path + ": tensor '" + name + "': empty, reserved or repeated name");
    }
    if (t.numel() < 0) throw Error(path + ": tensor '" + name + "': negative shape");
    if (t.nbytes() > 0 && !t.data) throw Error(path + ": tensor '" + name + "': no data");
    nlohmann::ordered_json spec;
    spec["dtype"] = io::dtype_tag(t.dtype);
    spec["shape"] = t.shape;
    spec["data_offsets"] = {offset, offset + t.nbytes()};
    header[name] = spec;
    offset += t.nbytes();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": cannot write the safetensors header (" + e.what() + ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void put_safetensors(std::ostream& o, const std::string& header, const NamedTensors& tensors) {
  io::put64(o, header.size());
  o.write(header.data(), std::streamsize(header.size()));
  for (const auto& [name, t] : tensors)
    o.write(static_cast<const char*>(t.data), std::streamsize(t.nbytes()));
}

}  // namespace

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const Metadata& metadata) {
  const std::string header = safetensors_header(path, tensors, metadata);
  write_file_atomic(path, [&](std::ostream& o) { put_safetensors(o, header, tensors); });
}

std::string safetensors_bytes(const NamedTensors& tensors, const Metadata& metadata,
                              const std::string& name) {
  const std::string header = safetensors_header(name, tensors, metadata);
  std::ostringstream o;
  put_safetensors(o, header, tensors);
  return std::move(o).str();
}

}  // namespace rwkv7
