// The trainer end to end: exact resume, atomic checkpoints, data contract, bad input.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "cli/cli_support.hpp"
#include "core/dtype.hpp"
#include "core/thread_pool.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/model.hpp"
#include "test_support.hpp"
#include "train/data.hpp"
#include "train/optimizer.hpp"

namespace rwkv7 {
namespace {

using testing::quote;
using testing::run_cli;
using testing::slurp;
using testing::TempDir;

std::string small_run(const std::string& data, const std::string& out, const std::string& extra,
                      int steps = 12) {
  return "train --layers 2 --embd 32 --head-size 16 --data " + quote(data) + " --steps " +
         std::to_string(steps) +
         " --batch 2 --ctx 24 --lr-init 2e-3 --lr-final 2e-4 --warmup 3 --seed 5 -t 2 "
         "-o " +
         quote(out) + " " + extra;
}

std::string text_file(const TempDir& dir) {
  std::string text;
  for (int i = 0; i < 300; ++i)
    text += "To be, or not to be, that is the question " + std::to_string(i) + ".\n";
  std::ofstream(dir.file("data.txt")) << text;
  return dir.file("data.txt");
}

TEST(Trainer, ResumeGivesTheSameLossSequenceAsOneRun) {
  TempDir dir;
  const std::string data = text_file(dir);
  auto whole = run_cli(small_run(data, dir.file("a"), "--log-json " + quote(dir.file("a.jsonl"))));
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  auto first = run_cli(
      small_run(data, dir.file("b"), "--stop-after 5 --log-json " + quote(dir.file("b.jsonl"))));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("b/model.pth")));
  auto rest =
      run_cli(small_run(data, dir.file("b"), "--resume --log-json " + quote(dir.file("b.jsonl"))));
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  EXPECT_NE(rest.err.find("resumed"), std::string::npos) << rest.err;
  const std::string a = slurp(dir.file("a.jsonl")), b = slurp(dir.file("b.jsonl"));
  EXPECT_EQ(std::count(a.begin(), a.end(), '\n'), 12);
  EXPECT_EQ(a, b);  // bit-identical losses, learning rates and gradient norms
  // The final models are identical too.
  TensorFile ma = read_pth(dir.file("a/model.pth")), mb = read_pth(dir.file("b/model.pth"));
  for (const auto& n : ma.order) EXPECT_EQ(to_f32(ma.get(n)), to_f32(mb.get(n))) << n;
  // And loadable for inference, with a CSV log and a plot next to them.
  auto m = Model::load(dir.file("a/model.pth"));
  EXPECT_EQ(m->config().n_layer, 2);
  EXPECT_NE(slurp(dir.file("a/loss.svg")).find("<svg"), std::string::npos);
  EXPECT_NE(slurp(dir.file("a/log.csv")).find("step,loss,lr"), std::string::npos);
}

// A resume in the middle of the curriculum's first stage, crossing the change of length,
// gives the same run; the batch doubles when the context halves.
TEST(Trainer, CurriculumResumesAcrossALengthChange) {
  TempDir dir;
  const std::string data = text_file(dir);
  const std::string sched = "--ctx-schedule 12:0,24:4 ";
  auto whole = run_cli(
      small_run(data, dir.file("a"), sched + "--log-json " + quote(dir.file("a.jsonl")), 7));
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  EXPECT_NE(whole.err.find("step 5: context 24, batch 2"), std::string::npos) << whole.err;
  EXPECT_NE(whole.err.find("step 1: context 12, batch 4"), std::string::npos) << whole.err;
  auto first = run_cli(small_run(
      data, dir.file("b"), sched + "--stop-after 2 --log-json " + quote(dir.file("b.jsonl")), 7));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto rest = run_cli(small_run(data, dir.file("b"),
                                sched + "--resume --log-json " + quote(dir.file("b.jsonl")), 7));
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  EXPECT_EQ(slurp(dir.file("a.jsonl")), slurp(dir.file("b.jsonl")));
  TensorFile ma = read_pth(dir.file("a/model.pth")), mb = read_pth(dir.file("b/model.pth"));
  for (const auto& n : ma.order) EXPECT_EQ(to_f32(ma.get(n)), to_f32(mb.get(n))) << n;
  // Another schedule is another run.
  auto other = run_cli(small_run(data, dir.file("b"), "--ctx-schedule 12:0,24:5 --resume", 7));
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.err.find("ctx_schedule"), std::string::npos) << other.err;
}

