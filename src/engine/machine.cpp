#include "rwkv7/machine.hpp"

#include <sys/resource.h>

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

}  // namespace rwkv7
