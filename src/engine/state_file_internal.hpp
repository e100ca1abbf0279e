#pragma once
// Engine-internal: decompress a state read from `path` (errors name the file).
#include <string>

#include "rwkv7/model.hpp"
#include "rwkv7/state_compress.hpp"

namespace rwkv7 {

State decompress_state_file(const CompressedState& cs, const std::string& path);

}  // namespace rwkv7