TEST(Trainer, CarryStateAndSegmentsRun) {
  TempDir dir;
  const std::string data = text_file(dir);
  auto r = run_cli(small_run(data, dir.file("a"), "--carry-state --segment 10", 4));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli(small_run(data, dir.file("c"), "--carry-state --replay 0.5 --accum 2", 4));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto bad = run_cli(small_run(data, dir.file("b"), "--carry-state --ctx-schedule 12:0,24:2", 4));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("cannot be combined"), std::string::npos) << bad.err;
}

TEST(Trainer, ResumeWithOtherSettingsIsRefused) {
  TempDir dir;
  const std::string data = text_file(dir);
  ASSERT_EQ(run_cli(small_run(data, dir.file("a"), "--stop-after 2")).exit_code, 0);
  auto r = run_cli(small_run(data, dir.file("a"), "--resume --batch 3"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("batch"), std::string::npos) << r.err;
  auto none = run_cli(small_run(data, dir.file("empty"), "--resume"));
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("no checkpoint"), std::string::npos) << none.err;
}

// --precision bf16 trains (products in bf16) to nearly the fp32 losses, says so in the JSON log,
// is part of the run's identity (a resume in fp32 is refused), and unknown precisions are
// refused by name.
TEST(Trainer, Bf16PrecisionTrainsLikeFp32) {
  TempDir dir;
  const std::string data = text_file(dir);
  auto f32 = run_cli(small_run(data, dir.file("a"), "--log-json " + quote(dir.file("a.jsonl"))));
  ASSERT_EQ(f32.exit_code, 0) << f32.err;
  auto b16 = run_cli(
      small_run(data, dir.file("b"),
                "--precision bf16 --stop-after 6 --log-json " + quote(dir.file("b.jsonl"))));
  ASSERT_EQ(b16.exit_code, 0) << b16.err;
  auto wrong = run_cli(small_run(data, dir.file("b"), "--resume --precision fp32"));
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.err.find("precision"), std::string::npos) << wrong.err;
  b16 = run_cli(small_run(data, dir.file("b"),
                          "--precision bf16 --resume --log-json " + quote(dir.file("b.jsonl"))));
  ASSERT_EQ(b16.exit_code, 0) << b16.err;
  std::ifstream a(dir.file("a.jsonl")), b(dir.file("b.jsonl"));
  std::string la, lb;
  int steps = 0;
  bool any_different = false;
  while (std::getline(a, la) && std::getline(b, lb)) {
    const auto ja = nlohmann::json::parse(la), jb = nlohmann::json::parse(lb);
    EXPECT_FALSE(ja.contains("precision"));
    EXPECT_EQ(jb.at("precision"), "bf16");
    const double fa = ja.at("loss"), fb = jb.at("loss");
    EXPECT_NEAR(fb, fa, 0.02 * fa) << "step " << steps;  // bf16 operands: ~2^-9 each
    any_different = any_different || fa != fb;
    ++steps;
  }
  EXPECT_EQ(steps, 12);
  EXPECT_TRUE(any_different) << "bf16 losses equal the fp32 ones: the products did not round";
  // The products read bf16 copies of the weights that AdamW keeps and a resume makes afresh:
  // one uninterrupted run gives the same losses, bit for bit (stale copies would not).
  auto whole = run_cli(
      small_run(data, dir.file("c"), "--precision bf16 --log-json " + quote(dir.file("c.jsonl"))));
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  EXPECT_EQ(slurp(dir.file("c.jsonl")), slurp(dir.file("b.jsonl")));
  auto bad = run_cli(small_run(data, dir.file("c"), "--precision fp16"));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--precision"), std::string::npos) << bad.err;
}

