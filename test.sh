#!/usr/bin/env bash
# Every test: formatting and lints, unit tests, then the privileged end-to-end tests that load
# the real eBPF programs (as root), the kernel matrix (Debian's kernels under qemu), the
# dump-reader fuzz smoke and the benchmark smoke.
#   sudo ./test.sh
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --exclude tracer-ebpf --all-targets -q -- -D warnings
# The eBPF crate only builds for the BPF target, with core built from source (the pinned stable
# toolchain accepts -Z with RUSTC_BOOTSTRAP=1, as in tracer/build.rs).
RUSTC_BOOTSTRAP=1 cargo clippy -p tracer-ebpf --target bpfel-unknown-none -Z build-std=core -q -- \
  -D warnings

step "unit tests (no root needed)"
cargo test -q

step "privileged end-to-end tests (real eBPF programs)"
if [ "$(id -u)" -ne 0 ]; then
  if [ "${CI:-}" = "true" ]; then echo "CI must run the privileged tests as root" >&2; exit 1; fi
  echo "SKIPPED: not root. Run 'sudo ./test.sh' to load the eBPF programs." >&2
else
  cargo build -q -p tracer -p tracer-tests
  TRACER_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/tracer" cargo test -q -p tracer-tests -- --test-threads=1
fi

step "kernel matrix: Debian's 6.1 and 6.12 booted under qemu (about 3 minutes)"
if [ "$(id -u)" -ne 0 ]; then
  if [ "${CI:-}" = "true" ]; then echo "CI must run the kernel matrix as root" >&2; exit 1; fi
  echo "SKIPPED: not root (it installs qemu and fetches kernel packages). Run 'sudo ./test.sh'." >&2
else
  cargo xtask vm-test
fi

step "fuzz the dump reader (bounded)"
# cargo-fuzz needs unstable flags: the pinned toolchain accepts them with RUSTC_BOOTSTRAP=1.
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
corpus=$(mktemp -d)
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run dump_reader "$corpus" seeds/dump_reader -- \
  -max_total_time="${FUZZ_SECONDS:-30}" -rss_limit_mb=2048 2>&1 | tail -n 5)
rm -rf "$corpus"

step "benchmark smoke (seconds; the figures come from 'sudo cargo xtask bench')"
if [ "$(id -u)" -eq 0 ]; then
  cargo xtask bench --smoke
else
  echo "SKIPPED: the benchmark needs root" >&2
fi
