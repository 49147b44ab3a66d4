#!/usr/bin/env bash
# The main job: set up what is missing, build, and run tracer (as root).
#   sudo ./run.sh            # tracer demo: reproduce the incidents tracer explains, and report
#   sudo ./run.sh live       # any tracer command and options
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
cargo build --release -p tracer >&2
[ $# -gt 0 ] || set -- demo
if [ "$(id -u)" -ne 0 ] && [[ "$1" =~ ^(live|record|demo|doctor|top)$ ]]; then
  exec sudo ./target/release/tracer "$@"
fi
exec ./target/release/tracer "$@"
