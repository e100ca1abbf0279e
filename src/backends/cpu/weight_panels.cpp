// Load-time preparation of bf16, f16, fp32, Q8_0, Q4_0 and K-quant weights for the cpu backend
// (panels). (weight_panels_kernels.hpp).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <new>

#include "backends/backend.hpp"
#include "backends/cpu/gemm_bf16_kernels.hpp"
#include "backends/cpu/gemm_packed_kernels.hpp"
#include "backends/cpu/pair_panels.hpp"
#include "backends/cpu/q4_panels_kernels.hpp"
#include "backends/cpu/q4k_panels_kernels.hpp"
#include "backends/cpu/q6k_panels_kernels.hpp"
#include "backends/cpu/q8_panels_kernels.hpp"
#include "backends/cpu/weight_panels_kernels.hpp"
#include "core/quant.hpp"
#include "core/thread_pool.hpp"

namespace rwkv7 {
namespace {

// Tells the kernel the whole pages inside [p, p + n) will not be read soon. MADV_PAGEOUT
// reclaims clean file pages (a mapped checkpoint) and never loses data (anonymous pages go to
// swap, or stay when there is none); kernels without it refuse, which changes nothing.
void advise_cold(const void* p, size_t n) {
#ifdef MADV_PAGEOUT
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (uintptr_t(p) + page - 1) / page * page;
  const uintptr_t end = (uintptr_t(p) + n) / page * page;
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_PAGEOUT);
#else
  (void)p, (void)n;
#endif
}

// `count` elements for weight panels; from 2 MB on, 2 MB-aligned and on 2 MB pages where the
// kernel gives them (transparent huge pages in "madvise" mode, Debian's default): a decode
// step streams every panel once, and with 4 KB pages each 4 KB of weights costs a TLB miss
// that the kernels' prefetches cannot hide. Smaller ones (the LoRA factors) stay on 4 KB
// pages: a 2 MB page each would add ~2 MB of memory per factor.
template <class T>
std::shared_ptr<T[]> allocate_panels(size_t count) {
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t bytes = count * sizeof(T);
  void* p = nullptr;
  if (posix_memalign(&p, bytes >= kHuge ? kHuge : 64, bytes) != 0) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (bytes >= kHuge)  // a hint: refused or not, the memory is the same
    (void)madvise(p, bytes / kHuge * kHuge, MADV_HUGEPAGE);
#endif
  return std::shared_ptr<T[]>(static_cast<T*>(p), [](T* q) { std::free(q); });
}

// Q8_0, Q4_0 or Q4_K (AVX2 or VNNI), Q5_K or Q6_K (AVX2) integer panels, when the kernels in
// use have them.
std::shared_ptr<const void> prepare_int_panels(Matrix& m, ThreadPool& pool, bool data_is_mapped) {
  const bool q4 = m.dtype == DType::Q4_0, q4k = m.dtype == DType::Q4_K;
  const bool q5k = m.dtype == DType::Q5_K, q6k = m.dtype == DType::Q6_K;
  const int64_t block = q4k || q5k || q6k ? kSuperBlock : kQuantBlock;
  const bool supported = q4    ? cpu::q4_panels_supported()
                         : q4k ? cpu::q4k_panels_supported()
                         : q5k ? cpu::q5k_panels_supported()
                         : q6k ? cpu::q6k_panels_supported()
                               : cpu::q8_panels_supported();
  if (m.rows <= 0 || m.cols <= 0 || m.cols % block != 0 || m.cpu_int_panels || !supported)
    return nullptr;
  const size_t rows = size_t(m.rows), cols = size_t(m.cols);
  const size_t width = q4    ? cpu::q4_panel_width()
                       : q4k ? cpu::q4k_panel_width()
                       : q5k ? cpu::q5k_panel_width()
                       : q6k ? cpu::q6k_panel_width()
                             : cpu::q8_panel_width();
  const std::shared_ptr<uint8_t[]> panels =
      allocate_panels<uint8_t>(q4    ? cpu::q4_panels_bytes(rows, cols)
                               : q4k ? cpu::q4k_panels_bytes(rows, cols)
                               : q5k ? cpu::q5k_panels_bytes(rows, cols)
                               : q6k ? cpu::q6k_panels_bytes(rows, cols)
                                     : cpu::q8_panels_bytes(rows, cols));
  const auto* w = static_cast<const uint8_t*>(m.data);
  const auto pack = q4    ? cpu::pack_q4_panels
                    : q4k ? cpu::pack_q4k_panels
                    : q5k ? cpu::pack_q5k_panels
                    : q6k ? cpu::pack_q6k_panels
                          : cpu::pack_q8_panels;
  pool.parallel_for(int64_t((rows + width - 1) / width), 1, [&](int64_t p0, int64_t p1) {
    pack(w, rows, cols, size_t(p0), size_t(p1), panels.get());
  });
  if (data_is_mapped) advise_cold(m.data, size_t(row_bytes(m.dtype, m.cols)) * rows);
  m.cpu_int_panels = panels.get();
  m.cpu_panel_outputs = uint32_t(width);
  return panels;
}

// bf16 / f16 bits (T = uint16_t) or fp32 values (T = float) of m packed into panels.
template <class T>
std::shared_ptr<const void> prepare_float_panels(Matrix& m, ThreadPool& pool, bool data_is_mapped) {
  const size_t rows = size_t(m.rows), cols = size_t(m.cols), nr = cpu::panel_width();
  const std::shared_ptr<T[]> panels = allocate_panels<T>(cpu::panels_size(rows, cols));
  const auto* w = static_cast<const T*>(m.data);
  pool.parallel_for(int64_t((rows + nr - 1) / nr), 1, [&](int64_t p0, int64_t p1) {
    if constexpr (sizeof(T) == 2)
      cpu::pack_panels(m.dtype, w, rows, cols, size_t(p0), size_t(p1), panels.get());
    else
      cpu::pack_panels(w, rows, cols, size_t(p0), size_t(p1), panels.get());
  });
  if (data_is_mapped) advise_cold(m.data, rows * cols * sizeof(T));
  m.cpu_panels = panels.get();
  m.cpu_panel_outputs = uint32_t(nr);
  return panels;
}

// bf16 bits or fp32 values of m rounded into pair panels (bf16 products).
std::shared_ptr<const void> prepare_pair_panels(Matrix& m, ThreadPool& pool, bool data_is_mapped) {
  const size_t rows = size_t(m.rows), cols = size_t(m.cols);
  const std::shared_ptr<uint16_t[]> panels =
      allocate_panels<uint16_t>(cpu::pair_panels_size(rows, cols));
  const int64_t count = int64_t((rows + cpu::kBf16PanelWidth - 1) / cpu::kBf16PanelWidth);
  pool.parallel_for(count, 1, [&](int64_t p0, int64_t p1) {
    if (m.dtype == DType::BF16)
      cpu::pack_pair_panels(static_cast<const uint16_t*>(m.data), rows, cols, size_t(p0),
                            size_t(p1), panels.get());
    else
      cpu::pack_pair_panels(static_cast<const float*>(m.data), rows, cols, size_t(p0), size_t(p1),
                            panels.get());
  });
  if (data_is_mapped) advise_cold(m.data, rows * cols * dtype_size(m.dtype));
  m.cpu_pair_panels = panels.get();
  return panels;
}

}  // namespace

