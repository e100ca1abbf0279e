// GGUF v3 container: raw reader (bounds-checked against the file) and writer.
#include "io/gguf.hpp"

#include <cstring>
#include <sstream>
#include <unordered_set>

#include "core/atomic_write.hpp"
#include "core/checked.hpp"
#include "core/quant.hpp"
#include "io/io_util.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

constexpr uint32_t kMaxDims = 4;                  // GGML_MAX_DIMS
constexpr uint64_t kMaxStringBytes = 1ull << 30;  // a key, name or value string
constexpr uint64_t kDefaultAlignment = 32;

size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::BOOL:
      return 1;
    case GgufType::U16:
    case GgufType::I16:
      return 2;
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32:
      return 4;
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::F64:
      return 8;
    default:
      return 0;
  }
}

const char* type_name(GgufType t) {
  static const char* names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                "bool", "string", "array", "u64", "i64", "f64"};
  return uint32_t(t) <= 12 ? names[uint32_t(t)] : "?";
}

// Sequential little-endian reader over [p, end) that throws instead of overrunning.
class Cursor {
 public:
  Cursor(const unsigned char* base, size_t size, std::string path)
      : base_(base), size_(size), path_(std::move(path)) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  Error fail(const std::string& what) const {
    return Error(path_ + ": GGUF " + what + " (at byte " + std::to_string(pos_) + ")");
  }
  const unsigned char* take(uint64_t n, const char* what) {
    if (n > left())
      throw fail(std::string("truncated: ") + what + " runs past the end of the file");
    const unsigned char* p = base_ + pos_;
    pos_ += size_t(n);
    return p;
  }
  uint32_t u32(const char* what) { return io::le32(take(4, what)); }
  uint64_t u64(const char* what) { return io::le64(take(8, what)); }
  std::string str(const char* what) {
    const uint64_t n = u64(what);
    if (n > kMaxStringBytes)
      throw fail(std::string(what) + " length " + std::to_string(n) + " is implausible");
    const unsigned char* p = take(n, what);
    return std::string(reinterpret_cast<const char*>(p), size_t(n));
  }

 private:
  const unsigned char* base_;
  size_t size_;
  size_t pos_ = 0;
  std::string path_;
};

GgufValue read_scalar(Cursor& c, GgufType t, const std::string& key) {
  GgufValue v;
  v.type = t;
  if (t == GgufType::STRING) {
    v.s = c.str("string value");
    return v;
  }
  const size_t n = scalar_size(t);
  if (n == 0) throw c.fail("key '" + key + "': unknown value type " + std::to_string(uint32_t(t)));
  const unsigned char* p = c.take(n, "value");
  switch (t) {
    case GgufType::U8:
    case GgufType::BOOL:
      v.i = p[0];
      break;
    case GgufType::I8:
      v.i = int8_t(p[0]);
      break;
    case GgufType::U16:
      v.i = io::le16(p);
      break;
    case GgufType::I16:
      v.i = int16_t(io::le16(p));
      break;
    case GgufType::U32:
      v.i = io::le32(p);
      break;
    case GgufType::I32:
      v.i = int32_t(io::le32(p));
      break;
    case GgufType::U64:
    case GgufType::I64:
      v.i = int64_t(io::le64(p));
      break;
    case GgufType::F32: {
      uint32_t b = io::le32(p);
      float f;
      std::memcpy(&f, &b, 4);
      v.f = f;
      break;
    }
    case GgufType::F64: {
      uint64_t b = io::le64(p);
      std::memcpy(&v.f, &b, 8);
      break;
    }
    default:
      break;
  }
  return v;
}

// Memory the metadata may take, per byte of file (plus kMetaSlack): an array element is a
// GgufValue (~100 bytes) however few bytes it takes in the file, so arrays are charged here.
constexpr uint64_t kMetaBytesPerFileByte = 32;
constexpr uint64_t kMetaSlack = 1ull << 20;

