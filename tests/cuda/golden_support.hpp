#pragma once
// Golden files (../shared/golden, or $RWKV7_SHARED_DIR/golden on a machine without the
// checkout's ../shared) and the error measures the CUDA-path tests report.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "io/tensor_io.hpp"
#include "rwkv7/model.hpp"
#include "test_support.hpp"

namespace rwkv7::testing {

// $RWKV7_SHARED_DIR when set, else ../shared beside the source tree.
inline std::string shared_path(const std::string& rel) {
  const char* env = std::getenv("RWKV7_SHARED_DIR");
  const std::filesystem::path p = (env && *env ? std::filesystem::path(env) : shared_dir()) / rel;
  return std::filesystem::exists(p) ? p.string() : "";
}

struct Golden {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // [T, V]
  std::vector<float> att_shift, ffn_shift, wkv;
  std::string checkpoint;
};

inline Golden read_golden(const std::string& path) {
  TensorFile f = read_safetensors(path);
  Golden g;
  const TensorView& t = f.get("tokens");
  for (int64_t i = 0; i < t.numel(); ++i)
    g.tokens.push_back(static_cast<const int32_t*>(t.data)[i]);
  g.logits = to_f32(f.get("logits"));
  g.att_shift = to_f32(f.get("state.att_shift"));
  g.ffn_shift = to_f32(f.get("state.ffn_shift"));
  g.wkv = to_f32(f.get("state.wkv"));
  g.checkpoint = f.metadata.at("checkpoint");
  return g;
}

inline double stddev(const std::vector<float>& v) {
  double m = 0, s = 0;
  for (float x : v) m += x;
  m /= double(v.size());
  for (float x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size()));
}

inline double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

// max |got - want| (NaN counts as infinite).
inline double max_diff(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - want[i]);
    if (!(d <= worst)) worst = std::isnan(d) ? INFINITY : d;
  }
  return worst;
}

// Logit error in units of the SPEC scale max(1, std(logits)); SPEC §7 asks ≤ 1e-4 in fp32.
inline double logit_error(const std::vector<float>& got, const std::vector<float>& want) {
  return max_diff(got, want) / std::max(1.0, stddev(want));
}

// ‖got - want‖₂ / ‖want‖₂: the measure for low-precision products (bf16 inputs land near 1e-2).
inline double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = double(got[i]) - want[i];
    num += d * d;
    den += double(want[i]) * want[i];
  }
  const double r = std::sqrt(num / std::max(den, 1e-30));
  return std::isnan(r) ? INFINITY : r;
}

// State error relative to each array's scale max(1e-3, max|want|); SPEC §7: ≤ 1e-4 in fp32.
inline double state_error(const State& s, const Golden& g) {
  auto rel = [](const std::vector<float>& a, const std::vector<float>& b) {
    return max_diff(a, b) / std::max(1e-3, max_abs(b));
  };
  return std::max(
      {rel(s.att_shift, g.att_shift), rel(s.ffn_shift, g.ffn_shift), rel(s.wkv, g.wkv)});
}

struct GoldenCase {
  const char* golden;
  const char* model_dir;  // where the checkpoint lives under the shared folder
};

// A test name from the golden file ("rand_L2_D128"): gtest's default prints the pointers,
// which move from run to run (ASLR), so ctest's discovered names would match nothing.
inline std::string golden_case_name(const ::testing::TestParamInfo<GoldenCase>& info) {
  std::string n = info.param.golden;
  n = n.substr(0, n.find(".golden"));
  for (char& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

inline const std::vector<GoldenCase>& golden_cases() {
  static const std::vector<GoldenCase> cases = {
      {"rand-L2-D128.golden.safetensors", "golden"},
      {"rand-L3-D256-bf16.golden.safetensors", "golden"},
      {"rand-L2-D96-hs32-fp16.golden.safetensors", "golden"},
      {"tiny-rwkv7-834K.golden.safetensors", "models"},
  };
  return cases;
}

}  // namespace rwkv7::testing

// Skips when the shared file is absent; under CI=true that is a failure instead.
#define RWKV7_REQUIRE_SHARED_PATH(var, rel)                                          \
  std::string var = ::rwkv7::testing::shared_path(rel);                              \
  if (var.empty()) {                                                                 \
    if (::rwkv7::testing::under_ci()) FAIL() << "shared/" << (rel) << " is missing"; \
    GTEST_SKIP() << "shared/" << (rel) << " is absent; skipping";                    \
  }
