#pragma once
// Op interfaces of the RWKV-7 graph. Hot ops (products with stored weights, the WKV-7
// recurrence) go through a Backend (backends/backend.hpp), which has a plain scalar reference
// implementation (the test oracle) and fast ones. Cheap per-channel ops (norms, mixes) are
// plain functions here.
#include <cstdint>

#include "backends/backend.hpp"

namespace rwkv7 {

// --- cheap per-channel ops (x and y may alias) ---

// y = (x - mean) / sqrt(var + eps) * w + b over n channels.
void layer_norm(const float* x, const float* w, const float* b, int64_t n, float eps, float* y);
// layer_norm on each of `groups` consecutive groups of `n/groups` channels, then w, b.
void group_norm(const float* x, const float* w, const float* b, int64_t n, int64_t groups,
                float eps, float* y);

}  // namespace rwkv7
