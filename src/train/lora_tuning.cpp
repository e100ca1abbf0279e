#include "train/lora_tuning.hpp"

#include <cmath>
#include <random>

#include "rwkv7/error.hpp"

namespace rwkv7::train {

LoraTuning::LoraTuning(TrainParams& params, int64_t rank, double alpha, uint64_t seed) {
  if (rank < 1) throw Error("--lora-rank must be at least 1");
  if (!(alpha > 0) || !std::isfinite(alpha)) throw Error("--lora-alpha must be positive");
  adapters_.rank = rank;
  adapters_.alpha = alpha;
  std::mt19937_64 rng(seed ^ 0x10a4a4a4ull);
  for (const std::string& w : lora_target_names(params.config.n_layer)) {
    const FloatTensor& W = params.tensors.at(w);
    const int64_t out = W.shape[0], in = W.shape[1];
    if (rank > std::min(out, in))
      throw Error("--lora-rank " + std::to_string(rank) + " exceeds the size of " + w + " " +
                  shape_str(W.shape));
    FloatTensor A({rank, in});
    std::uniform_real_distribution<float> u(-1.0f / std::sqrt(float(in)),
                                            1.0f / std::sqrt(float(in)));
    for (float& x : A.data) x = u(rng);
    adapters_.tensors.emplace(lora_a_name(w), std::move(A));
    adapters_.tensors.emplace(lora_b_name(w), FloatTensor({out, rank}));
    base_.emplace(w, W);
  }
  apply(params);
}

void LoraTuning::apply(TrainParams& params) const {
  for (const auto& [w, base] : base_) {
    FloatTensor& W = params.tensors.at(w);
    std::copy(base.data.begin(), base.data.end(), W.data.begin());  // same buffer: views stay
    add_lora_product(W.data.data(), adapters_.tensors.at(lora_a_name(w)).data.data(),
                     adapters_.tensors.at(lora_b_name(w)).data.data(), W.shape[0], W.shape[1],
                     adapters_.rank, adapters_.scale());
  }
}

void LoraTuning::gradients(const Gradients& merged, TensorMap& out) const {
  for (const auto& [w, base] : base_) {
    const std::string a = lora_a_name(w), b = lora_b_name(w);
    const FloatTensor &A = adapters_.tensors.at(a), &B = adapters_.tensors.at(b);
    if (!out.count(a)) out.emplace(a, FloatTensor(A.shape));
    if (!out.count(b)) out.emplace(b, FloatTensor(B.shape));
    lora_gradients(merged.at(w).data.data(), A.data.data(), B.data.data(), base.shape[0],
                   base.shape[1], adapters_.rank, adapters_.scale(), out.at(a).data.data(),
                   out.at(b).data.data());
  }
}

}  // namespace rwkv7::train
