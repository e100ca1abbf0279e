// Issue 14 regressions for the trainer's output folder: paths read from checkpoint.json are
// never trusted (only files the run itself names inside -o DIR are read back or deleted), a
// malformed pointer is an error naming it, and temporary files of killed runs are cleaned up.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "cli/cli_support.hpp"

namespace rwkv7 {
namespace {

namespace fs = std::filesystem;
using testing::quote;
using testing::run_cli;
using testing::slurp;
using testing::TempDir;

// A pointer as an earlier run would have left it, naming `previous` as its weights.
std::string nlohmann_like(const std::string& previous) {
  return "{\"steps_done\": 1, \"weights\": \"" + previous +
         "\", \"optimizer\": \"x.optim.safetensors\", \"run\": {}}";
}

std::string tiny_run(const TempDir& dir, const std::string& out, const std::string& extra) {
  std::string text;
  for (int i = 0; i < 60; ++i) text += "To be, or not to be " + std::to_string(i) + ".\n";
  std::ofstream(dir.file("data.txt")) << text;
  return "train --layers 1 --embd 32 --head-size 16 --data " + quote(dir.file("data.txt")) +
         " --steps 2 --batch 1 --ctx 16 --seed 1 -t 1 -o " + quote(out) + " " + extra;
}

TEST(CheckpointPaths, PreviousWeightsNamedByThePointerAreNotDeletedOutsideTheRun) {
  TempDir dir;
  const std::string out = dir.file("out");
  fs::create_directories(out);
  // Victims outside the folder (absolute and ".."), and one inside with a name the run
  // would never give a checkpoint.
  std::ofstream(dir.file("victim.pth")) << "keep";
  std::ofstream(dir.file("victim.optim.safetensors")) << "keep";
  std::ofstream(dir.file("out/notes.pth")) << "keep";
  for (const std::string& previous :
       {dir.file("victim.pth"), std::string("../victim.pth"), std::string("notes.pth")}) {
    std::ofstream(out + "/checkpoint.json") << nlohmann_like(previous);
    const auto r = run_cli(tiny_run(dir, out, "--save-every 1"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(fs::exists(dir.file("victim.pth"))) << previous;
    EXPECT_TRUE(fs::exists(dir.file("victim.optim.safetensors"))) << previous;
    EXPECT_TRUE(fs::exists(dir.file("out/notes.pth"))) << previous;
  }
  // The run's own previous checkpoints are still replaced.
  EXPECT_FALSE(fs::exists(out + "/ckpt-1.pth"));
  EXPECT_TRUE(fs::exists(out + "/ckpt-2.pth"));
}

TEST(CheckpointPaths, MalformedPointerIsAnErrorNamingIt) {
  TempDir dir;
  const std::string out = dir.file("out");
  fs::create_directories(out);
  const std::string ptr = out + "/checkpoint.json";
  for (const std::string& body :
       {std::string("{}"), std::string("[1, 2]"), std::string("{\"run\": 5}"),
        std::string("{\"run\": {}, \"steps_done\": 1}"), std::string("not json"),
        std::string("{\"run\": {}, \"steps_done\": 1, \"weights\": \"/etc/passwd\"}")}) {
    std::ofstream(ptr) << body;
    const auto r = run_cli(tiny_run(dir, out, "--resume"));
    EXPECT_EQ(r.exit_code, 1) << body << "\n" << r.err;
    EXPECT_NE(r.err.find(ptr), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("unexpected error"), std::string::npos) << r.err;
  }
}

TEST(CheckpointPaths, OrphanTemporaryFilesOfDeadRunsAreRemoved) {
  TempDir dir;
  const std::string out = dir.file("out");
  fs::create_directories(out);
  pid_t dead = 4194000;  // above the usual pid_max; make sure nothing runs under it
  while (::kill(dead, 0) == 0) ++dead;
  const std::string orphan = out + "/ckpt-3.pth.tmp." + std::to_string(dead);
  const std::string alive = out + "/log.csv.tmp." + std::to_string(::getpid());
  const std::string other = out + "/notes.tmp.txt";
  for (const auto& f : {orphan, alive, other}) std::ofstream(f) << "x";
  const auto r = run_cli(tiny_run(dir, out, ""));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(orphan));
  EXPECT_TRUE(fs::exists(alive));  // its writer (this test) is alive
  EXPECT_TRUE(fs::exists(other));
}

TEST(CheckpointPaths, LogIsWrittenBeforeThePointer) {
  // A kill between the two must not lose log rows of steps the pointer covers: log.csv is
  // renamed into place first (a resume drops rows past the pointer).
  TempDir dir;
  const std::string out = dir.file("out");
  const auto r = run_cli(tiny_run(dir, out, "--save-every 1"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LE(fs::last_write_time(out + "/log.csv"), fs::last_write_time(out + "/checkpoint.json"));
}

TEST(CheckpointPaths, OutputFolderThatIsAFileOrUnreadableDataAreErrorsNotCrashes) {
  TempDir dir;
  std::ofstream(dir.file("file")) << "x";
  auto r = run_cli(tiny_run(dir, dir.file("file"), ""));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find(dir.file("file") + ": cannot create the output folder"), std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("unexpected error"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace rwkv7
