// State tuning and LoRA runs stopped and resumed give the same steps and the same result as
// one run; a resume with another LoRA setting is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "cli/cli_support.hpp"
#include "io/tensor_io.hpp"

namespace rwkv7 {
namespace {

using testing::quote;
using testing::run_cli;
using testing::slurp;
using testing::TempDir;

std::string peft_run(const std::string& data, const std::string& out, const std::string& extra) {
  return "train --layers 2 --embd 32 --head-size 16 --data " + quote(data) +
         " --steps 8 --batch 2 --ctx 24 --lr-init 2e-2 --lr-final 2e-3 --warmup 2 --seed 5 -t 1 "
         "-o " +
         quote(out) + " --log-json " + quote(out + ".jsonl") + " " + extra;
}

void expect_resume_equals_one_run(const std::string& method, const std::string& result) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 200; ++i) text += "Friends, Romans, countrymen " + std::to_string(i) + ".\n";
  std::ofstream(dir.file("d.txt")) << text;
  const std::string data = dir.file("d.txt"), a = dir.file("a"), b = dir.file("b");
  auto whole = run_cli(peft_run(data, a, method));
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  auto first = run_cli(peft_run(data, b, method + " --stop-after 3"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_FALSE(std::filesystem::exists(b + "/" + result));
  auto rest = run_cli(peft_run(data, b, method + " --resume"));
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  EXPECT_NE(rest.err.find("resumed"), std::string::npos) << rest.err;
  const std::string la = slurp(a + ".jsonl"), lb = slurp(b + ".jsonl");
  EXPECT_EQ(std::count(la.begin(), la.end(), '\n'), 8);
  EXPECT_EQ(la, lb);
  const TensorFile fa = read_safetensors(a + "/" + result), fb = read_safetensors(b + "/" + result);
  ASSERT_FALSE(fa.order.empty());
  for (const auto& n : fa.order) EXPECT_EQ(to_f32(fa.get(n)), to_f32(fb.get(n))) << n;
}

TEST(PeftResume, StateTuningResumesExactly) {
  expect_resume_equals_one_run("--tune state", "state.safetensors");
}

TEST(PeftResume, LoraResumesExactlyAndRefusesAnotherAlpha) {
  expect_resume_equals_one_run("--lora-rank 2 --lora-alpha 4", "lora.safetensors");
  TempDir dir;
  std::string text(3000, 'a');
  std::ofstream(dir.file("d.txt")) << text;
  const std::string out = dir.file("o");
  auto first = run_cli(peft_run(dir.file("d.txt"), out, "--lora-rank 2 --stop-after 2"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto other = run_cli(peft_run(dir.file("d.txt"), out, "--lora-rank 2 --lora-alpha 8 --resume"));
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.err.find("lora_alpha"), std::string::npos) << other.err;
}

}  // namespace
}  // namespace rwkv7