GgufValue read_value(Cursor& c, GgufType t, const std::string& key, uint64_t& budget) {
  if (t != GgufType::ARRAY) return read_scalar(c, t, key);
  GgufValue v;
  v.type = GgufType::ARRAY;
  v.elem = GgufType(c.u32("array element type"));
  if (v.elem == GgufType::ARRAY) throw c.fail("key '" + key + "': nested arrays are not supported");
  if (v.elem != GgufType::STRING && scalar_size(v.elem) == 0) {
    throw c.fail("key '" + key + "': unknown array element type " +
                 std::to_string(uint32_t(v.elem)));
  }
  const uint64_t n = c.u64("array length");
  // Every element takes at least its size (strings: their 8-byte length) in the file.
  const uint64_t min_each = v.elem == GgufType::STRING ? 8 : scalar_size(v.elem);
  if (n > c.left() / min_each) {
    throw c.fail("key '" + key + "': array of " + std::to_string(n) + " elements exceeds the file");
  }
  if (n > budget / sizeof(GgufValue)) {
    throw c.fail("key '" + key + "': array of " + std::to_string(n) +
                 " elements needs more memory than a file of this size may ask for (" +
                 std::to_string(kMetaBytesPerFileByte) + " bytes per file byte)");
  }
  budget -= n * sizeof(GgufValue);
  v.arr.reserve(size_t(n));
  for (uint64_t k = 0; k < n; ++k) v.arr.push_back(read_scalar(c, v.elem, key));
  return v;
}

void write_scalar(std::ostream& o, const GgufValue& v, GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::BOOL: {
      const char b = char(uint8_t(v.i));
      o.write(&b, 1);
      break;
    }
    case GgufType::U16:
    case GgufType::I16:
      io::put16(o, uint16_t(v.i));
      break;
    case GgufType::U32:
    case GgufType::I32:
      io::put32(o, uint32_t(v.i));
      break;
    case GgufType::U64:
    case GgufType::I64:
      io::put64(o, uint64_t(v.i));
      break;
    case GgufType::F32: {
      const float f = float(v.f);
      uint32_t b;
      std::memcpy(&b, &f, 4);
      io::put32(o, b);
      break;
    }
    case GgufType::F64: {
      uint64_t b;
      std::memcpy(&b, &v.f, 8);
      io::put64(o, b);
      break;
    }
    case GgufType::STRING:
      io::put64(o, v.s.size());
      o.write(v.s.data(), std::streamsize(v.s.size()));
      break;
    case GgufType::ARRAY:
      throw Error("GGUF writer: nested arrays are not supported");
  }
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

DType dtype_from_ggml(uint32_t type) {
  switch (type) {
    case ggml_type::F32:
      return DType::F32;
    case ggml_type::F16:
      return DType::F16;
    case ggml_type::BF16:
      return DType::BF16;
    case ggml_type::Q8_0:
      return DType::Q8_0;
    case ggml_type::Q4_0:
      return DType::Q4_0;
    case ggml_type::Q5_0:
      return DType::Q5_0;
    case ggml_type::Q5_1:
      return DType::Q5_1;
    case ggml_type::Q4_K:
      return DType::Q4_K;
    case ggml_type::Q5_K:
      return DType::Q5_K;
    case ggml_type::Q6_K:
      return DType::Q6_K;
    case ggml_type::IQ4_NL:
      return DType::IQ4_NL;
  }
  throw Error("ggml type id " + std::to_string(type) +
              " is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, "
              "Q6_K, IQ4_NL)");
}

uint32_t ggml_from_dtype(DType t) {
  switch (t) {
    case DType::F32:
      return ggml_type::F32;
    case DType::F16:
      return ggml_type::F16;
    case DType::BF16:
      return ggml_type::BF16;
    case DType::Q8_0:
      return ggml_type::Q8_0;
    case DType::Q4_0:
      return ggml_type::Q4_0;
    case DType::Q5_0:
      return ggml_type::Q5_0;
    case DType::Q5_1:
      return ggml_type::Q5_1;
    case DType::Q4_K:
      return ggml_type::Q4_K;
    case DType::Q5_K:
      return ggml_type::Q5_K;
    case DType::Q6_K:
      return ggml_type::Q6_K;
    case DType::IQ4_NL:
      return ggml_type::IQ4_NL;
    default:
      throw Error("GGUF cannot store tensors of dtype " + dtype_name(t));
  }
}

GgufValue GgufValue::array(GgufType elem, std::vector<GgufValue> values) {
  GgufValue v;
  v.type = GgufType::ARRAY;
  v.elem = elem;
  v.arr = std::move(values);
  return v;
}

std::string GgufValue::to_string() const {
  switch (type) {
    case GgufType::STRING:
      return s;
    case GgufType::F32:
    case GgufType::F64:
      return std::to_string(f);
    case GgufType::BOOL:
      return i ? "true" : "false";
    case GgufType::U64:
      return std::to_string(uint64_t(i));
    case GgufType::ARRAY: {
      // Appended piece by piece: "[" + std::string trips GCC 12's -Wrestrict false positive.
      std::string text = "[";
      text += std::to_string(arr.size());
      text += " x ";
      text += type_name(elem);
      text += "]";
      return text;
    }
    default:
      return std::to_string(i);
  }
}

