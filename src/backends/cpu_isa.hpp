#pragma once
// Which SIMD instruction set the CPU kernels dispatch to (Highway's runtime dispatch), and a
// way to cap it so one machine can measure every path (rwkv7 bench --isa, RWKV7_ISA).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rwkv7 {

// The instruction sets this build has kernels for and this CPU runs, best first, by their
// user-facing names: "avx512vnni", "avx512", "avx2", "sse4", "ssse3", "scalar".
std::vector<std::string> available_cpu_isas();

// The instruction set the kernels use now (the best of available_cpu_isas()).
std::string current_cpu_isa();

// Caps the dispatch at `name` (one of the names above, or "native" to lift the cap): every
// better target is disabled for the whole process. Call it before loading a model (weights
// are packed for the target in use at load). Throws Error naming the value when it is unknown
// or not available on this CPU / in this build.
void cap_cpu_isa(std::string_view name);

// cap_cpu_isa(RWKV7_ISA) when that environment variable is set and not empty (the benchmark and
// test programs; the rwkv7 binary reads it through the public set_cpu_isa).
void cap_cpu_isa_from_env();

// Whether the kernels in use (under the cap) are Highway's `target` (a HWY_* bit) or better:
// for kernels outside Highway's targets (AVX512_BF16 dot products), which follow the cap too.
// Side-effect free (asks the dispatch, not the CPU): safe while other threads run kernels.
bool cpu_target_at_least(int64_t target);

}  // namespace rwkv7
