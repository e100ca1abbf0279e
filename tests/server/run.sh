#!/usr/bin/env bash
# End-to-end tests of `rwkv7 serve` with real clients (openai SDK, headless Chromium).
# Usage: tests/server/run.sh  (from any directory). Binary: $RWKV7_CLI or <repo>/build/rwkv7.
# Skips (exit 0) only when the binary has no `serve` subcommand and CI is not "true"; a missing
# node, npm or Chromium is always a failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cli="${RWKV7_CLI:-$repo/build/rwkv7}"
ci="${CI:-}"

fail_or_skip() {
  if [[ "$ci" == "true" ]]; then echo "tests/server: FAIL: $1" >&2; exit 1; fi
  echo "tests/server: SKIP: $1" >&2; exit 0
}

# Without the subcommand, CLI11 answers `serve --help` with the top-level help and exit code 0.
help="$("$cli" serve --help 2>&1 || true)"
if [[ "$help" != *--port* ]]; then
  fail_or_skip "$cli has no 'serve' subcommand (build it first)"
fi
fail() { echo "tests/server: FAIL: $1" >&2; exit 1; }
command -v node >/dev/null || fail "node is not installed (apt-get install nodejs npm)"
command -v npm >/dev/null || fail "npm is not installed (apt-get install npm)"
chromium="${RWKV7_CHROMIUM:-/usr/bin/chromium}"
[[ -x "$chromium" ]] || fail "no Chromium at $chromium (apt-get install chromium)"

cd "$here"
if [[ ! -d node_modules ]]; then
  npm ci --no-audit --no-fund
fi
export RWKV7_CLI="$cli"
exec node --test --test-concurrency=1 "$here"/*.test.mjs
