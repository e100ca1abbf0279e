// A warm call (workspace and gradients kept from the previous step) gives the gradients of a
// fresh one: the gradients are not zeroed up front (each is written by the first product that
// fills it, zeroed by the first op adding to it, or zeroed at the end when nothing filled it),
// so a path that added to a gradient behind the workspace's back would leave last step's
// values in it. The warm gradients start as NaN here: any value not rewritten shows.
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "core/thread_pool.hpp"
#include "io/tensor_io.hpp"
#include "model/backward.hpp"

namespace rwkv7 {
namespace {

train::TrainParams shipped_params() {
  const std::string path = std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";
  return train::params_from_file(read_tensor_file(path));
}

std::vector<std::vector<int32_t>> token_rows(int seed) {
  std::vector<std::vector<int32_t>> rows(2);
  for (size_t b = 0; b < rows.size(); ++b)
    for (int i = 0; i < 41; ++i) rows[b].push_back(int32_t((i * 7 + b * 13 + seed * 31) % 256));
  return rows;
}

void poison(train::Gradients& grads) {
  for (auto& [name, g] : grads)
    std::fill(g.data.begin(), g.data.end(), std::numeric_limits<float>::quiet_NaN());
}

void expect_same_gradients(const train::Gradients& warm, const train::Gradients& fresh) {
  ASSERT_EQ(warm.size(), fresh.size());
  for (const auto& [name, f] : fresh) {
    const auto& w = warm.at(name).data;
    ASSERT_EQ(w.size(), f.data.size()) << name;
    size_t differ = 0;
    for (size_t i = 0; i < w.size(); ++i) differ += !(w[i] == f.data[i]);  // NaN differs
    EXPECT_EQ(differ, 0u) << name << ": " << differ << " of " << w.size() << " values";
  }
}

void expect_warm_equals_fresh(const train::GradOptions& go) {
  const train::TrainParams params = shipped_params();
  ThreadPool pool(2);
  auto be = make_cpu_backend(&pool);
  train::TrainWorkspace ws;
  train::GradResult warm;
  train::loss_and_gradients(params, token_rows(1), *be, &pool, go, ws, warm);
  poison(warm.grads);
  train::loss_and_gradients(params, token_rows(2), *be, &pool, go, ws, warm);
  const train::GradResult fresh = train::loss_and_gradients(params, token_rows(2), *be, &pool, go);
  EXPECT_EQ(warm.loss, fresh.loss);
  expect_same_gradients(warm.grads, fresh.grads);
}

TEST(WarmGradients, EqualFreshOnes) { expect_warm_equals_fresh({}); }

TEST(WarmGradients, EqualFreshOnesWithSegmentsAndCheckpointedLayers) {
  train::GradOptions go;
  go.segment = 10;  // the backward runs four times, each adding to the same gradients
  go.checkpoint_layers = true;
  expect_warm_equals_fresh(go);
}

// Frozen matrices (as LoRA and state tuning freeze them): no product fills their gradients,
// which must come back zero.
TEST(WarmGradients, EqualFreshOnesWithFrozenMatrices) {
  const std::function<bool(std::string_view)> frozen = [](std::string_view name) {
    return name.find("weight") != std::string_view::npos &&
           name.find("ln") == std::string_view::npos;
  };
  train::GradOptions go;
  go.frozen = &frozen;
  expect_warm_equals_fresh(go);
  const train::GradResult r = train::loss_and_gradients(shipped_params(), token_rows(2),
                                                        *make_reference_backend(), nullptr, go);
  for (const char* name : {"head.weight", "blocks.1.ffn.key.weight"})
    for (float x : r.grads.at(name).data) ASSERT_EQ(x, 0.0f) << name;
}

// The blocks alone (the time-series model's path): the embedding and head get no gradient there
// and must be zero.
TEST(WarmGradients, BlocksBackwardLeavesEmbeddingAndHeadZero) {
  const train::TrainParams params = shipped_params();
  const int64_t B = 2, T = 9, C = params.config.n_embd;
  std::vector<float> emb(size_t(B * T * C)), dhidden(emb.size());
  for (size_t i = 0; i < emb.size(); ++i) {
    emb[i] = float(int(i * 37 % 101) - 50) / 50.0f;
    dhidden[i] = float(int(i * 53 % 97) - 48) / 480.0f;
  }
  ThreadPool pool(2);
  auto be = make_cpu_backend(&pool);
  auto run = [&](train::TrainWorkspace& ws, train::Gradients& grads) {
    std::vector<float> demb;
    train::blocks_forward(params, emb, B, T, *be, ws);
    train::blocks_backward(params, dhidden, *be, &pool, {}, ws, grads, demb);
  };
  train::TrainWorkspace ws, fresh_ws;
  train::Gradients warm, fresh;
  run(ws, warm);
  poison(warm);
  run(ws, warm);
  run(fresh_ws, fresh);
  expect_same_gradients(warm, fresh);
  for (const char* name : {"emb.weight", "head.weight"})
    for (float x : warm.at(name).data) ASSERT_EQ(x, 0.0f) << name;
}

}  // namespace
}  // namespace rwkv7
