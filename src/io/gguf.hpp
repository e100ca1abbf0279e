#pragma once
// GGUF v3 (llama.cpp / ggml): a raw reader and writer of the container (metadata key-values of
// every type, arrays included; tensor infos; aligned data), and the two-way mapping between
// the official RWKV-7 checkpoint layout (SPEC §2) and llama.cpp's `rwkv7` architecture.
//
// Layout (little-endian): "GGUF", u32 version (3), u64 tensor count, u64 kv count; kvs
// (string key, u32 value type, value); tensor infos (string name, u32 n_dims, u64 ne[n_dims]
// with ne[0] the innermost dimension = columns, u32 ggml type, u64 offset into the data
// section); padding to general.alignment (default 32); the data section. A string is a u64
// length plus bytes; an array is a u32 element type, a u64 count and the elements.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/mapped_file.hpp"
#include "core/tensor.hpp"

namespace rwkv7 {

enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

// ggml tensor type ids this engine reads and writes.
namespace ggml_type {
constexpr uint32_t F32 = 0, F16 = 1, Q4_0 = 2, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13,
                   Q6_K = 14, IQ4_NL = 20, BF16 = 30;
}
// ggml type id ↔ DType; Error for types other than the eleven above (naming the id).
DType dtype_from_ggml(uint32_t type);
uint32_t ggml_from_dtype(DType t);

// One metadata value. Integers (and bool) are held in `i` (u64 values as their bit pattern),
// floats in `f`, strings in `s`; arrays hold `elem` and `arr` (no nested arrays).
struct GgufValue {
  GgufType type = GgufType::U32;
  int64_t i = 0;
  double f = 0;
  std::string s;
  GgufType elem = GgufType::U8;
  std::vector<GgufValue> arr;

  static GgufValue u32(uint32_t v) {
    GgufValue g;
    g.i = int64_t(v);
    return g;
  }
  static GgufValue i32(int32_t v) {
    GgufValue g;
    g.type = GgufType::I32;
    g.i = v;
    return g;
  }
  static GgufValue f32(float v) {
    GgufValue g;
    g.type = GgufType::F32;
    g.f = double(v);
    return g;
  }
  static GgufValue str(std::string v) {
    GgufValue g;
    g.type = GgufType::STRING;
    g.s = std::move(v);
    return g;
  }
  static GgufValue array(GgufType elem, std::vector<GgufValue> values);
  // Metadata as text: numbers, the string itself, or "[N x type]" for arrays.
  std::string to_string() const;
  bool operator==(const GgufValue&) const = default;
};

struct GgufTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> ne;  // ggml order: ne[0] = innermost (columns)
  const void* data = nullptr;
  size_t nbytes() const;
};

struct GgufFile {
  std::string path;
  std::vector<std::pair<std::string, GgufValue>> kv;  // in file order
  std::vector<GgufTensor> tensors;                    // in file order
  uint32_t alignment = 32;
  std::vector<std::shared_ptr<const void>> owners;  // mapping / buffers behind tensor data

  const GgufValue* find(const std::string& key) const;
};

// Raw container. Every count, length, offset and size is checked against the file: hostile
// input gives an Error naming the file (and the tensor or key), never a crash.
GgufFile read_gguf_raw(std::shared_ptr<const MappedFile> file);
// Writes atomically; `alignment` taken from general.alignment when present.
void write_gguf_raw(const std::string& path, const GgufFile& g);

// read_tensor_file for GGUF: with general.architecture == "rwkv7", tensors come back under the
// official names and shapes (see gguf_rwkv7.cpp); otherwise under their GGUF names with
// PyTorch-order shapes (ne reversed). Scalar and string metadata go to TensorFile::metadata.
TensorFile read_gguf(std::shared_ptr<const MappedFile> file);
TensorFile read_gguf(const std::string& path);

struct GgufModelOptions {
  DType type = DType::F32;  // big matrices: f32, bf16, f16 or a quantised type
  // llama-quantize's per-tensor choices for its K-quant file types (Q4_K_M, Q5_K_M, Q6_K):
  // the head (output.weight) in Q6_K (Q8_0 if its columns are not whole super-blocks). For
  // RWKV-7 no other rule of llama_tensor_get_type matches a tensor name (they key on attn_v,
  // ffn_down, ...), so the rest get `type`. Off: every big matrix gets `type`, as --pure.
  bool llama_mix = false;
  std::vector<std::string> tokens;  // World vocabulary token bytes by id (empty: none)
  std::string name;                 // general.name, when not empty
};

// The type a big matrix with `cols` columns is stored in when `type` is asked for: `type`
// when the columns are whole blocks, else llama-quantize's fallback (Q4_K → Q5_0, Q5_K →
// Q5_1, Q6_K → Q8_0; a 32-block type, or a fallback that still does not fit → f16).
DType gguf_matrix_type(DType type, int64_t cols);

// Official-layout RWKV-7 weights → llama.cpp `rwkv7` GGUF (names, fused/transposed tensors,
// hyper-parameters, optional World vocabulary). Big 2-D matrices get `type` (through
// gguf_matrix_type, and llama_mix); small tensors stay f32.
GgufFile rwkv7_to_gguf(const TensorFile& official, const GgufModelOptions& opts);
// Maps a raw llama.cpp `rwkv7` GGUF to official names and shapes.
TensorFile rwkv7_from_gguf(GgufFile g);

// llama.cpp's text form of a World token: Python's repr() of the bytes without b'' quotes.
std::string rwkv_world_token_text(const std::string& bytes);

}  // namespace rwkv7
