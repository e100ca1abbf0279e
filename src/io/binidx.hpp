#pragma once
// RWKV-LM / Megatron "binidx" token data (MMapIndexedDataset), little-endian:
//   PREFIX.bin  the tokens of every sequence back to back, one element type throughout
//   PREFIX.idx  "MMIDIDX\0\0" (9 bytes), u64 version (1), u8 element code (1 u8, 2 i8, 3 i16,
//               4 i32, 5 i64, 8 u16; 6 and 7 are floats, not tokens), u64 sequence count S,
//               u64 document-index count D, i32 sizes[S] (tokens per sequence), i64
//               pointers[S] (byte offset of each sequence in .bin), i64 doc_idx[D] (first
//               sequence of each document, then S).
// The tokens are read where they lie in the mapped .bin, never copied whole.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "core/mapped_file.hpp"

namespace rwkv7 {

enum class BinidxType : uint8_t { U8 = 1, I8 = 2, I16 = 3, I32 = 4, I64 = 5, U16 = 8 };

int binidx_type_bytes(BinidxType t);

// PREFIX.bin / PREFIX.idx.
std::string binidx_bin_path(const std::string& prefix);
std::string binidx_idx_path(const std::string& prefix);

struct BinidxData {
  std::shared_ptr<const MappedFile> bin;  // kept mapped while the tokens are used
  BinidxType type = BinidxType::U16;
  int64_t tokens = 0, sequences = 0, documents = 0;

  // Token i of the stream (all sequences in order), widened; i in [0, tokens).
  int64_t at(int64_t i) const;
};

// Maps PREFIX.bin and checks PREFIX.idx against it: the header, the counts against the .idx
// size, every size >= 0, the pointers back to back from 0, their total equal to the .bin size,
// doc_idx from 0 rising to S. Error naming the file and what is wrong otherwise.
BinidxData open_binidx(const std::string& prefix);

// Writes PREFIX.bin and PREFIX.idx (each to a temporary file, then renamed; .bin first).
// `produce` calls add(tokens) once per sequence; each sequence is one document. Error when a
// token does not fit `type`.
using BinidxSequenceSink = std::function<void(std::span<const int32_t>)>;
struct BinidxWriteSummary {
  int64_t tokens = 0, sequences = 0;
};
BinidxWriteSummary write_binidx(const std::string& prefix, BinidxType type,
                                const std::function<void(const BinidxSequenceSink& add)>& produce);

}  // namespace rwkv7
