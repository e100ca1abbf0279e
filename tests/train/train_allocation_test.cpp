// A training step (forward + backward + AdamW) on warm buffers allocates nothing: the graph's
// weight views are refreshed in place, every buffer is kept from step to step.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "alloc_counter.hpp"
#include "core/thread_pool.hpp"
#include "io/tensor_io.hpp"
#include "model/backward.hpp"
#include "model/train_internal.hpp"
#include "train/optimizer.hpp"

namespace rwkv7 {
namespace {

using testing::CountAllocations;

void expect_no_allocation_in_warm_steps(const train::GradOptions& go) {
  const std::string path = std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";
  train::TrainParams params = train::params_from_file(read_tensor_file(path));
  std::vector<std::vector<int32_t>> rows(2);
  for (size_t b = 0; b < rows.size(); ++b)
    for (int i = 0; i < 33; ++i) rows[b].push_back(int32_t((i * 7 + b * 13) % 256));
  ThreadPool pool(2);
  auto be = make_cpu_backend(&pool);
  train::TrainWorkspace ws;
  train::GradResult res;
  train::AdamW opt(params.tensors, {});
  auto step = [&] {
    train::loss_and_gradients(params, rows, *be, &pool, go, ws, res);
    opt.step(params.tensors, res.grads, 1e-3);
  };
  step();
  step();
  for (int i = 0; i < 3; ++i) {
    CountAllocations counter;
    step();
    EXPECT_EQ(counter.count(), 0) << "step " << i;
  }
}

TEST(TrainAllocations, NoneInAWarmStep) { expect_no_allocation_in_warm_steps({}); }

// Segments (boundary states, state gradients) and per-layer recompute reuse their buffers too.
TEST(TrainAllocations, NoneInAWarmStepWithSegmentsAndCheckpointedLayers) {
  train::GradOptions go;
  go.segment = 10;
  go.checkpoint_layers = true;
  expect_no_allocation_in_warm_steps(go);
}

}  // namespace
}  // namespace rwkv7
