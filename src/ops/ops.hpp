#pragma once
// Op interfaces of the RWKV-7 graph. Hot ops (products with stored weights, the WKV-7
// recurrence, element-wise maps) go through a Backend (backends/backend.hpp, the layer below),
// which has a plain scalar reference implementation (the test oracle) and fast ones. Cheap
// per-channel ops (norms, mixes, the WKV inputs, the bonus) are in backward_ops.hpp, each
// forward beside its backward.
#include "backends/backend.hpp"
