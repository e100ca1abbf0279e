#pragma once
// The one exception type of the library. Every message names the input (file, tensor, flag)
// and what is wrong with it; apps print it and exit non-zero.
#include <stdexcept>
#include <string>

namespace rwkv7 {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace rwkv7
