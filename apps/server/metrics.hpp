#pragma once
// Counters the HTTP layer keeps (the scheduler keeps its own) and the Prometheus text of both.
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "rwkv7/serve.hpp"

namespace rwkv7::server {

// A latency histogram with fixed buckets (seconds).
class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                     1,     2.5,  5,     10,   30,  60,   120};
  void observe(double seconds);
  // Appends "name_bucket{le=…} n" lines, name_sum and name_count.
  void write(std::string& out, const std::string& name, const std::string& help) const;

 private:
  mutable std::mutex mu_;
  std::array<int64_t, kBounds.size() + 1> counts_{};
  double sum_ = 0;
  int64_t count_ = 0;
};

class Metrics {
 public:
  void count_response(int status);
  Histogram time_to_first_token, request_duration, inter_token;
  // The whole /metrics page.
  std::string prometheus(const SchedulerStats& s) const;

 private:
  mutable std::mutex mu_;
  std::map<int, int64_t> responses_;
};

}  // namespace rwkv7::server
