// A decode loop on a warm Context allocates nothing: no operator new per token, on any
// thread, for one sequence and for batches (the small- and the large-batch product paths).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "alloc_counter.hpp"
#include "rwkv7/context.hpp"
#include "rwkv7/model.hpp"
#include "rwkv7/sampler.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

using testing::CountAllocations;

const std::string kModel = std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";

struct Stream {
  State state;
  std::vector<float> logits;
  int32_t token = 0;
  Sampler sampler;
};

// Decodes `steps` tokens for each of `n` sequences in one batch per step; returns the number
// of allocations over the last `steps - warmup` steps.
int64_t allocations_while_decoding(BackendKind kind, int n, int steps, int warmup,
                                   const std::string& path = kModel,
                                   const std::string& precision = "fp32") {
  LoadOptions opts;
  opts.backend = kind;
  opts.precision = precision;
  auto model = Model::load(path, opts);
  Context ctx(2);
  std::vector<Stream> streams;
  for (int i = 0; i < n; ++i) {
    SamplerOptions so;
    so.temperature = 0.8f;
    so.top_p = 0.9f;
    so.presence_penalty = 0.2f;
    so.frequency_penalty = 0.2f;
    so.seed = uint64_t(i);
    streams.push_back(Stream{model->new_state(), {}, int32_t(65 + i), Sampler(so)});
  }
  std::vector<SequenceRequest> batch(static_cast<size_t>(n));
  int64_t counted = 0;
  for (int step = 0; step < steps; ++step) {
    CountAllocations counter;
    for (int i = 0; i < n; ++i) {
      Stream& s = streams[size_t(i)];
      batch[size_t(i)] =
          SequenceRequest{std::span<const int32_t>(&s.token, 1), &s.state, Logits::Last, &s.logits};
    }
    model->forward(ctx, batch);
    for (Stream& s : streams) {
      s.token = s.sampler.sample(s.logits);
      s.sampler.accept(s.token);
    }
    if (step >= warmup) counted += counter.count();
  }
  return counted;
}

TEST(Allocations, NoneWhenDecodingOneSequence) {
  EXPECT_EQ(allocations_while_decoding(BackendKind::Cpu, 1, 40, 8), 0);
}

TEST(Allocations, NoneWhenDecodingSmallAndLargeBatches) {
  EXPECT_EQ(allocations_while_decoding(BackendKind::Cpu, 3, 24, 8), 0);   // 2-7 rows
  EXPECT_EQ(allocations_while_decoding(BackendKind::Cpu, 12, 24, 8), 0);  // packed GEMM
}

// bf16 weights run on panels packed at load (one position, a stage's products in one region).
TEST(Allocations, NoneWhenDecodingBf16WeightsOnPanels) {
  RWKV7_REQUIRE_SHARED(path, "golden/rand-L3-D256-bf16.pth");
  EXPECT_EQ(allocations_while_decoding(BackendKind::Cpu, 1, 24, 8, path), 0);
  EXPECT_EQ(allocations_while_decoding(BackendKind::Cpu, 12, 24, 8, path), 0);
}

// bf16 products (pair panels, LoadOptions::precision): the same, also with a batch that mixes
// nothing else in (every product of the step over pair panels).
TEST(Allocations, NoneWhenDecodingWithBf16Products) {
  RWKV7_REQUIRE_SHARED(path, "golden/rand-L3-D256-bf16.pth");
  LoadOptions o;
  o.precision = "bf16";
  if (Model::load(path, o)->product_precision() != "bf16")
    GTEST_SKIP() << "no AVX512_BF16 here: bf16 products run fp32 (tested above)";
  EXPECT_EQ(allocations_while_decoding(BackendKind::Cpu, 1, 24, 8, path, "bf16"), 0);
  EXPECT_EQ(allocations_while_decoding(BackendKind::Cpu, 12, 24, 8, path, "bf16"), 0);
}

TEST(Allocations, NoneWhenDecodingOnTheReferenceBackend) {
  EXPECT_EQ(allocations_while_decoding(BackendKind::Reference, 2, 12, 4), 0);
}

// The counter itself must see allocations, or the tests above prove nothing.
TEST(Allocations, CounterSeesAllocations) {
  CountAllocations counter;
  auto* v = new std::vector<int>(100);
  delete v;
  EXPECT_GE(counter.count(), 2);
}

}  // namespace
}  // namespace rwkv7
