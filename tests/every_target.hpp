#pragma once
// Runs a test body once per compiled Highway target the CPU supports (the kernels, and layouts
// such as the panel width, differ per target; a test machine has one best target), then
// restores the normal dispatch.
#include <gtest/gtest.h>

#include <cstdint>

#include "hwy/targets.h"

namespace rwkv7::testing {

template <class Fn>
void on_every_target(const Fn& fn) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    fn();
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace rwkv7::testing
