// `.pth` writer: the zip layout and pickle torch 1.x's torch.save produces, loadable by
// torch.load(weights_only=True).
#include <filesystem>
#include <unordered_set>

#include "core/atomic_write.hpp"
#include "io/io_internal.hpp"
#include "io/pickle.hpp"
#include "io/tensor_io.hpp"
#include "io/zip_writer.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace io {

namespace {

const char* storage_type(DType t) {
  switch (t) {
    case DType::F32:
      return "torch.FloatStorage";
    case DType::F16:
      return "torch.HalfStorage";
    case DType::BF16:
      return "torch.BFloat16Storage";
    case DType::I32:
      return "torch.IntStorage";
    case DType::I64:
      return "torch.LongStorage";
    case DType::U8:
      return "torch.ByteStorage";
    case DType::I8:
      return "torch.CharStorage";
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::IQ4_NL:
      throw Error("block-quantised " + dtype_name(t) +
                  " tensors cannot be stored in .pth; use GGUF");
  }
  return "?";
}

}  // namespace

// Exposed for tests: force_zip64 writes zip64 fields even for small files.
void write_pth_impl(const std::string& path, const NamedTensors& tensors, bool force_zip64) {
  std::string archive = std::filesystem::path(path).stem().string();
  for (char& c : archive) {
    if (c == '/' || c == '\\' || static_cast<unsigned char>(c) < 0x20) c = '_';
  }
  if (archive.empty()) archive = "archive";

  std::vector<PickledTensor> pickled;
  std::unordered_set<std::string> seen;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    if (!seen.insert(name).second) throw Error(path + ": tensor '" + name + "' appears twice");
    if (t.numel() < 0) throw Error(path + ": tensor '" + name + "': negative shape");
    if (t.nbytes() > 0 && !t.data) throw Error(path + ": tensor '" + name + "': no data");
    PickledTensor p;
    p.name = name;
    p.storage_type = storage_type(t.dtype);
    p.storage_key = std::to_string(i);
    p.storage_numel = t.numel();
    p.shape = t.shape;
    p.stride.assign(t.shape.size(), 1);
    for (size_t d = t.shape.size(); d-- > 1;) p.stride[d - 1] = p.stride[d] * t.shape[d];
    pickled.push_back(std::move(p));
  }
  const std::string pkl = pickle_state_dict(pickled);
  write_file_atomic(path, [&](std::ostream& o) {
    ZipWriter zip(o, force_zip64);
    zip.add(archive + "/data.pkl", pkl.data(), pkl.size());
    zip.add(archive + "/byteorder", "little", 6);
    for (size_t i = 0; i < tensors.size(); ++i) {
      const TensorView& t = tensors[i].second;
      zip.add(archive + "/data/" + std::to_string(i), t.data, t.nbytes());
    }
    zip.add(archive + "/version", "3\n", 2);
    zip.finish();
  });
}

}  // namespace io

void write_pth(const std::string& path, const NamedTensors& tensors) {
  io::write_pth_impl(path, tensors, false);
}

}  // namespace rwkv7
