#include "metrics.hpp"

#include <cstdio>
#include <fstream>

namespace rwkv7::server {
namespace {

void line(std::string& out, const std::string& name, const char* type, const std::string& help,
          double value) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  char buf[64];
  std::snprintf(buf, sizeof buf, " %.17g\n", value);
  out += name + buf;
}

// Resident and peak resident memory of this process (Linux /proc), in bytes.
std::pair<double, double> memory() {
  std::ifstream f("/proc/self/status");
  std::string key;
  double rss = 0, hwm = 0;
  while (f >> key) {
    double kb = 0;
    if (key == "VmRSS:" && f >> kb)
      rss = kb * 1024;
    else if (key == "VmHWM:" && f >> kb)
      hwm = kb * 1024;
  }
  return {rss, hwm};
}

}  // namespace

void Histogram::observe(double seconds) {
  std::lock_guard lock(mu_);
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  ++counts_[i];
  sum_ += seconds;
  ++count_;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& help) const {
  std::lock_guard lock(mu_);
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  int64_t cumulative = 0;
  char buf[96];
  for (size_t i = 0; i <= kBounds.size(); ++i) {
    cumulative += counts_[i];
    if (i < kBounds.size())
      std::snprintf(buf, sizeof buf, "_bucket{le=\"%g\"} %lld\n", kBounds[i],
                    (long long)cumulative);
    else
      std::snprintf(buf, sizeof buf, "_bucket{le=\"+Inf\"} %lld\n", (long long)cumulative);
    out += name + buf;
  }
  std::snprintf(buf, sizeof buf, "_sum %.17g\n", sum_);
  out += name + buf;
  std::snprintf(buf, sizeof buf, "_count %lld\n", (long long)count_);
  out += name + buf;
}

void Metrics::count_response(int status) {
  std::lock_guard lock(mu_);
  ++responses_[status];
}

std::string Metrics::prometheus(const SchedulerStats& s) const {
  std::string out;
  {
    std::lock_guard lock(mu_);
    out +=
        "# HELP rwkv7_requests_total HTTP responses by status code\n"
        "# TYPE rwkv7_requests_total counter\n";
    for (const auto& [code, n] : responses_)
      out +=
          "rwkv7_requests_total{code=\"" + std::to_string(code) + "\"} " + std::to_string(n) + "\n";
  }
  line(out, "rwkv7_sequences_submitted_total", "counter", "Requests accepted by the scheduler",
       double(s.submitted));
  line(out, "rwkv7_sequences_rejected_total", "counter",
       "Requests refused because the queue was full (429) or the server stopping",
       double(s.rejected));
  line(out, "rwkv7_sequences_finished_total", "counter", "Sequences finished", double(s.finished));
  line(out, "rwkv7_sequences_cancelled_total", "counter",
       "Sequences cancelled (client gone or shutdown)", double(s.cancelled));
  line(out, "rwkv7_prompt_tokens_total", "counter", "Prompt tokens of admitted requests",
       double(s.prompt_tokens));
  line(out, "rwkv7_prompt_tokens_cached_total", "counter",
       "Prompt tokens served by the prefix cache (not computed)", double(s.prompt_tokens_cached));
  line(out, "rwkv7_prompt_tokens_computed_total", "counter", "Prompt tokens run through the model",
       double(s.prompt_tokens_computed));
  line(out, "rwkv7_generated_tokens_total", "counter", "Tokens generated",
       double(s.generated_tokens));
  line(out, "rwkv7_queue_length", "gauge", "Requests waiting for a slot", double(s.queued));
  line(out, "rwkv7_running_sequences", "gauge", "Sequences in the running batch",
       double(s.running));
  line(out, "rwkv7_batch_size", "gauge", "Sequences in the last step's forward",
       double(s.last_batch));
  line(out, "rwkv7_steps_total", "counter", "Scheduler steps (batched forwards)", double(s.steps));
  line(out, "rwkv7_step_positions_total", "counter", "Positions computed by all steps",
       double(s.step_positions));
  line(out, "rwkv7_busy_seconds_total", "counter", "Seconds spent in batched forwards",
       s.busy_seconds);
  line(out, "rwkv7_cache_hits_total", "counter", "Prefix cache lookups that found a prefix",
       double(s.cache.hits));
  line(out, "rwkv7_cache_misses_total", "counter", "Prefix cache lookups that found nothing",
       double(s.cache.lookups - s.cache.hits));
  line(out, "rwkv7_cache_tokens_saved_total", "counter",
       "Prompt tokens not computed thanks to the cache", double(s.cache.tokens_saved));
  line(out, "rwkv7_cache_entries", "gauge", "States in the memory tier", double(s.cache.entries));
  line(out, "rwkv7_cache_bytes", "gauge", "Bytes of the memory tier", double(s.cache.bytes));
  line(out, "rwkv7_cache_disk_entries", "gauge", "States in the disk tier",
       double(s.cache.disk_entries));
  line(out, "rwkv7_cache_disk_bytes", "gauge", "Bytes of the disk tier",
       double(s.cache.disk_bytes));
  line(out, "rwkv7_cache_disk_hits_total", "counter", "Hits served from the disk tier",
       double(s.cache.disk_hits));
  line(out, "rwkv7_cache_evictions_total", "counter", "Memory-tier evictions",
       double(s.cache.evictions));
  line(out, "rwkv7_cache_compressed_entries", "gauge",
       "States in memory held compressed (--cache-compress)", double(s.cache.compressed_entries));
  time_to_first_token.write(out, "rwkv7_time_to_first_token_seconds",
                            "Request received to first token");
  inter_token.write(out, "rwkv7_inter_token_seconds", "Between two streamed tokens");
  request_duration.write(out, "rwkv7_request_duration_seconds", "Request received to finished");
  const auto [rss, hwm] = memory();
  line(out, "rwkv7_process_resident_bytes", "gauge", "Resident memory", rss);
  line(out, "rwkv7_process_peak_resident_bytes", "gauge", "Peak resident memory", hwm);
  return out;
}

}  // namespace rwkv7::server
