// RWKV7_ISA caps the kernels of the test process as it does for the rwkv7 binary (which the CLI
// tests start with the same environment), so one AVX-512 machine runs the whole suite on the
// AVX2 path too: `RWKV7_ISA=avx2 ctest --test-dir build`. Applied before main, once per process
// (ctest runs each test in its own).
#include <cstdio>
#include <cstdlib>  // std::exit
#include <exception>

#include "backends/cpu_isa.hpp"

namespace {

const bool kIsaRead = [] {
  try {
    rwkv7::cap_cpu_isa_from_env();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "RWKV7_ISA: %s\n", e.what());
    std::exit(2);
  }
  return true;
}();

}  // namespace
