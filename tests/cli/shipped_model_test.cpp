// The model the repository ships: the README's main command runs it with no arguments, and it
// meets the validation loss the training issue asks for on the held-out tail of the text.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/cli_support.hpp"
#include "test_support.hpp"

namespace rwkv7 {
namespace {

using testing::quote;
using testing::run_cli;

const std::string kShipped =
    std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";

TEST(ShippedModel, GenerateWithNoArgumentsUsesIt) {
  ASSERT_TRUE(std::filesystem::exists(kShipped)) << kShipped;
  EXPECT_LE(std::filesystem::file_size(kShipped), 10u * 1000 * 1000);
  auto r = run_cli("generate -n 60 --seed 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GE(r.out.size(), 60u);  // "\n" prompt + 60 bytes + "\n"
}

TEST(ShippedModel, ValidationLossOnTheHeldOutTenPercentIsAtMost1_60) {
  RWKV7_REQUIRE_SHARED(text_path, "data/tinyshakespeare.txt");
  std::string text = testing::slurp(text_path);
  const size_t held_out = size_t(double(text.size()) * 0.1);  // the trainer's split
  testing::TempDir dir;
  std::ofstream(dir.file("val.txt"), std::ios::binary) << text.substr(text.size() - held_out);
  auto r = run_cli("eval -m " + quote(kShipped) + " --text-file " + quote(dir.file("val.txt")) +
                   " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tokens"].get<int64_t>(), int64_t(held_out) - 1);
  EXPECT_LE(j["loss"].get<double>(), 1.60);
}

}  // namespace
}  // namespace rwkv7
