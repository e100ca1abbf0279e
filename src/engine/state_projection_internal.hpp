#pragma once
// Engine-internal: the arithmetic of the learned compression (rwkv7/state_projection.hpp),
// shared by project_state and the "learned" methods of state_compress.cpp.
#include <cstdint>

#include "rwkv7/state_projection.hpp"

namespace rwkv7::learned {

// wkv [L, H, N, N] → code [L, H, r, N]: Z = E·S per head (key side: E·Sᵀ), in double.
void encode(const StateProjection& p, const float* wkv, float* code);
// code → wkv: S = D·Z per head (key side: (D·Z)ᵀ).
void decode(const StateProjection& p, const float* code, float* wkv);
// The same with the decoder given apart ([heads, N, r]), as a state file carries it.
void decode_with(const float* decoder, bool key_side, int64_t heads, int64_t N, int64_t r,
                 const float* code, float* wkv);

}  // namespace rwkv7::learned
