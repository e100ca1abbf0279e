#include "io/binidx.hpp"

#include <cstring>
#include <limits>
#include <vector>

#include "core/atomic_write.hpp"
#include "io/io_util.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {
namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;

bool known_type(uint8_t code) {
  return code == 1 || code == 2 || code == 3 || code == 4 || code == 5 || code == 8;
}

int64_t read_element(const unsigned char* p, BinidxType t) {
  switch (t) {
    case BinidxType::U8:
      return p[0];
    case BinidxType::I8:
      return int8_t(p[0]);
    case BinidxType::U16:
      return io::le16(p);
    case BinidxType::I16:
      return int16_t(io::le16(p));
    case BinidxType::I32:
      return int32_t(io::le32(p));
    case BinidxType::I64:
      return int64_t(io::le64(p));
  }
  return 0;
}

void put_element(std::ostream& out, BinidxType t, int64_t v) {
  switch (t) {
    case BinidxType::U8:
    case BinidxType::I8:
      out.put(char(uint8_t(v)));
      break;
    case BinidxType::U16:
    case BinidxType::I16:
      io::put16(out, uint16_t(v));
      break;
    case BinidxType::I32:
      io::put32(out, uint32_t(v));
      break;
    case BinidxType::I64:
      io::put64(out, uint64_t(v));
      break;
  }
}

std::pair<int64_t, int64_t> type_range(BinidxType t) {
  switch (t) {
    case BinidxType::U8:
      return {0, 255};
    case BinidxType::I8:
      return {-128, 127};
    case BinidxType::U16:
      return {0, 65535};
    case BinidxType::I16:
      return {-32768, 32767};
    case BinidxType::I32:
      return {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()};
    case BinidxType::I64:
      return {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()};
  }
  return {0, 0};
}

}  // namespace

int binidx_type_bytes(BinidxType t) {
  switch (t) {
    case BinidxType::U8:
    case BinidxType::I8:
      return 1;
    case BinidxType::U16:
    case BinidxType::I16:
      return 2;
    case BinidxType::I32:
      return 4;
    case BinidxType::I64:
      return 8;
  }
  return 0;
}

std::string binidx_bin_path(const std::string& prefix) { return prefix + ".bin"; }
std::string binidx_idx_path(const std::string& prefix) { return prefix + ".idx"; }

int64_t BinidxData::at(int64_t i) const {
  const int w = binidx_type_bytes(type);
  return read_element(bin->data() + i * w, type);
}

