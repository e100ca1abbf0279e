#!/usr/bin/env bash
# Builds (via setup.sh) and runs every test. Tests read ../shared (golden files, models) and
# skip with a message when it is absent; with CI=true a missing ../shared is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j"${RWKV7_JOBS:-$(nproc)}" --timeout 600
