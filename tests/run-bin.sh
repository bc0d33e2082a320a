#!/usr/bin/env bash
# Builds the workspace's binaries and runs one of them on the local stack:
#   tests/run-bin.sh <binary> [--release] [its arguments…]
# --release runs the services (found next to the binary) as release builds, as for documented
# figures; the default is the debug build the tests use.
set -euo pipefail
. "$(dirname "$0")/../deploy/local/lib.sh"
BINARY=$1
shift
PROFILE=debug
ARGS=()
for arg in "$@"; do
  if [[ $arg == --release ]]; then PROFILE=release; else ARGS+=("$arg"); fi
done
"$ROOT/deploy/local/stack.sh" up >/dev/null
cd "$ROOT"
if [[ $PROFILE == release ]]; then
  cargo build --quiet --release --workspace --bins
else
  cargo build --quiet --workspace --bins
fi
exec "$CARGO_TARGET_DIR/$PROFILE/$BINARY" "${ARGS[@]}"
