#pragma once
// Views of stored tensors (row-major, contiguous) and a named collection of them that keeps
// its backing memory (a file mapping or owned buffers) alive.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.hpp"

namespace rwkv7 {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[2, 64]"

// Splits "<prefix><digits>.<rest>" (e.g. "blocks.12.att.key.weight" with prefix "blocks."):
// true with the digits and the rest when `name` has that form (at least one digit). A loop,
// not a regex: std::regex recurses per character and overflows the stack on long names.
bool split_indexed_name(std::string_view name, std::string_view prefix, std::string_view* digits,
                        std::string_view* rest);

struct TensorView {
  DType dtype = DType::F32;
  Shape shape;
  const void* data = nullptr;  // contiguous row-major, aligned to dtype_size(dtype) (2 for blocks)

  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return row_bytes(dtype, numel()); }
};

// A checkpoint or state file as read: every tensor by name, plus string metadata.
class TensorFile {
 public:
  std::string path;                                        // for error messages
  std::map<std::string, TensorView, std::less<>> tensors;  // by name
  std::vector<std::string> order;                          // names in file order
  std::map<std::string, std::string> metadata;             // safetensors __metadata__, pth extras
  std::vector<std::shared_ptr<const void>> owners;         // keeps mappings/buffers alive
  // The file mapping the views may point into (read_tensor_file; empty when none): a view
  // inside it costs no memory of its own (its pages can be given back and read again).
  const unsigned char* mapping = nullptr;
  size_t mapping_size = 0;

  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  // Throws an Error naming the file and the tensor when it is missing.
  const TensorView& get(const std::string& name) const;
  void add(const std::string& name, const TensorView& view);
  // True when [p, p + n) lies inside `mapping` (not a buffer made while reading or merging).
  bool in_mapping(const void* p, size_t n) const;
};

// Owned float buffer with a shape, used for outputs (logits, states, gradients).
struct FloatTensor {
  Shape shape;
  std::vector<float> data;

  FloatTensor() = default;
  explicit FloatTensor(Shape s) : shape(std::move(s)), data(size_t(shape_numel(shape)), 0.0f) {}
  TensorView view() const { return TensorView{DType::F32, shape, data.data()}; }
};

// fp32 tensors by name (parameters, gradients, optimizer moments). The transparent
// comparator lets a name built in a stack buffer look one up without allocating.
using TensorMap = std::map<std::string, FloatTensor, std::less<>>;

// Copies any float-like view into fp32.
std::vector<float> to_f32(const TensorView& v);

}  // namespace rwkv7
