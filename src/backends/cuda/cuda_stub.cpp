// Replaces cuda_ops.cu when the project is built without CUDA (RWKV7_CUDA off): the CUDA ops
// refuse to start, the host twin (src/ops/cuda_host_ops.cpp) still works.
#include "backends/cuda/device_ops.hpp"
#include "rwkv7/error.hpp"

namespace rwkv7::dev {

std::unique_ptr<DeviceOps> make_cuda_ops() {
  throw Error("this build has no CUDA backend (configure with -DRWKV7_CUDA=ON)");
}

bool cuda_available() { return false; }

}  // namespace rwkv7::dev
