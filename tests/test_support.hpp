#pragma once
// Helpers shared by tests: where ../shared is, and skipping when it is absent (failing under CI).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace rwkv7::testing {

inline std::filesystem::path shared_dir() {
  return std::filesystem::path(RWKV7_SOURCE_DIR) / ".." / "shared";
}

inline bool under_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

// Path of a file under ../shared, or "" when absent (the caller skips).
inline std::string shared_file(const std::string& rel) {
  auto p = shared_dir() / rel;
  if (std::filesystem::exists(p)) return p.string();
  return "";
}

// n draws from a normal distribution with mean 0 and the given standard deviation.
inline std::vector<float> randn(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

}  // namespace rwkv7::testing

// Skips the test when ../shared/<rel> is absent; under CI=true that is a failure instead.
#define RWKV7_REQUIRE_SHARED(var, rel)                                                  \
  std::string var = ::rwkv7::testing::shared_file(rel);                                 \
  if (var.empty()) {                                                                    \
    if (::rwkv7::testing::under_ci()) FAIL() << "../shared/" << (rel) << " is missing"; \
    GTEST_SKIP() << "../shared/" << (rel) << " is absent; skipping";                    \
  }