// SIGKILL at arbitrary moments after the first checkpoint never leaves a checkpoint pointer to
// incomplete files. Each run waits for the first checkpoint before killing, so a run that never
// writes one fails instead of being skipped.
TEST(Trainer, KilledRunLeavesAUsableCheckpoint) {
  TempDir dir;
  const std::string data = text_file(dir);
  for (int delay_ms : {0, 150, 400}) {
    const std::string out = dir.file("k" + std::to_string(delay_ms));
    const std::string cmd = std::string("exec '") + RWKV7_CLI_PATH + "' " +
                            small_run(data, out, "--save-every 1", 400) + " 2>/dev/null";
    pid_t pid = fork();
    ASSERT_GE(pid, 0) << "fork failed";
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    // Wait (at most 120 s) for the first checkpoint, or for the run to end on its own.
    int status = 0;
    bool ended = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!std::filesystem::exists(out + "/checkpoint.json") &&
           std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        ended = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!ended) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    ASSERT_TRUE(std::filesystem::exists(out + "/checkpoint.json"))
        << "no checkpoint written (delay " << delay_ms << " ms, run ended by itself: " << ended
        << ", status " << status << ")";
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the run was not killed mid-way (status " << status << "): nothing was tested";
    auto ptr = nlohmann::json::parse(slurp(out + "/checkpoint.json"));
    EXPECT_NO_THROW(read_pth(out + "/" + ptr["weights"].get<std::string>()));
    EXPECT_NO_THROW(read_safetensors(out + "/" + ptr["optimizer"].get<std::string>()));
    auto resumed =
        run_cli(small_run(data, out,
                          "--stop-after " + std::to_string(ptr["steps_done"].get<int>() + 1) +
                              " --save-every 1 --resume",
                          400));
    EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
    EXPECT_NE(resumed.err.find("resumed"), std::string::npos) << resumed.err;
  }
}

TEST(TrainerData, NoShuffleRowsFollowTheContract) {
  std::vector<int32_t> tokens(1000);
  for (int i = 0; i < 1000; ++i) tokens[size_t(i)] = i;
  train::Batcher b(tokens, 3, 10, false, 0);
  auto rows = b.rows(4);  // step 4: rows start at (4·3 + r)·10
  ASSERT_EQ(rows.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    ASSERT_EQ(rows[size_t(r)].size(), 11u);
    EXPECT_EQ(rows[size_t(r)][0], (4 * 3 + r) * 10);
    EXPECT_EQ(rows[size_t(r)][10], (4 * 3 + r) * 10 + 10);
  }
  train::Batcher shuffled(tokens, 3, 10, true, 9);
  EXPECT_EQ(shuffled.rows(7), train::Batcher(tokens, 3, 10, true, 9).rows(7));
  EXPECT_NE(shuffled.rows(7), train::Batcher(tokens, 3, 10, true, 10).rows(7));
}

TEST(TrainerData, CtxScheduleStagesAndBatches) {
  const auto st = train::parse_ctx_schedule("8:0,32:5,64:9");
  ASSERT_EQ(st.size(), 3u);
  EXPECT_EQ(st[1].ctx, 32);
  EXPECT_EQ(st[1].from_step, 5);
  EXPECT_EQ(train::stage_at(st, 0), 0u);
  EXPECT_EQ(train::stage_at(st, 4), 0u);
  EXPECT_EQ(train::stage_at(st, 5), 1u);
  EXPECT_EQ(train::stage_at(st, 100), 2u);
  // 4 rows of 16 = 64 tokens per step: 8 rows of 8, 2 of 32, 1 of 64; never below one row.
  EXPECT_EQ(train::batch_for_ctx(4, 16, 8), 8);
  EXPECT_EQ(train::batch_for_ctx(4, 16, 32), 2);
  EXPECT_EQ(train::batch_for_ctx(4, 16, 128), 1);
  for (const char* bad : {"8:1", "8:0,16:0", "8", "0:0", "8:0,x:3", "8:0,"})
    EXPECT_THROW(train::parse_ctx_schedule(bad), Error) << bad;
}

