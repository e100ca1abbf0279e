#pragma once
// The RWKV-7 graph (SPEC §3-4) on the device-op API (backends/cuda/device_ops.hpp): device
// copies of the weights (uploaded once, immutable), a device-resident pool of sequence states,
// and passes over a ragged batch of sequences. Plain C++: no CUDA types. With make_host_ops()
// the same code runs on the host (the CPU tests); with make_cuda_ops() on the GPU.
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "backends/cuda/device_ops.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {

struct ModelWeights;

class CudaModel {
 public:
  // Uploads the weights of `model` (any file dtype) as `type` (the big products' input type;
  // LoRA factors, embedding and head too). Norms, mixes and the state stay fp32.
  CudaModel(const ModelWeights& weights, dev::DeviceOps& ops, dev::WType type);
  // Random weights of the given shape (benchmarks): no host copy of a whole model is made.
  CudaModel(const ModelConfig& config, dev::DeviceOps& ops, dev::WType type, uint64_t seed);
  ~CudaModel();
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  const ModelConfig& config() const { return config_; }
  dev::WType type() const { return type_; }
  int64_t weight_bytes() const { return weight_bytes_; }  // all device weights
  int64_t decode_bytes() const { return decode_bytes_; }  // read per decoded token

  // Host states at the boundary (uploaded, run, downloaded): Model::forward's contract.
  // Positions are processed `chunk` at a time per sequence.
  void forward(std::span<SequenceRequest> batch, int64_t chunk = 1024);

  // --- the device-resident state pool ---
  void reserve_slots(int64_t slots);  // keeps existing slots' states
  int64_t slots() const { return slots_; }
  void reset_slot(int64_t slot);
  void put_state(int64_t slot, const State& s);
  void get_state(int64_t slot, State& s);  // tokens_consumed is left as it is

  // Sequences whose states stay in pool slots. logits_out as in SequenceRequest.
  struct SlotRequest {
    std::span<const int32_t> tokens;
    int64_t slot = 0;
    Logits logits = Logits::Last;
    std::vector<float>* logits_out = nullptr;
  };
  void run(std::span<const SlotRequest> batch, int64_t chunk = 1024);

  // Batched decode: one token for each of slots [0, B), logits [B, V] of every one. The first
  // call for a batch size B prepares it (and captures a CUDA graph when use_graph); later
  // calls only upload the tokens and replay. logits may be null (left on the device).
  void decode(std::span<const int32_t> tokens, float* logits, bool use_graph = true);

 private:
  struct Weights;
  struct Buffers;
  class Stages;  // the layers' stages (model/block_order.hpp) as device ops
  struct Plan;
  void upload_weights(const ModelWeights& w);
  void random_weights(uint64_t seed);
  void ensure_buffers(int64_t rows, int64_t head_rows);
  void run_pass(const Plan& p);
  void check_tokens(std::span<const int32_t> tokens) const;

  ModelConfig config_;
  dev::DeviceOps& ops_;
  dev::WType type_;
  std::unique_ptr<Weights> w_;
  std::unique_ptr<Buffers> b_;
  int64_t weight_bytes_ = 0, decode_bytes_ = 0;
  int64_t slots_ = 0;
  float *att_shift_ = nullptr, *ffn_shift_ = nullptr, *wkv_ = nullptr;  // the pool
  // decode: index arrays and graph per batch size
  struct Decode;
  std::unique_ptr<Decode> decode_;
};

}  // namespace rwkv7
