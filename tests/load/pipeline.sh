#!/usr/bin/env bash
# Sustained load through the whole pipeline on the local stack (loopback only):
#   tests/load/pipeline.sh --seconds 600 --rate 200 [--release]
# Prints end-to-end latency percentiles, consumer lag and each service's RSS at start and end.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CRM_SYNC_HOME=${CRM_SYNC_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/crm-sync}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CRM_SYNC_HOME/target}
"$ROOT/deploy/local/stack.sh" up >/dev/null
cd "$ROOT"
# --release: run the services (and the driver) as release builds, as for documented figures.
PROFILE=debug
ARGS=()
for arg in "$@"; do
  if [[ $arg == --release ]]; then PROFILE=release; else ARGS+=("$arg"); fi
done
if [[ $PROFILE == release ]]; then
  cargo build --quiet --release --workspace --bins
else
  cargo build --quiet --workspace --bins
fi
exec "$CARGO_TARGET_DIR/$PROFILE/loadrun" "${ARGS[@]}"
