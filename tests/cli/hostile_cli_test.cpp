// Issue 14 regressions at the CLI and engine boundary: flags, stdin, state files. Every error
// names the input and exits 1; "unexpected error" never appears.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "cli_support.hpp"
#include "io/io_test_util.hpp"
#include "io/tensor_io.hpp"
#include "rwkv7/error.hpp"
#include "rwkv7/model.hpp"

namespace rwkv7 {
namespace {

using testing::quote;
using testing::run_cli;
using testing::TempDir;

const std::string kModel = std::string(RWKV7_SOURCE_DIR) + "/models/rwkv7-shakespeare-L4-C128.pth";

TEST(HostileCli, ThreadCountIsBounded) {
  for (const char* t : {"100000", "-5", "2x"}) {
    const auto r =
        run_cli(std::string("forward -m ") + quote(kModel) + " --tokens 1 -o /dev/null -t " + t);
    EXPECT_EQ(r.exit_code, 1) << t;
    EXPECT_NE(r.err.find("--threads"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(t[1] == 'x' ? "must be a whole number" : "0 (all cores) to 1024"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(r.err.find("unexpected error"), std::string::npos) << r.err;
  }
}

TEST(HostileCli, DecodeRefusesIdsThatAreNotInt32) {
  for (const char* in :
       {"[1e99]", "[1.5]", "[-1]", "[4294967296]", "[[1]]", "{\"a\": 1}", "[\"x\"]"}) {
    const auto r = run_cli("tokenize --bytes --decode", in);
    EXPECT_EQ(r.exit_code, 1) << in << ": " << r.err;
    EXPECT_NE(r.err.find("stdin"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("unexpected error"), std::string::npos) << r.err;
  }
  const auto ok = run_cli("tokenize --bytes --decode", "[104, 105]");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "hi");
}

TEST(HostileCli, StateWithNanOrInfIsRefusedNamingTheFile) {
  auto model = Model::load(kModel);
  TempDir dir;
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    State s = model->new_state();
    s.wkv[7] = bad;
    const std::string path = dir.file("bad.state");
    save_state(path, s, *model);
    testing::expect_error([&] { load_state(path, *model); },
                          {path, "tensor 'state.wkv' element 7"});
  }
}

}  // namespace
}  // namespace rwkv7
