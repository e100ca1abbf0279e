// The packed panels' width in vectors, per Highway target: included inside
// rwkv7::cpu::HWY_NAMESPACE by each kernel file that reads or writes panels
// (gemm_packed_kernels.cpp, weight_panels_kernels.cpp), once per target (no include guard:
// the per-target toggle below, Highway's -inl convention).
#if defined(RWKV7_PANEL_VECS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef RWKV7_PANEL_VECS_INL_H_
#undef RWKV7_PANEL_VECS_INL_H_
#else
#define RWKV7_PANEL_VECS_INL_H_
#endif

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace rwkv7::cpu::HWY_NAMESPACE {
// A panel line is kPanelVecs vectors of floats (NR = kPanelVecs · lanes outputs): 4 × 16 on
// AVX-512 (32 registers: a 6 × 4 tile of accumulators), 3 × 8 elsewhere (16 registers: 4 × 3).
constexpr int kPanelVecs = HWY_MAX_BYTES >= 64 ? 4 : 3;
}  // namespace rwkv7::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif
