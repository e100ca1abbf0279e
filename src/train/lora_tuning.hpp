#pragma once
// LoRA fine-tuning (--lora-rank): only the adapters (rwkv7/lora.hpp) train. The adapted
// matrices in the training parameters always hold base + (alpha / rank)·B·A, so the graph and
// its backward run unchanged; the adapters' gradients follow from the merged matrices'
// gradient dW: dA = s·Bᵀ·dW, dB = s·dW·Aᵀ (exact; the full dW is still computed).
#include <cstdint>

#include "engine/lora_internal.hpp"
#include "model/backward.hpp"

namespace rwkv7::train {

class LoraTuning {
 public:
  // A of each adapted matrix uniform in ±1/sqrt(in) (PyTorch's default Linear init, as
  // RWKV-PEFT), seeded; B zeros, so training starts at the base model. Merges into `params`.
  LoraTuning(TrainParams& params, int64_t rank, double alpha, uint64_t seed);

  TensorMap& adapters() { return adapters_.tensors; }
  const LoraAdapters& adapter_set() const { return adapters_; }
  // The adapted matrices of `params` ← base + s·B·A (after every optimiser step).
  void apply(TrainParams& params) const;
  // d loss / d adapters from the merged matrices' gradients (made or overwritten in `out`).
  void gradients(const Gradients& merged, TensorMap& out) const;

 private:
  LoraAdapters adapters_;
  TensorMap base_;  // the adapted matrices as loaded
};

}  // namespace rwkv7::train