size_t GgufTensor::nbytes() const {
  if (ne.empty()) return row_bytes(dtype, 1);
  size_t rows = 1;
  for (size_t k = 1; k < ne.size(); ++k) rows *= size_t(ne[k]);
  return row_bytes(dtype, ne[0]) * rows;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  for (const auto& [k, v] : kv)
    if (k == key) return &v;
  return nullptr;
}

GgufFile read_gguf_raw(std::shared_ptr<const MappedFile> file) {
  GgufFile g;
  g.path = file->path();
  Cursor c(file->data(), file->size(), g.path);
  const unsigned char* magic = c.take(4, "magic");
  if (std::memcmp(magic, "GGUF", 4) != 0) throw c.fail("magic is not 'GGUF'");
  const uint32_t version = c.u32("version");
  if (version != 3 && version != 2) {
    throw c.fail("version " + std::to_string(version) + " is not supported (2 or 3)");
  }
  const uint64_t n_tensors = c.u64("tensor count");
  const uint64_t n_kv = c.u64("metadata count");
  // Each kv takes at least 12 bytes (key length + type), each tensor info at least 24.
  if (n_kv > c.left() / 12)
    throw c.fail("metadata count " + std::to_string(n_kv) + " exceeds the file");
  std::unordered_set<std::string> keys;
  uint64_t budget = kMetaBytesPerFileByte * file->size() + kMetaSlack;
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.str("metadata key");
    if (!keys.insert(key).second) throw c.fail("metadata key '" + key + "' appears twice");
    const GgufType t = GgufType(c.u32("value type"));
    GgufValue v = read_value(c, t, key, budget);
    if (key == "general.alignment") {
      if (t != GgufType::U32 || v.i == 0 || (v.i & (v.i - 1)) != 0) {
        throw c.fail("general.alignment must be a u32 power of two, got " + v.to_string());
      }
      g.alignment = uint32_t(v.i);
    }
    g.kv.emplace_back(std::move(key), std::move(v));
  }
  if (n_tensors > c.left() / 24) {
    throw c.fail("tensor count " + std::to_string(n_tensors) + " exceeds the file");
  }
  struct Info {
    uint64_t offset;
    uint32_t type;
  };
  std::vector<Info> infos;
  std::unordered_set<std::string> names;
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensor t;
    t.name = c.str("tensor name");
    if (!names.insert(t.name).second) throw c.fail("tensor '" + t.name + "' appears twice");
    const uint32_t nd = c.u32("dimension count");
    if (nd > kMaxDims) {
      throw c.fail("tensor '" + t.name + "' has " + std::to_string(nd) + " dimensions (max 4)");
    }
    for (uint32_t d = 0; d < nd; ++d) {
      const uint64_t n = c.u64("dimension");
      if (n > (1ull << 60)) throw c.fail("tensor '" + t.name + "' has an implausible shape");
      t.ne.push_back(int64_t(n));
    }
    const uint32_t type = c.u32("tensor type");
    try {
      t.dtype = dtype_from_ggml(type);
    } catch (const Error& e) {
      throw c.fail("tensor '" + t.name + "': " + e.what());
    }
    if (is_quantized(t.dtype) && (t.ne.empty() || t.ne[0] % quant_block_elems(t.dtype) != 0)) {
      throw c.fail("tensor '" + t.name + "' of type " + dtype_name(t.dtype) +
                   " needs a first dimension that is a multiple of " +
                   std::to_string(quant_block_elems(t.dtype)));
    }
    // At most 2^60 elements (their bytes are checked against the file below). An empty tensor
    // has no bytes to check: the product of its nonzero dimensions must fit the file as if it
    // held them, so a zero dimension cannot hide a huge other one that a loop (a transpose)
    // would run over.
    uint64_t numel = 0;
    if (!checked::numel(t.ne, &numel, 1ull << 60) ||
        (numel == 0 && !checked::numel(t.ne, &numel, 2 * file->size() + (1ull << 20)))) {
      throw c.fail("tensor '" + t.name + "' has an implausible shape " + shape_str(t.ne) +
                   " (more elements than the file can hold)");
    }
    infos.push_back({c.u64("tensor offset"), type});
    g.tensors.push_back(std::move(t));
  }
  const uint64_t data_start = align_up(c.pos(), g.alignment);
  const uint64_t size = file->size();
  for (size_t k = 0; k < g.tensors.size(); ++k) {
    GgufTensor& t = g.tensors[k];
    // Sizes cannot overflow: numel < 2^60 and at most 4 bytes per element.
    const uint64_t nbytes = t.nbytes();
    const uint64_t off = infos[k].offset;
    if (off % g.alignment != 0) {
      throw Error(g.path + ": GGUF tensor '" + t.name + "' offset " + std::to_string(off) +
                  " is not a multiple of the alignment " + std::to_string(g.alignment));
    }
    if (data_start > size || !io::fits(off, nbytes, size - data_start)) {
      throw Error(g.path + ": GGUF tensor '" + t.name + "' (" + std::to_string(nbytes) +
                  " bytes at data offset " + std::to_string(off) +
                  ") runs past the end of the file");
    }
    const unsigned char* p = file->data() + data_start + off;
    const size_t align = is_quantized(t.dtype) ? 2 : dtype_size(t.dtype);
    if (reinterpret_cast<uintptr_t>(p) % align != 0) {  // alignment < element size: copy
      auto buf = io::aligned_buffer(size_t(nbytes));
      std::memcpy(buf.get(), p, size_t(nbytes));
      p = buf.get();
      g.owners.push_back(std::move(buf));
    }
    t.data = p;
  }
  g.owners.push_back(std::move(file));
  return g;
}