TEST(TrainerData, AlignedRowsAreConsecutiveWindows) {
  std::vector<int32_t> tokens(1000);
  for (int i = 0; i < 1000; ++i) tokens[size_t(i)] = i;
  for (bool shuffle : {false, true}) {
    train::Batcher b(tokens, 3, 64, shuffle, 4, "data", true);
    for (int64_t step = 0; step < 20; ++step) {
      for (const auto& row : b.rows(step)) {
        ASSERT_EQ(row.size(), 65u);
        EXPECT_EQ(row[0] % 64, 0) << "rows start at multiples of the context";
      }
    }
  }
  train::Batcher plain(tokens, 3, 64, false, 0, "data", true);
  EXPECT_EQ(plain.rows(0)[1][0], 64);  // window 1 follows window 0
}

// Data of exactly k·ctx tokens: the last aligned window would need the token after the end
// (its last target), so only k − 1 windows exist (found by the MQAR experiment).
TEST(TrainerData, AlignedWindowsStayInsideDataOfWholeContexts) {
  std::vector<int32_t> tokens(1024);
  for (int i = 0; i < 1024; ++i) tokens[size_t(i)] = i;
  for (bool shuffle : {false, true}) {
    train::Batcher b(tokens, 4, 256, shuffle, 9, "data", true);
    std::set<int32_t> starts;
    for (int64_t step = 0; step < 50; ++step)
      for (const auto& row : b.rows(step)) {
        ASSERT_EQ(row.size(), 257u);
        EXPECT_EQ(row.back(), row.front() + 256) << "a row runs past the data";
        starts.insert(row.front());
      }
    EXPECT_EQ(starts, (std::set<int32_t>{0, 256, 512})) << "shuffle " << shuffle;
  }
}

TEST(TrainerData, StreamRowsContinueWhereTheyEnded) {
  std::vector<int32_t> tokens(1000);
  for (int i = 0; i < 1000; ++i) tokens[size_t(i)] = i;
  train::StreamBatcher sb(tokens, 4, 30);
  for (int64_t step = 0; step < 40; ++step) {  // wraps past the end of the data too
    const auto now = sb.rows(step, 0, 4), next = sb.rows(step + 1, 0, 4);
    for (size_t r = 0; r < 4; ++r) {
      ASSERT_EQ(now[r].size(), 31u);
      EXPECT_EQ(next[r][0], now[r][30]) << "stream " << r << " step " << step;
      EXPECT_EQ(now[r][0], (int32_t(r) * 250 + int32_t(step) * 30) % 1000);
    }
  }
  EXPECT_EQ(sb.rows(3, 2, 2)[0], sb.rows(3, 0, 4)[2]);  // micro-batch 1 of 2 rows = streams 2, 3
  EXPECT_THROW(train::StreamBatcher(tokens, 4, 1000), Error);
}

// Replay bookkeeping: a stream that continues starts where it ended; one that goes back starts
// at a point some stream ended at earlier (its slot); with P = 0 the streams are StreamBatcher's.
TEST(TrainerData, ReplayStreamsGoBackOnlyToRememberedPoints) {
  std::vector<int32_t> tokens(1000);
  for (int i = 0; i < 1000; ++i) tokens[size_t(i)] = i;
  train::ReplayStreams rs(tokens, 3, 10, 0.3, 42, 8);
  std::vector<int32_t> last_end(3, -1);
  std::set<int64_t> ended_at;  // every point a stream ended at so far
  int replays = 0;
  for (int64_t step = 0; step < 200; ++step) {
    const auto plan = rs.plan(step);
    for (int64_t r = 0; r < 3; ++r) {
      const auto row = rs.row(r);
      ASSERT_EQ(row.size(), 11u);
      if (plan[size_t(r)] < 0) {
        if (step > 0) {
          EXPECT_EQ(row[0], last_end[size_t(r)]) << "continues where it ended";
        }
      } else {
        ++replays;
        EXPECT_EQ(row[0], rs.remembered(plan[size_t(r)]));
        EXPECT_TRUE(ended_at.count(row[0])) << "goes back to a point a stream ended at";
      }
      last_end[size_t(r)] = row[10];
    }
    for (int64_t r = 0; r < 3; ++r) {
      const int64_t slot = rs.advance(r);
      EXPECT_EQ(rs.remembered(slot), rs.cursor(r));
      EXPECT_EQ(rs.cursor(r), last_end[size_t(r)]);
      ended_at.insert(rs.cursor(r));
    }
  }
  EXPECT_GT(replays, 100);  // about 0.3 × 600
  EXPECT_LT(replays, 260);
  train::ReplayStreams off(tokens, 3, 10, 0.0, 42), again(tokens, 3, 10, 0.3, 42, 8);
  train::StreamBatcher sb(tokens, 3, 10);
  EXPECT_EQ(again.plan(0), std::vector<int64_t>(3, -1));  // nothing remembered yet
  for (int64_t step = 0; step < 5; ++step) {
    off.plan(step);
    for (int64_t r = 0; r < 3; ++r) {
      EXPECT_EQ(off.row(r), sb.rows(step, r, 1)[0]);
      off.advance(r);
    }
  }
  EXPECT_THROW(train::ReplayStreams(tokens, 3, 10, 1.5, 0), Error);
}

