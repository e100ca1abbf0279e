#pragma once
// Data parallelism across processes (`mpirun -np P rwkv7 train …`): every rank holds the same
// weights and optimizer state, takes its share of each global batch, and the ranks average
// their gradients (and losses) with one all-reduce per step, so every rank takes the same
// optimizer step. Without MPI built in, a process started by an MPI launcher with P > 1 refuses
// to train (it would train P independent copies); a plain start is one rank of one.
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "core/tensor.hpp"

namespace rwkv7::train {

// The world size an MPI launcher announced to this process (OpenMPI, MPICH/Hydra, PMIx, Slurm's
// PMI), or 1 when none did. `env` looks a variable up (getenv in production, a map in tests).
int launcher_world_size(const std::function<const char*(const char*)>& env);

class DataParallel {
 public:
  // Joins the launcher's world (MPI_Init) when one was announced; Error when P > 1 and this
  // build has no MPI, or MPI fails to start.
  DataParallel();
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }

  // Sums `loss` and every tensor of `grads` over the ranks and divides by the rank count, in
  // place (the same map, so the same names in the same order, on every rank).
  void average(double& loss, TensorMap& grads) const;
  // Error naming the step when the ranks' fingerprints of the weights differ.
  void check_same(uint64_t fingerprint, int64_t step) const;
  // Waits for every rank (after rank 0 wrote files the others read).
  void barrier() const;

 private:
  int rank_ = 0, size_ = 1;
  bool joined_ = false;  // this object called MPI_Init
};

// FNV-1a over the bytes of every tensor, in the map's order: equal weights, equal fingerprint.
uint64_t fingerprint(const TensorMap& tensors);

// True when this build can train across processes.
bool data_parallel_built();

}  // namespace rwkv7::train