void write_gguf_raw(const std::string& path, const GgufFile& g) {
  uint64_t alignment = kDefaultAlignment;
  if (const GgufValue* a = g.find("general.alignment")) {
    if (a->type != GgufType::U32 || a->i <= 0 || (a->i & (a->i - 1)) != 0) {
      throw Error(path + ": general.alignment must be a u32 power of two");
    }
    alignment = uint64_t(a->i);
  }
  std::unordered_set<std::string> names;
  std::vector<uint64_t> offsets;
  uint64_t off = 0;
  for (const GgufTensor& t : g.tensors) {
    if (!names.insert(t.name).second) throw Error(path + ": tensor '" + t.name + "' appears twice");
    if (t.ne.size() > kMaxDims)
      throw Error(path + ": tensor '" + t.name + "' has more than 4 dims");
    ggml_from_dtype(t.dtype);
    if (t.nbytes() > 0 && !t.data) throw Error(path + ": tensor '" + t.name + "': no data");
    offsets.push_back(off);
    off = align_up(off + t.nbytes(), alignment);
  }
  write_file_atomic(path, [&](std::ostream& o) {
    uint64_t pos = 0;
    auto counting = [&](const void* p, size_t n) {
      o.write(static_cast<const char*>(p), std::streamsize(n));
      pos += n;
    };
    std::ostringstream head;
    head.write("GGUF", 4);
    io::put32(head, 3);
    io::put64(head, g.tensors.size());
    io::put64(head, g.kv.size());
    for (const auto& [key, v] : g.kv) {
      GgufValue k;
      k.s = key;
      write_scalar(head, k, GgufType::STRING);
      io::put32(head, uint32_t(v.type));
      if (v.type == GgufType::ARRAY) {
        io::put32(head, uint32_t(v.elem));
        io::put64(head, v.arr.size());
        for (const GgufValue& e : v.arr) write_scalar(head, e, v.elem);
      } else {
        write_scalar(head, v, v.type);
      }
    }
    for (size_t k = 0; k < g.tensors.size(); ++k) {
      const GgufTensor& t = g.tensors[k];
      GgufValue n;
      n.s = t.name;
      write_scalar(head, n, GgufType::STRING);
      io::put32(head, uint32_t(t.ne.size()));
      for (int64_t d : t.ne) io::put64(head, uint64_t(d));
      io::put32(head, ggml_from_dtype(t.dtype));
      io::put64(head, offsets[k]);
    }
    const std::string h = head.str();
    counting(h.data(), h.size());
    const std::string zeros(size_t(alignment), '\0');
    counting(zeros.data(), size_t(align_up(pos, alignment) - pos));
    const uint64_t data_start = pos;
    for (size_t k = 0; k < g.tensors.size(); ++k) {
      counting(zeros.data(), size_t(data_start + offsets[k] - pos));
      counting(g.tensors[k].data, g.tensors[k].nbytes());
    }
  });
}

}  // namespace rwkv7
