#pragma once
// The public InitOptions (rwkv7/init.hpp) as the model layer's InitSpec, validated: for the
// trainer, which starts a fresh run from the same options.
#include "model/init.hpp"
#include "rwkv7/init.hpp"

namespace rwkv7 {

// Error names the bad option (unknown preset, preset and sizes both given, bad dtype, ...).
InitSpec init_spec_from(const InitOptions& opts);

}  // namespace rwkv7
