#pragma once
// Train-internal: the chain rule of the learned projection, exposed for its test.
#include <vector>

#include "rwkv7/state_projection.hpp"

namespace rwkv7::train {

// Adds d loss / d E [L,H,r,N] into gE and d loss / d D [L,H,N,r] into gD, given a state's WKV
// S [L,H,N,N] and d loss / d S' for S' = D·(E·S) per head (key side: on the transposes).
void add_projection_grads(const StateProjection& p, const std::vector<float>& S,
                          const std::vector<float>& dS, std::vector<double>& gE,
                          std::vector<double>& gD);

}  // namespace rwkv7::train