BinidxData open_binidx(const std::string& prefix) {
  const std::string idx_path = binidx_idx_path(prefix), bin_path = binidx_bin_path(prefix);
  const auto idx = MappedFile::open(idx_path);
  const unsigned char* p = idx->data();
  const uint64_t n = idx->size();
  auto bad = [&](const std::string& what) { return Error(idx_path + ": " + what); };
  if (n < kHeaderBytes)
    throw bad("truncated: " + std::to_string(n) + " bytes, shorter than the " +
              std::to_string(kHeaderBytes) + "-byte binidx header");
  if (std::memcmp(p, kMagic, sizeof kMagic) != 0)
    throw bad("not a binidx index (no MMIDIDX magic at the start)");
  const uint64_t version = io::le64(p + 9);
  if (version != 1) throw bad("binidx version " + std::to_string(version) + ", only 1 is known");
  const uint8_t code = p[17];
  if (!known_type(code))
    throw bad("element type code " + std::to_string(code) +
              " is not an integer token type (1-5 or 8)");
  BinidxData d;
  d.type = BinidxType(code);
  const uint64_t S = io::le64(p + 18), D = io::le64(p + 26);
  // Sizes as the counts say: 4·S + 8·S + 8·D bytes after the header, exactly.
  uint64_t seq_bytes = 0, doc_bytes = 0, total = 0;
  if (!io::mul_ok(S, 12, &seq_bytes) || !io::mul_ok(D, 8, &doc_bytes) ||
      !io::fits(seq_bytes, doc_bytes, std::numeric_limits<uint64_t>::max() - kHeaderBytes) ||
      (total = kHeaderBytes + seq_bytes + doc_bytes) != n) {
    throw bad("inconsistent: the header counts " + std::to_string(S) + " sequences and " +
              std::to_string(D) + " document entries, which do not match the file's " +
              std::to_string(n) + " bytes" + (n < total ? " (truncated?)" : ""));
  }
  if (D < 1) throw bad("inconsistent: the document index is empty (it starts with 0)");
  const unsigned char* sizes = p + kHeaderBytes;
  const unsigned char* pointers = sizes + 4 * S;
  const unsigned char* doc_idx = pointers + 8 * S;

  d.bin = MappedFile::open(bin_path);
  const int w = binidx_type_bytes(d.type);
  uint64_t expected = 0;  // byte offset where the next sequence must start
  for (uint64_t i = 0; i < S; ++i) {
    const int32_t size = int32_t(io::le32(sizes + 4 * i));
    if (size < 0) throw bad("sequence " + std::to_string(i) + " has negative size");
    const uint64_t ptr = io::le64(pointers + 8 * i);
    if (ptr != expected)
      throw bad("sequence " + std::to_string(i) + " starts at byte " + std::to_string(ptr) +
                " of " + bin_path + ", expected " + std::to_string(expected) +
                " (sequences must lie back to back)");
    expected += uint64_t(size) * uint64_t(w);  // < 2^35 per step: no overflow before the check
    if (expected > d.bin->size()) break;       // reported below as truncated
  }
  if (expected != d.bin->size())
    throw Error(bin_path + ": " + std::to_string(d.bin->size()) + " bytes, but " + idx_path +
                " describes " + std::to_string(expected) + " (" +
                (d.bin->size() < expected ? "truncated" : "trailing bytes") + ")");
  uint64_t prev = 0;
  for (uint64_t k = 0; k < D; ++k) {
    const uint64_t v = io::le64(doc_idx + 8 * k);
    if ((k == 0 && v != 0) || v < prev || v > S)
      throw bad("document index entry " + std::to_string(k) + " is " + std::to_string(v) +
                " (entries must rise from 0 to at most " + std::to_string(S) + ")");
    prev = v;
  }
  d.tokens = int64_t(expected / uint64_t(w));
  d.sequences = int64_t(S);
  d.documents = int64_t(D - 1);
  return d;
}

BinidxWriteSummary write_binidx(const std::string& prefix, BinidxType type,
                                const std::function<void(const BinidxSequenceSink& add)>& produce) {
  BinidxWriteSummary sum;
  std::vector<int32_t> sizes;
  // Not a structured binding: clang 14 (the fuzz build) cannot capture those in a lambda.
  const auto range = type_range(type);
  const int64_t lo = range.first, hi = range.second;
  const std::string bin_path = binidx_bin_path(prefix);
  write_file_atomic(bin_path, [&](std::ostream& out) {
    produce([&](std::span<const int32_t> seq) {
      if (seq.size() > size_t(std::numeric_limits<int32_t>::max()))
        throw Error(bin_path + ": a sequence of " + std::to_string(seq.size()) +
                    " tokens is longer than binidx allows (2^31 - 1)");
      for (int32_t t : seq) {
        if (t < lo || t > hi)
          throw Error(bin_path + ": token " + std::to_string(t) + " does not fit element type " +
                      std::to_string(int(type)));
        put_element(out, type, t);
      }
      sizes.push_back(int32_t(seq.size()));
      sum.tokens += int64_t(seq.size());
    });
  });
  write_file_atomic(binidx_idx_path(prefix), [&](std::ostream& out) {
    out.write(kMagic, sizeof kMagic);
    io::put64(out, 1);
    out.put(char(uint8_t(type)));
    io::put64(out, sizes.size());
    io::put64(out, sizes.size() + 1);
    for (int32_t s : sizes) io::put32(out, uint32_t(s));
    uint64_t ptr = 0;
    for (int32_t s : sizes) {
      io::put64(out, ptr);
      ptr += uint64_t(s) * uint64_t(binidx_type_bytes(type));
    }
    for (uint64_t k = 0; k <= sizes.size(); ++k) io::put64(out, k);
  });
  sum.sequences = int64_t(sizes.size());
  return sum;
}

}  // namespace rwkv7
