// Data-parallel training: `mpirun -np 2 rwkv7 train` takes the same steps as one process with
// the same global batch (losses and gradient norms equal within summation-order rounding, the
// final weights too), rank 0 alone writes, each JSON log line says "ranks": 2, and a run
// stopped and resumed with the same P ends where the uninterrupted one does. The launcher
// detection that makes a build without MPI refuse a multi-process start is tested on its own.
#include "train/data_parallel.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/cli_support.hpp"
#include "io/tensor_io.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

using testing::quote;

TEST(DataParallel, LauncherWorldSizeFromTheLaunchersVariables) {
  auto with = [](std::map<std::string, std::string> vars) {
    return train::launcher_world_size([&](const char* k) -> const char* {
      auto it = vars.find(k);
      return it == vars.end() ? nullptr : it->second.c_str();
    });
  };
  EXPECT_EQ(with({}), 1);
  EXPECT_EQ(with({{"OMPI_COMM_WORLD_SIZE", "4"}}), 4);  // OpenMPI's mpirun
  EXPECT_EQ(with({{"PMI_SIZE", "2"}}), 2);              // MPICH's Hydra, Slurm's PMI
  EXPECT_EQ(with({{"PMIX_SIZE", "3"}}), 3);
  EXPECT_EQ(with({{"OMPI_COMM_WORLD_SIZE", "x2"}}), 1);  // not a number: not a launch
  EXPECT_EQ(with({{"OMPI_COMM_WORLD_SIZE", "0"}}), 1);
}

struct LogLine {
  double loss, grad_norm;
  int ranks;
};

std::vector<LogLine> read_log(const std::string& path) {
  std::vector<LogLine> out;
  std::istringstream in(testing::slurp(path));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    out.push_back(
        {j.at("loss").get<double>(), j.at("grad_norm").get<double>(), j.value("ranks", 1)});
  }
  return out;
}

TEST(DataParallel, TwoProcessesTakeTheSameStepsAsOne) {
  RWKV7_REQUIRE_SHARED(text, "data/tinyshakespeare.txt");
  const bool have_mpirun = std::system("command -v mpirun >/dev/null 2>&1") == 0;
  if (!train::data_parallel_built() || !have_mpirun) {
    if (testing::under_ci()) FAIL() << "CI must build with MPI and have mpirun (.ci/run)";
    GTEST_SKIP() << "built without MPI or no mpirun: data parallelism not tested";
  }
  testing::TempDir dir;
  const std::string data = dir.file("data.txt");
  std::ofstream(data, std::ios::binary) << testing::slurp(text).substr(0, 120000);
  // 3 threads in all would oversubscribe 2 cores for nothing: one each.
  const std::string flags = " --data " + quote(data) +
                            " --layers 2 --embd 64 --head-size 32 --batch 4 --ctx 48 --seed 3 "
                            "--warmup 2 --lr-init 2e-3 -t 1 ";
  const std::string mpirun =
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "OMPI_MCA_btl_vader_single_copy_mechanism=none ASAN_OPTIONS=detect_leaks=0 timeout 300 "
      "mpirun --oversubscribe -np 2 '" +
      std::string(RWKV7_CLI_PATH) + "' train ";
  auto one = testing::run_cli("train" + flags + "--steps 5 --log-json " +
                              quote(dir.file("one.jsonl")) + " -o " + quote(dir.file("one")));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  auto two = testing::run_command(mpirun + flags + "--steps 5 --log-json " +
                                  quote(dir.file("two.jsonl")) + " -o " + quote(dir.file("two")));
  ASSERT_EQ(two.exit_code, 0) << two.out << two.err;
  // Rank 0 alone reports: one summary line, not two.
  size_t summaries = 0;
  for (size_t p = two.err.find("steps done"); p != std::string::npos;
       p = two.err.find("steps done", p + 1))
    ++summaries;
  EXPECT_EQ(summaries, 1u) << two.err;

  const auto a = read_log(dir.file("one.jsonl")), b = read_log(dir.file("two.jsonl"));
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(b.size(), 5u) << "rank 0 alone writes the log, once per step";
  for (size_t s = 0; s < a.size(); ++s) {
    EXPECT_EQ(a[s].ranks, 1);
    EXPECT_EQ(b[s].ranks, 2);
    // The two halves' means averaged vs one mean over all rows: rounding of the sums only.
    EXPECT_NEAR(b[s].loss, a[s].loss, 1e-5 * a[s].loss) << "step " << s;
    EXPECT_NEAR(b[s].grad_norm, a[s].grad_norm, 1e-4 * a[s].grad_norm) << "step " << s;
  }
  const TensorFile wa = read_pth(dir.file("one/model.pth"));
  const TensorFile wb = read_pth(dir.file("two/model.pth"));
  ASSERT_EQ(wa.order, wb.order);
  double worst = 0;
  for (const auto& name : wa.order) {
    const std::vector<float> x = to_f32(wa.get(name)), y = to_f32(wb.get(name));
    ASSERT_EQ(x.size(), y.size()) << name;
    for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, double(std::fabs(x[i] - y[i])));
  }
  EXPECT_LT(worst, 1e-4) << "final weights of 1 and 2 processes";

  // Stopped after 2 steps and resumed under the same P: the same 5 steps.
  auto first = testing::run_command(mpirun + flags + "--steps 5 --stop-after 2 --log-json " +
                                    quote(dir.file("r.jsonl")) + " -o " + quote(dir.file("r")));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto rest = testing::run_command(mpirun + flags + "--steps 5 --resume --log-json " +
                                   quote(dir.file("r.jsonl")) + " -o " + quote(dir.file("r")));
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  const auto c = read_log(dir.file("r.jsonl"));
  ASSERT_EQ(c.size(), 5u);
  for (size_t s = 0; s < c.size(); ++s) EXPECT_DOUBLE_EQ(c[s].loss, b[s].loss) << "step " << s;
  // …but not under another P: the run's identity records the split.
  auto other = testing::run_cli("train" + flags + "--steps 6 --resume -o " + quote(dir.file("r")));
  EXPECT_NE(other.exit_code, 0);
}

}  // namespace
}  // namespace rwkv7
