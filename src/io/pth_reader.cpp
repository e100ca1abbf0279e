// `.pth` reader: zip container + restricted unpickler; tensors viewed in the mapping.
#include <algorithm>
#include <cstring>

#include "io/io_internal.hpp"
#include "io/io_util.hpp"
#include "io/pickle.hpp"
#include "io/tensor_io.hpp"
#include "io/zip_reader.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace io {

namespace {

constexpr uint64_t kMaxPickleBytes = uint64_t(1) << 28;
// A tensor with a zero dimension holds nothing, but loops may still run over its other
// dimensions: their product is bounded by the storage, or by this for tiny storages.
constexpr uint64_t kEmptyDimsLimit = uint64_t(1) << 20;

// Storage type → DType; throws naming the tensor for types DType cannot hold.
DType storage_dtype(const std::string& path, const PickledTensor& t) {
  const std::string& s = t.storage_type;
  if (s == "torch.FloatStorage") return DType::F32;
  if (s == "torch.HalfStorage") return DType::F16;
  if (s == "torch.BFloat16Storage") return DType::BF16;
  if (s == "torch.IntStorage") return DType::I32;
  if (s == "torch.LongStorage") return DType::I64;
  if (s == "torch.ByteStorage") return DType::U8;
  if (s == "torch.CharStorage") return DType::I8;
  throw Error(path + ": tensor '" + t.name + "': storage type " + s +
              " is not supported (f32, f16, bf16, i32, i64, u8, i8 are)");
}

// Finds "<archive>/data.pkl" (the archive folder name is arbitrary, usually the file stem).
const ZipEntry& find_pickle(const ZipReader& zip, std::string* prefix) {
  const ZipEntry* found = nullptr;
  for (const ZipEntry& e : zip.entries()) {
    const std::string& n = e.name;
    if (n.size() < 8 || n.compare(n.size() - 8, 8, "data.pkl") != 0) continue;
    const std::string pre = n.substr(0, n.size() - 8);
    if (!(pre.empty() || (pre.back() == '/' && pre.find('/') == pre.size() - 1))) continue;
    if (found) throw Error(zip.path() + ": zip holds more than one data.pkl");
    found = &e;
    *prefix = pre;
  }
  if (!found) {
    throw Error(zip.path() + ": zip archive has no <name>/data.pkl; not a torch.save checkpoint");
  }
  return *found;
}

}  // namespace

void add_view(TensorFile& out, const std::string& name, DType dtype, Shape shape,
              const unsigned char* bytes) {
  const size_t es = dtype_size(dtype);
  TensorView v{dtype, std::move(shape), bytes};
  if (reinterpret_cast<uintptr_t>(bytes) % es != 0) {
    auto buf = aligned_buffer(v.nbytes());
    std::memcpy(buf.get(), bytes, v.nbytes());
    v.data = buf.get();
    out.owners.push_back(std::move(buf));
  }
  out.add(name, v);
}

TensorFile read_pth_mapped(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  ZipReader zip(file);
  std::string prefix;
  const ZipEntry& pkl = find_pickle(zip, &prefix);
  if (pkl.size > kMaxPickleBytes) throw Error(path + ": data.pkl is implausibly large");
  auto pkl_bytes = zip.data(pkl);
  if (crc32_update(0, pkl_bytes.data(), pkl_bytes.size()) != pkl.crc32) {
    throw Error(path + ": data.pkl fails its CRC-32 check (corrupt file)");
  }
  if (const ZipEntry* bo = zip.find(prefix + "byteorder")) {
    auto b = zip.data(*bo);
    const std::string order(reinterpret_cast<const char*>(b.data()), b.size());
    if (order.rfind("little", 0) != 0) {
      throw Error(path + ": byteorder is '" + order +
                  "'; only little-endian checkpoints are supported");
    }
  }
  const std::vector<PickledTensor> tensors = unpickle_state_dict(pkl_bytes, path);

  TensorFile out;
  out.path = path;
  out.owners.push_back(file);
  for (const PickledTensor& t : tensors) {
    auto fail = [&](const std::string& what) -> Error {
      return Error(path + ": tensor '" + t.name + "': " + what);
    };
    const DType dtype = storage_dtype(path, t);
    const uint64_t es = dtype_size(dtype);
    const ZipEntry* entry = zip.find(prefix + "data/" + t.storage_key);
    if (!entry) throw fail("storage '" + t.storage_key + "' is missing from the archive");
    auto storage = zip.data(*entry);
    const uint64_t storage_elems = storage.size() / es;

    // Elements spanned: offset + sum((size-1)*stride) + 1 (none when a dimension is 0). The
    // element count is bounded by the storage too: a view with a stride of 0 (an expanded
    // tensor) could otherwise ask for any amount of memory from a few bytes of storage.
    uint64_t numel = 0, last = 0;
    if (!checked::numel(t.shape, &numel, std::max(storage_elems, kEmptyDimsLimit)) ||
        numel > storage_elems) {
      throw fail("shape " + shape_str(t.shape) + " has more elements than its storage of " +
                 std::to_string(storage_elems) + " elements");
    }
    bool contiguous = true;
    uint64_t expect = 1;
    for (size_t d = t.shape.size(); d-- > 0;) {
      const uint64_t sz = uint64_t(t.shape[d]), st = uint64_t(t.stride[d]);
      uint64_t span = 0;
      if ((sz > 0 && !checked::mul(sz - 1, st, &span)) || !checked::add(last, span, &last)) {
        throw fail("strides of shape " + shape_str(t.shape) + " run past any storage");
      }
      if (sz != 1 && st != expect) contiguous = false;
      if (!checked::mul(expect, sz, &expect)) expect = UINT64_MAX;  // only compared when sz != 1
    }
    if (numel > 0 && (last == UINT64_MAX || !fits(uint64_t(t.offset), last + 1, storage_elems))) {
      throw fail("view (offset " + std::to_string(t.offset) + ", shape " + shape_str(t.shape) +
                 ") runs past its storage of " + std::to_string(storage_elems) + " elements");
    }
    const unsigned char* base = storage.data() + (numel > 0 ? uint64_t(t.offset) * es : 0);
    if (contiguous || numel == 0) {
      add_view(out, t.name, dtype, t.shape, base);
      continue;
    }
    // Strided view: gather into an owned contiguous buffer.
    // numel <= storage_elems, so numel * es <= the storage's byte size: no overflow.
    auto buf = aligned_buffer(size_t(numel * es));
    std::vector<int64_t> idx(t.shape.size(), 0);
    for (uint64_t n = 0; n < numel; ++n) {
      uint64_t src = 0;
      for (size_t d = 0; d < idx.size(); ++d) src += uint64_t(idx[d]) * uint64_t(t.stride[d]);
      std::memcpy(buf.get() + n * es, base + src * es, es);
      for (size_t d = idx.size(); d-- > 0;) {
        if (++idx[d] < t.shape[d]) break;
        idx[d] = 0;
      }
    }
    out.add(t.name, TensorView{dtype, t.shape, buf.get()});
    out.owners.push_back(std::move(buf));
  }
  return out;
}

}  // namespace io

TensorFile read_pth(const std::string& path) { return io::read_pth_mapped(MappedFile::open(path)); }

}  // namespace rwkv7