std::shared_ptr<const void> prepare_cpu_panels(Matrix& m, ThreadPool& pool, bool data_is_mapped,
                                               bool fp32_copy_ok, bool bf16_pairs) {
  if (bf16_pairs && (m.dtype == DType::BF16 || m.dtype == DType::F32) && m.rows > 0 && m.cols > 0 &&
      !m.cpu_panels && !m.cpu_pair_panels && cpu::bf16_dot_available())
    return prepare_pair_panels(m, pool, data_is_mapped);
  if (m.dtype == DType::Q8_0 || m.dtype == DType::Q4_0 || m.dtype == DType::Q4_K ||
      m.dtype == DType::Q5_K || m.dtype == DType::Q6_K)
    return prepare_int_panels(m, pool, data_is_mapped);
  if (m.rows <= 0 || m.cols <= 0 || m.cpu_panels) return nullptr;
  if (m.dtype == DType::BF16 || m.dtype == DType::F16)
    return prepare_float_panels<uint16_t>(m, pool, data_is_mapped);
  // fp32 panels are as large as the weight: in place of a file's pages (advised cold below),
  // or as a second copy only where the caller says it is small enough.
  if (m.dtype == DType::F32 && (data_is_mapped || fp32_copy_ok))
    return prepare_float_panels<float>(m, pool, data_is_mapped);
  return nullptr;
}

}  // namespace rwkv7
