// The scheduler: a request's tokens do not depend on the batch (greedy alone == among 31
// other streams, log-probabilities within tolerance), a resume from the prefix cache gives the
// tokens of a fresh run, chunked prefill lets short streams finish while a long prompt is read,
// and the limits: a full queue, cancellation freeing the slot, shutdown.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "rwkv7/error.hpp"
#include "rwkv7/generate.hpp"
#include "rwkv7/serve.hpp"
#include "serve_support.hpp"

namespace rwkv7 {
namespace {

using testing::drain;
using testing::greedy_request;
using testing::kShippedModel;

std::shared_ptr<const Model> load_shipped(const std::string& precision) {
  LoadOptions o;
  o.precision = precision;
  return Model::load(kShippedModel, o);
}

struct Fixture {
  explicit Fixture(const std::string& precision = "fp32") : model(load_shipped(precision)) {}
  std::shared_ptr<const Model> model;
  std::shared_ptr<const Tokenizer> tok = std::make_shared<const Tokenizer>(Tokenizer::bytes());
};

#define REQUIRE_BF16_PRODUCTS(f)                                                          \
  if ((f).model->product_precision() != "bf16")                                           \
  GTEST_SKIP() << "no AVX512_BF16 here: --precision bf16 runs the fp32 products, tested " \
                  "above"

// Greedy tokens and their log-probabilities from generate() on a fresh state (or a copy of
// `from`).
void alone(const Fixture& f, const std::string& prompt, int64_t n, std::vector<int32_t>& tokens,
           std::vector<float>& logprobs, const State* from = nullptr) {
  Context ctx(1);
  State st = from ? *from : f.model->new_state();
  Sampler sampler(SamplerOptions{0.0f});
  const auto ids = f.tok->encode(prompt);
  GenerationRequest req{ids, &st, &sampler, {}, nullptr};
  req.options.max_tokens = n;
  req.options.stop_at_end_of_text = false;
  auto res = generate_batch(*f.model, ctx, *f.tok, std::span(&req, 1), [&](const TokenEvent& e) {
    if (e.token >= 0) logprobs.push_back(e.logprob);
    return true;
  });
  tokens = res[0].tokens;
}

void expect_greedy_same_alone_and_among_31(const Fixture& f) {
  const std::string prompt = "ROMEO:\nWhat light through yonder window breaks?\n";
  std::vector<int32_t> want;
  std::vector<float> want_lp;
  alone(f, prompt, 48, want, want_lp);

  SchedulerOptions o;
  o.threads = 2;
  o.max_running = 32;
  o.step_tokens = 40;  // prompts read over several steps, mixed with decoding
  o.use_cache = false;
  Scheduler s(f.model, f.tok, o);
  std::vector<std::unique_ptr<ServeStream>> others;
  for (int i = 0; i < 31; ++i) {  // sampled streams of other lengths, at other positions
    ServeRequest r;
    r.prompt = f.tok->encode(std::string(size_t(5 + 7 * i), char('a' + i % 26)) + "\n");
    r.sampling.temperature = 1.0f;
    r.sampling.seed = uint64_t(i);
    r.options.max_tokens = 20 + 3 * i;
    r.options.stop_at_end_of_text = false;
    auto t = s.submit(std::move(r));
    ASSERT_EQ(t.admission, Scheduler::Admission::Accepted);
    others.push_back(std::move(t.stream));
  }
  ServeRequest mine = greedy_request(*f.tok, prompt, 48);
  mine.logprobs = true;
  auto t = s.submit(std::move(mine));
  ASSERT_EQ(t.admission, Scheduler::Admission::Accepted);
  const auto got = drain(*t.stream);
  for (auto& o2 : others) EXPECT_EQ(drain(*o2).finished.finish_reason, "max_tokens");
  EXPECT_EQ(got.tokens, want);
  ASSERT_EQ(got.logprobs.size(), want_lp.size());
  for (size_t i = 0; i < want_lp.size(); ++i)  // fp32 math, other batch shapes: rounding only
    EXPECT_NEAR(got.logprobs[i], want_lp[i], 1e-3f + 1e-3f * std::fabs(want_lp[i])) << i;
  EXPECT_EQ(got.finished.usage.completion_tokens, 48);
  EXPECT_GE(s.stats().last_batch, 1);
}

TEST(Scheduler, GreedyOutputIsTheSameAloneAndAmong31OtherStreams) {
  expect_greedy_same_alone_and_among_31(Fixture());
}

// With bf16 products a position's products are the same bits in any batch, so the tokens are
// still those of the run alone (with the same precision).
TEST(Scheduler, GreedyOutputIsTheSameAloneAndAmong31OtherStreamsWithBf16Products) {
  const Fixture f("bf16");
  REQUIRE_BF16_PRODUCTS(f);
  expect_greedy_same_alone_and_among_31(f);
}

// `tolerance`: of the log-probabilities, relative and absolute. A resume computes the prompt in
// other chunks than a fresh run: the WKV's fp32 rounding differs, which with bf16 products a
// rounding of an activation to bf16 downstream can turn into a step of 2^-9 now and then.
void expect_resume_equals_fresh(const Fixture& f, float tolerance) {
  SchedulerOptions o;
  o.threads = 1;
  o.snapshot_every = 16;
  Scheduler s(f.model, f.tok, o);
  const std::string base = "KING HENRY:\nOnce more unto the breach, dear friends, once more;\n";
  auto first = drain(*s.submit(greedy_request(*f.tok, base, 24)).stream);
  EXPECT_EQ(first.finished.usage.cached_tokens, 0);
  // The same prompt: a whole match (with logits), nothing computed, the same tokens.
  auto again = drain(*s.submit(greedy_request(*f.tok, base, 24)).stream);
  EXPECT_EQ(again.finished.usage.cached_tokens, int64_t(base.size()));
  EXPECT_EQ(again.tokens, first.tokens);
  // Prompt + reply + more: resumes from the end of the previous generation.
  const std::string next = base + first.text + "\nWESTMORELAND:\n";
  ServeRequest cont_req = greedy_request(*f.tok, next, 24);
  cont_req.logprobs = true;
  auto cont = drain(*s.submit(std::move(cont_req)).stream);
  EXPECT_EQ(cont.finished.usage.cached_tokens, int64_t(base.size() + first.tokens.size()));
  std::vector<int32_t> fresh;
  std::vector<float> lp;
  alone(f, next, 24, fresh, lp);
  EXPECT_EQ(cont.tokens, fresh);
  ASSERT_EQ(cont.logprobs.size(), lp.size());
  for (size_t i = 0; i < lp.size(); ++i)
    EXPECT_NEAR(cont.logprobs[i], lp[i], tolerance * (1 + std::fabs(lp[i]))) << i;
  // A prompt sharing only the first 40 bytes: resumes at the snapshot at 32.
  auto other = drain(*s.submit(greedy_request(*f.tok, base.substr(0, 40) + "XYZ", 4)).stream);
  EXPECT_EQ(other.finished.usage.cached_tokens, 32);
  const SchedulerStats st = s.stats();
  EXPECT_EQ(st.prompt_tokens_cached + st.prompt_tokens_computed, st.prompt_tokens);
}

TEST(Scheduler, AResumeFromTheCacheGivesTheTokensOfAFreshRun) {
  expect_resume_equals_fresh(Fixture(), 1e-3f);
}

TEST(Scheduler, AResumeFromTheCacheGivesTheTokensOfAFreshRunWithBf16Products) {
  const Fixture f("bf16");
  REQUIRE_BF16_PRODUCTS(f);
  expect_resume_equals_fresh(f, 1e-2f);
}

// A request from a named start state (a document read once) continues that state: the
// tokens of generate() from a copy of it; the prefix cache keeps its entries apart from those
// of the zero state (same prompt, other start: no hit, and the zero-state tokens).
TEST(Scheduler, AStartStateIsContinuedAndCachedApartFromTheZeroState) {
  Fixture f;
  const std::string doc =
      "GLOUCESTER:\nNow is the winter of our discontent\nMade glorious summer.\n";
  State read = f.model->new_state();
  f.model->forward(f.tok->encode(doc), read, Logits::None);
  const auto start = StartState::make("doc", read);
  EXPECT_LT(start->cache_namespace, 0);
  EXPECT_EQ(StartState::make("same", read)->cache_namespace, start->cache_namespace);

  const std::string question = "KING EDWARD:\n";
  std::vector<int32_t> want_doc, want_zero;
  std::vector<float> lp;
  alone(f, question, 24, want_doc, lp, &read);
  alone(f, question, 24, want_zero, lp);
  ASSERT_NE(want_doc, want_zero) << "the document must change the reply, or this test is blind";

  SchedulerOptions o;
  o.threads = 1;
  Scheduler s(f.model, f.tok, o);
  ServeRequest r = greedy_request(*f.tok, question, 24);
  r.start = start;
  auto first = drain(*s.submit(r).stream);
  EXPECT_EQ(first.tokens, want_doc);
  EXPECT_EQ(first.finished.usage.cached_tokens, 0);
  auto again = drain(*s.submit(r).stream);  // whole prompt cached under the document
  EXPECT_EQ(again.tokens, want_doc);
  EXPECT_EQ(again.finished.usage.cached_tokens, int64_t(question.size()));
  auto zero = drain(*s.submit(greedy_request(*f.tok, question, 24)).stream);
  EXPECT_EQ(zero.finished.usage.cached_tokens, 0);
  EXPECT_EQ(zero.tokens, want_zero);

  // A state of another model shape is refused at submit.
  State wrong = f.model->new_state();
  wrong.wkv.resize(wrong.wkv.size() / 2);
  ServeRequest bad = greedy_request(*f.tok, question, 4);
  bad.start = StartState::make("wrong", wrong);
  EXPECT_THROW(s.submit(bad), Error);
}

TEST(Scheduler, ShortStreamsFinishWhileALongPromptIsRead) {
  Fixture f;
  SchedulerOptions o;
  o.threads = 1;
  o.step_tokens = 16;
  o.use_cache = false;
  Scheduler s(f.model, f.tok, o);
  std::string long_prompt;
  while (long_prompt.size() < 2000) long_prompt += "To be, or not to be, that is the question. ";
  auto big = s.submit(greedy_request(*f.tok, long_prompt, 1));
  auto small = s.submit(greedy_request(*f.tok, "JULIET:\n", 20));
  // The long prompt needs ≥ 2000 / 16 steps; the short stream 20 steps: it ends first.
  ServeEvent e;
  auto small_out = drain(*small.stream);
  EXPECT_EQ(small_out.tokens.size(), 20u);
  EXPECT_FALSE(big.stream->next(e, std::chrono::steady_clock::now()))
      << "the long prompt produced an event before the short stream finished";
  EXPECT_EQ(drain(*big.stream).finished.usage.completion_tokens, 1);
}

TEST(Scheduler, RefusesPastTheQueueAndFreesASlotOnCancel) {
  Fixture f;
  SchedulerOptions o;
  o.threads = 1;
  o.max_running = 1;
  o.max_queued = 1;
  Scheduler s(f.model, f.tok, o);
  auto a = s.submit(greedy_request(*f.tok, "A", 100000 - 2));
  ASSERT_EQ(a.admission, Scheduler::Admission::Accepted);
  ServeEvent e;
  ASSERT_TRUE(a.stream->next(e, std::chrono::steady_clock::now() + std::chrono::seconds(10)));
  auto b = s.submit(greedy_request(*f.tok, "B", 5));  // waits for the slot
  ASSERT_EQ(b.admission, Scheduler::Admission::Accepted);
  auto c = s.submit(greedy_request(*f.tok, "C", 5));
  EXPECT_EQ(c.admission, Scheduler::Admission::QueueFull);
  EXPECT_FALSE(c.stream);
  a.stream.reset();  // the client went away: cancelled, its slot goes to b
  auto out = drain(*b.stream, std::chrono::seconds(10));
  EXPECT_EQ(out.finished.finish_reason, "max_tokens");
  EXPECT_EQ(s.stats().cancelled, 1);
  EXPECT_EQ(s.stats().rejected, 1);
}

TEST(Scheduler, RefusesRequestsThatCanNeverRun) {
  Fixture f;
  SchedulerOptions o;
  o.threads = 1;
  o.max_context = 100;
  Scheduler s(f.model, f.tok, o);
  ServeRequest empty;
  EXPECT_THROW(s.submit(empty), Error);
  ServeRequest outside = greedy_request(*f.tok, "x", 1);
  outside.prompt.push_back(256);
  EXPECT_THROW(s.submit(outside), Error);
  EXPECT_THROW(s.submit(greedy_request(*f.tok, "x", 100)), Error);  // 1 + 100 > 100
  ServeRequest bad_sampler = greedy_request(*f.tok, "x", 1);
  bad_sampler.sampling.top_p = 2;
  EXPECT_THROW(s.submit(bad_sampler), Error);
  ServeRequest empty_stop = greedy_request(*f.tok, "x", 1);
  empty_stop.options.stop = {""};
  EXPECT_THROW(s.submit(empty_stop), Error);
}

TEST(Scheduler, RefusesAStreamSlowdownBelowOneOrNotANumber) {
  Fixture f;
  for (const double bad : {0.5, 0.0, -2.0, double(std::nan("")), double(INFINITY)}) {
    SchedulerOptions o;
    o.threads = 1;
    o.stream_slowdown = bad;
    try {
      Scheduler s(f.model, f.tok, o);
      ADD_FAILURE() << "accepted stream_slowdown " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("stream_slowdown"), std::string::npos) << e.what();
    }
  }
  SchedulerOptions one;
  one.threads = 1;
  one.stream_slowdown = 1;  // the floor rule alone
  Scheduler s(f.model, f.tok, one);
  auto a = s.submit(greedy_request(*f.tok, "x", 2));
  EXPECT_EQ(drain(*a.stream, std::chrono::seconds(10)).finished.finish_reason, "max_tokens");
}

TEST(Scheduler, ShutdownFinishesRunningStreamsOrCancelsThem) {
  Fixture f;
  SchedulerOptions o;
  o.threads = 1;
  {
    Scheduler s(f.model, f.tok, o);
    auto a = s.submit(greedy_request(*f.tok, "A", 30));
    s.shutdown(false);
    EXPECT_EQ(drain(*a.stream).finished.finish_reason, "max_tokens");
    EXPECT_EQ(s.submit(greedy_request(*f.tok, "B", 3)).admission,
              Scheduler::Admission::ShuttingDown);
  }
  Scheduler s(f.model, f.tok, o);
  auto a = s.submit(greedy_request(*f.tok, "A", 100000 - 2));
  s.shutdown(true);
  EXPECT_EQ(drain(*a.stream).finished.finish_reason, "cancelled");
}

TEST(Scheduler, StopStringsEndTheTextAndAreNotShown) {
  Fixture f;
  SchedulerOptions o;
  o.threads = 1;
  Scheduler s(f.model, f.tok, o);
  std::vector<int32_t> toks;
  std::vector<float> lp;
  alone(f, "ROMEO:\n", 60, toks, lp);
  const std::string text = f.tok->decode(toks);
  const std::string stop = text.substr(10, 3);  // a piece the greedy text surely contains
  ServeRequest r = greedy_request(*f.tok, "ROMEO:\n", 60);
  r.options.stop = {stop};
  auto out = drain(*s.submit(std::move(r)).stream);
  EXPECT_EQ(out.finished.finish_reason, "stop_string");
  EXPECT_EQ(out.text, text.substr(0, text.find(stop)));
}

}  // namespace
}  // namespace rwkv7
