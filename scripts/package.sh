#!/usr/bin/env bash
# Builds the Debian package: target/debian/tracer_<version>-1_<arch>.deb with the binary, the
# systemd unit (packaging/tracer.service), the default config in /etc/tracer, shell completions
# and man pages. Installs cargo-deb when missing (cargo install --locked cargo-deb).
#   ./scripts/package.sh            # then: sudo dpkg -i target/debian/tracer_*.deb
# TRACER_PROFILE=dev packages a debug build (the tests do, to reuse their build).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
profile="${TRACER_PROFILE:-release}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
cargo build --profile "$profile" -p tracer
rm -rf packaging/generated
"$target/$dir/tracer" generate-assets packaging/generated
cargo deb -p tracer --no-build --profile "$profile" "$@"
