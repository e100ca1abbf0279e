// DataParallel over MPI (RWKV7_WITH_MPI) or alone (see data_parallel.hpp).
#include "train/data_parallel.hpp"

#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "rwkv7/error.hpp"

#ifdef RWKV7_WITH_MPI
#include <mpi.h>
#endif

namespace rwkv7::train {

int launcher_world_size(const std::function<const char*(const char*)>& env) {
  for (const char* key : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    const char* v = env(key);
    if (!v || !*v) continue;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (end && *end == '\0' && n >= 1 && n <= (1 << 20)) return int(n);
  }
  return 1;
}

bool data_parallel_built() {
#ifdef RWKV7_WITH_MPI
  return true;
#else
  return false;
#endif
}

#ifdef RWKV7_WITH_MPI
namespace {
void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(std::string("MPI: ") + what + " failed: " + std::string(msg, size_t(len)));
}
}  // namespace
#endif

DataParallel::DataParallel() {
  const int announced = launcher_world_size([](const char* k) { return std::getenv(k); });
#ifdef RWKV7_WITH_MPI
  if (announced > 1) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;  // only the main thread calls MPI; the pool's workers never do
      check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init");
      joined_ = true;
    }
    check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
  }
#else
  if (announced > 1)
    throw Error("train: started by an MPI launcher with " + std::to_string(announced) +
                " processes, but this rwkv7 was built without MPI: each would train its own "
                "copy. Rebuild with Debian's libopenmpi-dev installed (CMake finds it), or run "
                "one process");
#endif
}

DataParallel::~DataParallel() {
#ifdef RWKV7_WITH_MPI
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (joined_ && !finalized) MPI_Finalize();
#endif
}

void DataParallel::average(double& loss, TensorMap& grads) const {
  if (size_ == 1) return;
#ifdef RWKV7_WITH_MPI
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
            "all-reduce of the loss");
  loss /= double(size_);
  const float inv = 1.0f / float(size_);
  for (auto& [name, g] : grads) {
    // MPI counts are int: large tensors go in pieces.
    constexpr size_t kPiece = size_t(1) << 30;
    for (size_t i = 0; i < g.data.size(); i += kPiece) {
      const int n = int(std::min(kPiece, g.data.size() - i));
      check_mpi(
          MPI_Allreduce(MPI_IN_PLACE, g.data.data() + i, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
          ("all-reduce of the gradient of " + name).c_str());
    }
    for (float& x : g.data) x *= inv;
  }
#else
  (void)loss, (void)grads;
#endif
}

void DataParallel::check_same(uint64_t fp, int64_t step) const {
  if (size_ == 1) return;
#ifdef RWKV7_WITH_MPI
  uint64_t lo = fp, hi = fp;
  check_mpi(MPI_Allreduce(&fp, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD), "weight check");
  check_mpi(MPI_Allreduce(&fp, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD), "weight check");
  if (lo != hi)
    throw Error("train: the ranks' weights differ after step " + std::to_string(step) +
                " (fingerprints " + std::to_string(lo) + " and " + std::to_string(hi) +
                "): the processes no longer train one model");
#else
  (void)fp, (void)step;
#endif
}

void DataParallel::barrier() const {
#ifdef RWKV7_WITH_MPI
  if (size_ > 1) check_mpi(MPI_Barrier(MPI_COMM_WORLD), "barrier");
#endif
}

uint64_t fingerprint(const TensorMap& tensors) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& [name, t] : tensors) {
    for (char c : name) h = (h ^ uint8_t(c)) * 1099511628211ull;
    const auto* p = reinterpret_cast<const unsigned char*>(t.data.data());
    for (size_t i = 0; i < t.data.size() * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
  }
  return h;
}

}  // namespace rwkv7::train
