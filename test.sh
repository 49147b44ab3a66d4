#!/usr/bin/env bash
# Every test: formatting and lints, unit tests, then the privileged end-to-end tests that load
# the real eBPF programs (as root), the dump-reader fuzz smoke and the benchmark smoke.
#   sudo ./test.sh
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --exclude tracer-ebpf --all-targets -q -- -D warnings

step "unit tests (no root needed)"
cargo test -q

step "privileged end-to-end tests (real eBPF programs)"
if [ "$(id -u)" -ne 0 ]; then
  if [ "${CI:-}" = "true" ]; then echo "CI must run the privileged tests as root" >&2; exit 1; fi
  echo "SKIPPED: not root. Run 'sudo ./test.sh' to load the eBPF programs." >&2
else
  cargo build -q -p tracer -p tracer-tests
  TRACER_BIN="$PWD/target/debug/tracer" cargo test -q -p tracer-tests -- --test-threads=1
fi

if [ -x scripts/extra-tests.sh ]; then
  step "fuzz and benchmark smoke"
  scripts/extra-tests.sh
fi
