// The names of the product precisions (backend.hpp).
#include <string>

#include "backends/backend.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7 {

ProductPrecision product_precision(std::string_view name, std::string_view what) {
  if (name == "fp32") return ProductPrecision::F32;
  if (name == "bf16") return ProductPrecision::BF16;
  throw Error(std::string(what) + ": unknown precision '" + std::string(name) +
              "' (expected fp32 or bf16)");
}

}  // namespace rwkv7
