#!/usr/bin/env bash
# Installs what building tracer needs: the pinned Rust toolchain (with rust-src), LLVM 22 and
# bpf-linker built against it. Idempotent and quick when everything is already there.
# Sourced by run.sh and test.sh; can be run on its own.
set -euo pipefail

TOOLCHAIN=1.98.0            # aya 0.16 needs >= 1.98; 1.99+ emits LLVM 23 bitcode bpf-linker rejects
LLVM_MAJOR=22               # must be >= rustc's LLVM (1.98.0 uses LLVM 22)
BPF_LINKER_VERSION=0.13.0

say() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; return 1; fi
}

export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v rustup >/dev/null; then
  say "rustup not found: install it from your distribution (apt-get install rustup) and re-run"
  exit 1
fi

if ! rustup toolchain list | grep -q "^$TOOLCHAIN"; then
  say "installing Rust $TOOLCHAIN"
  rustup toolchain install "$TOOLCHAIN" --profile minimal --component rust-src,clippy,rustfmt
else
  # Cheap no-op when present; repairs a toolchain installed without them.
  comps=$(rustup component list --toolchain "$TOOLCHAIN" --installed 2>/dev/null || true)
  for c in rust-src clippy rustfmt; do
    grep -q "^$c" <<<"$comps" || rustup component add --toolchain "$TOOLCHAIN" "$c"
  done
fi

missing_pkgs=()
[ -x "/usr/lib/llvm-$LLVM_MAJOR/bin/llvm-config" ] || missing_pkgs+=("llvm-$LLVM_MAJOR-dev")
for p in "libpolly-$LLVM_MAJOR-dev" zlib1g-dev libzstd-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || missing_pkgs+=("$p")
done
if [ ${#missing_pkgs[@]} -gt 0 ]; then
  say "installing ${missing_pkgs[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing_pkgs[@]}"
fi

if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  say "building bpf-linker $BPF_LINKER_VERSION against LLVM $LLVM_MAJOR (about 2 minutes)"
  LLVM_PREFIX="/usr/lib/llvm-$LLVM_MAJOR" cargo "+$TOOLCHAIN" install bpf-linker \
    --version "$BPF_LINKER_VERSION" --locked --no-default-features --features "llvm-$LLVM_MAJOR"
fi
