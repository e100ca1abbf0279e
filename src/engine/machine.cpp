#include "rwkv7/machine.hpp"

#include <sys/resource.h>

#include "backends/cpu_isa.hpp"
#include "backends/machine_probe.hpp"
#include "core/thread_pool.hpp"

namespace rwkv7 {

MachineLimits measure_machine_limits(int threads) {
  ThreadPool pool(threads);
  const CpuLimits c = probe_cpu_limits(pool);
  MachineLimits m;
  m.read_gb_s = c.read_gb_s;
  m.fma_gflop_s = c.fma_gflop_s;
  return m;
}

double peak_rss_mib() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;  // Linux reports KiB
}

std::vector<std::string> cpu_isas() { return available_cpu_isas(); }

std::string cpu_isa() { return current_cpu_isa(); }

void set_cpu_isa(std::string_view name) { cap_cpu_isa(name); }

}  // namespace rwkv7
