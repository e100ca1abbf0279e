#include "engine/text_stream.hpp"

#include <algorithm>
#include <cmath>

namespace rwkv7 {
namespace {

// Length of the longest suffix of `text` that is a proper prefix of some stop string: that
// much must be held back, since the next token may complete the stop string.
size_t held_back(std::string_view text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& s : stops) {
    for (size_t n = std::min(s.size() - 1, text.size()); n > hold; --n) {
      if (text.substr(text.size() - n) == std::string_view(s).substr(0, n)) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}

}  // namespace

float log_probability(std::span<const float> logits, int32_t token) {
  float mx = logits[0];
  for (float x : logits) mx = std::max(mx, x);
  double sum = 0;
  for (float x : logits) sum += std::exp(double(x) - mx);
  return float(double(logits[size_t(token)]) - mx - std::log(sum));
}

std::string_view TextStream::push(int32_t token, bool& stopped) {
  pending_ += decoder_.push(token);
  stopped = false;
  for (const std::string& stop : *stops_) {
    const size_t at = pending_.find(stop);
    if (at != std::string::npos) {
      pending_.resize(at);
      stopped = true;
    }
  }
  const size_t hold = stopped ? 0 : held_back(pending_, *stops_);
  released_.clear();
  if (pending_.size() > hold) {
    const size_t n = pending_.size() - hold;
    released_.assign(pending_, 0, n);
    pending_.erase(0, n);
  }
  return released_;
}

std::string_view TextStream::finish() {
  pending_ += decoder_.flush();
  released_.swap(pending_);
  pending_.clear();
  return released_;
}

}  // namespace rwkv7
