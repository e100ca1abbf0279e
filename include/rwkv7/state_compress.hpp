#pragma once
// Compressed states: a State stored in fewer bytes (bf16/fp16, int8 rows, low-rank WKV
// matrices with a fixed or energy-chosen rank per head), and state files that record how
// they were compressed. ratio = stored bytes / fp32 bytes of the State (docs/state-compression.md
// measures what each method keeps of the model's predictions).
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "rwkv7/model.hpp"
#include "rwkv7/state_projection.hpp"

namespace rwkv7 {

// method:
//   f32            exact (ratio 1)
//   bf16, fp16     every number in 16 bits (ratio 0.5); fp16 saturates at ±65504
//   int8           WKV rows as int8 with one fp32 scale per row of each head's matrix
//   lowrank[-bf16|-int8]   each head's WKV matrix S ≈ L·Rᵀ (truncated SVD), the same rank r
//                          for every head; factors fp32, bf16 or int8 (one scale per column)
//   adaptive[-bf16|-int8]  the same, the rank of each head the smallest that keeps a fraction
//                          `energy` of its squared singular values (so it follows each spectrum)
//   learned[-bf16|-int8]   each head's WKV matrix as its code under a learned projection
//                          (rwkv7/state_projection.hpp, `rwkv7 state learn`): rank r of N rows,
//                          fp32, bf16 or int8 (one scale per code row); needs `projection`.
//                          The decoder travels with the state (parts "shared.*") but is shared
//                          by every state of the model, so bytes() and the ratio leave it out.
// The two shift vectors are stored in bf16, or fp32 with exact_shift (always fp32 for f32).
struct CompressOptions {
  std::string method = "f32";
  int64_t rank = -1;  // lowrank*: rank per head; -1: from `ratio`
  double energy =
      -1;             // adaptive*: kept fraction of squared singular values, (0, 1]; -1: from ratio
  double ratio = -1;  // target: the largest rank / energy whose ratio does not exceed it
  bool exact_shift = false;
  std::shared_ptr<const StateProjection> projection;  // learned*: the projection to use
};

// Every method that needs nothing but its options, in the order of the tables.
const std::vector<std::string>& state_compression_methods();
// The methods that also need a learned projection: learned, learned-bf16, learned-int8.
const std::vector<std::string>& learned_compression_methods();
// Error (naming the method) unless the options describe one method with what it needs.
void check_compress_options(const CompressOptions& opts);

// A compressed State: plain data, copyable, with a serialised form (safetensors bytes, the
// same layout as a state file). `parts` are the stored arrays.
struct CompressedState {
  struct Part {
    std::string name;   // "state.att_shift", "state.wkv", "state.wkv.u", ...
    std::string dtype;  // "f32", "bf16", "f16", "i8", "i32"
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;  // little-endian elements
  };
  int64_t n_layer = 0, n_embd = 0, n_head = 0, head_size = 0;
  int64_t tokens_consumed = 0;
  std::string model_fingerprint;  // as State::model_fingerprint
  std::string model_shape;        // ModelConfig::shape_string() when known, else empty
  std::string method = "f32";     // canonical method name
  std::string detail;             // e.g. "rank 8", "energy 0.95, ranks 2..17 (mean 6.1)"
  std::vector<Part> parts;
  // The caller's own string metadata, kept in the serialised form and in state files (as
  // "note.<key>"), e.g. where a document's reading stopped.
  std::map<std::string, std::string> notes;

  size_t bytes() const;         // sum of the parts' data, except the shared ones ("shared.*")
  size_t shared_bytes() const;  // the shared parts (a learned projection's decoder)
  size_t raw_bytes() const;     // the fp32 State: (2·L·C + L·H·N·N) · 4
  double ratio() const { return raw_bytes() ? double(bytes()) / double(raw_bytes()) : 0.0; }

  std::string serialize() const;
  // `origin` names the bytes in errors (a file name). Checks the structure (every part present
  // with its shape); the values are checked by decompress_state.
  static CompressedState deserialize(std::string_view bytes, const std::string& origin);
};

CompressedState compress_state(const State& state, const CompressOptions& opts);
// Error on any inconsistency (hostile input): wrong part shapes, ranks, scales, non-finite.
State decompress_state(const CompressedState& cs);

// State files in any of these forms (format_version 1: f32 only, as written before compression
// existed; 2: compressed). Atomic write; the reader names the file in every error.
CompressedState read_state_file(const std::string& path);
void write_state_file(const std::string& path, const CompressedState& cs);

// save_state (model.hpp) with compression: the state is checked against the model, compressed
// and written; load_state reads every form and decompresses.
void save_state(const std::string& path, const State& state, const Model& model,
                const CompressOptions& opts);

}  // namespace rwkv7
