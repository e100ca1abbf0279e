// A bf16 model's weights run on panels packed at load: a sequence decoded inside a batch of 12
// (products of many positions, one region per stage) gets the logits it gets alone (one
// position, the panel matrix-vector path) up to fp32 summation order, at every step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "rwkv7/context.hpp"
#include "rwkv7/model.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

TEST(PanelBatch, Bf16SequenceInABatchEqualsItsRunAlone) {
  RWKV7_REQUIRE_SHARED(path, "golden/rand-L3-D256-bf16.pth");
  auto model = Model::load(path);
  ASSERT_EQ(model->weight_dtype(), "bf16");
  Context ctx(2);
  const int n = 12, steps = 6;
  const int64_t V = model->config().vocab_size;
  std::vector<State> alone(n, model->new_state()), together(n, model->new_state());
  std::vector<std::vector<float>> logits_alone(n), logits_together(n);
  std::vector<int32_t> tokens(n);
  for (int i = 0; i < n; ++i) tokens[size_t(i)] = int32_t((7 * i + 3) % V);
  for (int step = 0; step < steps; ++step) {
    std::vector<SequenceRequest> batch;
    for (int i = 0; i < n; ++i)
      batch.push_back({std::span<const int32_t>(&tokens[size_t(i)], 1), &together[size_t(i)],
                       Logits::Last, &logits_together[size_t(i)]});
    model->forward(ctx, batch);
    for (int i = 0; i < n; ++i) {
      logits_alone[size_t(i)] = model->forward(ctx, std::span<const int32_t>(&tokens[size_t(i)], 1),
                                               alone[size_t(i)], Logits::Last);
      const auto& a = logits_alone[size_t(i)];
      const auto& b = logits_together[size_t(i)];
      ASSERT_EQ(a.size(), size_t(V));
      ASSERT_EQ(b.size(), size_t(V));
      double scale = 0;
      for (float x : a) scale = std::max(scale, double(std::fabs(x)));
      // Both run fp32 products over the same bf16 values; only the summation order differs.
      for (int64_t v = 0; v < V; ++v)
        ASSERT_NEAR(b[size_t(v)], a[size_t(v)], 1e-4 * std::max(1.0, scale))
            << "sequence " << i << " step " << step << " logit " << v;
      tokens[size_t(i)] = int32_t(std::max_element(a.begin(), a.end()) - a.begin());
    }
  }
}

}  // namespace
}  // namespace rwkv7