TEST(TrainerData, DocumentsAreSeparatedByTokenZeroAndBadInputIsNamed) {
  TempDir dir;
  std::ofstream(dir.file("d.jsonl")) << "{\"text\": \"ab\"}\n{\"text\": \"cd\"}\n";
  auto d = train::load_token_data({dir.file("d.jsonl")}, Tokenizer::bytes());
  EXPECT_EQ(d.tokens.to_vector(), (std::vector<int32_t>{'a', 'b', 0, 'c', 'd'}));
  EXPECT_EQ(d.documents, 2);
  std::ofstream(dir.file("empty.txt")) << "";
  EXPECT_THROW(train::load_token_data({dir.file("empty.txt")}, Tokenizer::bytes()), Error);
  std::ofstream(dir.file("bad.txt")) << "ok \xff\xfe";
  RWKV7_REQUIRE_SHARED(vocab, "vocab/rwkv_vocab_v20230424.txt");
  try {
    train::load_token_data({dir.file("bad.txt")}, Tokenizer::load_world(vocab));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("UTF-8 at byte 3"), std::string::npos) << e.what();
  }
  std::vector<int32_t> few(5, 1);
  EXPECT_THROW(train::Batcher(few, 1, 10, false, 0), Error);
  auto r = run_cli("train --layers 1 --embd 32 --head-size 16 --data " +
                   quote(dir.file("d.jsonl")) + " --ctx 64 --steps 1 -o " + quote(dir.file("o")));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("fewer than one row"), std::string::npos) << r.err;
}

TEST(TrainerOptimizer, ScheduleWarmsUpThenFollowsTheCosine) {
  train::Schedule s{1e-3, 1e-4, 10, 110};
  EXPECT_NEAR(s.lr_at(0), 1e-5, 1e-12);  // 1% at the first step
  EXPECT_NEAR(s.lr_at(5), 1e-3 * (0.01 + 0.99 * 0.5), 1e-12);
  EXPECT_NEAR(s.lr_at(10), 1e-3, 1e-12);   // end of warm-up
  EXPECT_NEAR(s.lr_at(109), 1e-4, 1e-12);  // last step
  EXPECT_NEAR(s.lr_at(10 + 99 / 2.0), 5.5e-4, 1e-5);
}

TEST(TrainerOptimizer, AdamWMatchesHandComputation) {
  TensorMap p, g;
  p.emplace("blocks.0.att.key.weight", FloatTensor({1, 2}));
  p.emplace("blocks.0.att.w0", FloatTensor({1, 1, 1}));
  p.at("blocks.0.att.key.weight").data = {1.0f, -2.0f};
  p.at("blocks.0.att.w0").data = {0.5f};
  g = p;
  g.at("blocks.0.att.key.weight").data = {0.1f, 0.2f};
  g.at("blocks.0.att.w0").data = {-0.3f};
  train::AdamWOptions o;
  o.weight_decay = 0.1;
  train::AdamW adam(p, o);
  adam.step(p, g, 0.01);
  // Step 1 with bias correction: update = lr · g/|g| (eps tiny); decay p·(1 - lr·wd) first.
  EXPECT_NEAR(p.at("blocks.0.att.key.weight").data[0], 1.0 * (1 - 0.001) - 0.01, 1e-6);
  EXPECT_NEAR(p.at("blocks.0.att.key.weight").data[1], -2.0 * (1 - 0.001) - 0.01, 1e-6);
  EXPECT_NEAR(p.at("blocks.0.att.w0").data[0], 0.5 + 0.02, 1e-6);  // 2x lr, no decay
  auto grads = g;
  const double norm = train::clip_grad_norm(grads, 0.1);
  EXPECT_NEAR(norm, std::sqrt(0.01 + 0.04 + 0.09), 1e-6);
  EXPECT_NEAR(grads.at("blocks.0.att.w0").data[0], -0.3 * 0.1 / norm, 1e-6);
}

