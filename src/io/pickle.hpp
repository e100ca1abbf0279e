#pragma once
// A restricted unpickler for torch checkpoints: it understands the opcodes torch.save emits
// (protocol 2, plus the few protocol 4 framing opcodes) and accepts only the globals a state
// dict of tensors needs. It never executes anything: REDUCE of an allowed global is interpreted
// here (OrderedDict() → dict, _rebuild_tensor_v2(...) → tensor description).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace rwkv7::io {

// One tensor as described by data.pkl: where its bytes live and how to view them.
struct PickledTensor {
  std::string name;
  std::string storage_type;  // "torch.FloatStorage", ...
  std::string storage_key;   // zip entry <archive>/data/<key>
  int64_t storage_numel = 0;
  int64_t offset = 0;  // in elements
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;
};

// Unpickles a state dict (a dict name → tensor, or such a dict under 'state_dict'/'model').
// `where` prefixes every error ("<path>"). Throws rwkv7::Error.
std::vector<PickledTensor> unpickle_state_dict(std::span<const unsigned char> bytes,
                                               const std::string& where);

// Serialises tensors the way torch 1.x torch.save does (protocol 2, OrderedDict of
// _rebuild_tensor_v2 with ('storage', type, key, 'cpu', numel) persistent ids).
std::string pickle_state_dict(const std::vector<PickledTensor>& tensors);

}  // namespace rwkv7::io