// The trainer clips inside the optimizer step (grad_scale) instead of scaling the gradients in
// a pass of their own: the same parameters, bit for bit, with and without a pool.
TEST(TrainerOptimizer, ClippingInsideTheStepEqualsClippingFirst) {
  TensorMap p, g;
  p.emplace("blocks.0.att.key.weight", FloatTensor({300, 400}));
  p.emplace("blocks.0.att.w0", FloatTensor({1, 1, 400}));
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (auto& [name, t] : p)
    for (float& x : t.data) x = nd(rng);
  g = p;
  for (auto& [name, t] : g)
    for (float& x : t.data) x = nd(rng);
  ThreadPool pool(2);
  for (ThreadPool* tp : {static_cast<ThreadPool*>(nullptr), &pool}) {
    TensorMap first = p, inside = p, clipped = g;
    train::AdamW a1(p, {}), a2(p, {});
    const double norm = train::clip_grad_norm(clipped, 1.0, tp);
    a1.step(first, clipped, 0.01, tp);
    const double norm2 = train::grad_norm(g, tp);
    ASSERT_GT(norm2, 1.0);  // the clip acts
    EXPECT_EQ(norm2, norm);
    a2.step(inside, g, 0.01, tp, train::clip_scale(norm2, 1.0));
    for (const auto& [name, t] : first) EXPECT_EQ(t.data, inside.at(name).data) << name;
  }
  EXPECT_EQ(train::clip_scale(0.5, 1.0), 1.0);
  EXPECT_EQ(train::clip_scale(5.0, 0.0), 1.0);  // 0 = no clipping
}

// Given the bf16 copies (TrainParams::bf16_weights), the step updates the parameters exactly as
// without them and rewrites each copy from the new values (nearest even), with and without a
// pool; a copy of the wrong size is refused by name.
TEST(TrainerOptimizer, AdamWRewritesTheBf16CopiesOfWhatItUpdates) {
  TensorMap p, g;
  p.emplace("blocks.0.att.key.weight", FloatTensor({300, 400}));
  p.emplace("blocks.0.att.w0", FloatTensor({1, 1, 400}));
  std::mt19937 rng(6);
  std::normal_distribution<float> nd;
  for (auto& [name, t] : p)
    for (float& x : t.data) x = nd(rng);
  g = p;
  for (auto& [name, t] : g)
    for (float& x : t.data) x = nd(rng);
  ThreadPool pool(2);
  for (ThreadPool* tp : {static_cast<ThreadPool*>(nullptr), &pool}) {
    TensorMap plain = p, kept = p;
    train::Bf16Weights copies;
    const std::string key = "blocks.0.att.key.weight";
    copies[key].assign(p.at(key).data.size(), 0);
    train::AdamW a1(p, {}), a2(p, {});
    for (int step = 0; step < 3; ++step) {
      a1.step(plain, g, 0.01, tp, 0.5);
      a2.step(kept, g, 0.01, tp, 0.5, &copies);
    }
    for (const auto& [name, t] : plain) EXPECT_EQ(t.data, kept.at(name).data) << name;
    ASSERT_EQ(copies.size(), 1u);  // only what was given
    const std::vector<float>& w = kept.at(key).data;
    size_t rounded_away = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      ASSERT_EQ(copies[key][i], f32_to_bf16(w[i])) << i;
      rounded_away += bf16_to_f32(copies[key][i]) != w[i];
    }
    EXPECT_GT(rounded_away, w.size() / 2);  // the copies are rounded, not the values themselves
    copies[key].pop_back();
    try {
      a2.step(kept, g, 0.01, tp, 1.0, &copies);
      ADD_FAILURE() << "a copy of the wrong size was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace rwkv7
