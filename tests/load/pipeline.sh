#!/usr/bin/env bash
# Sustained load through the whole pipeline on the local stack (loopback only):
#   tests/load/pipeline.sh [--release] --seconds 600 --rate 200
# Prints end-to-end latency percentiles, consumer lag and each service's RSS at start and end.
# --release: optimized binaries (only the services and the load generator are built), for
# throughput figures; without it the debug build the test suites use.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CRM_SYNC_HOME=${CRM_SYNC_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/crm-sync}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CRM_SYNC_HOME/target}
PROFILE=debug
ARGS=()
for arg in "$@"; do
  if [[ $arg == --release ]]; then PROFILE=release; else ARGS+=("$arg"); fi
done
"$ROOT/deploy/local/stack.sh" up >/dev/null
cd "$ROOT"
if [[ $PROFILE == release ]]; then
  # loadrun starts the services from its own folder, so they must be release builds too.
  cargo build --quiet --release -p crm-sync-ingest -p crm-sync-workflow-evaluator \
    -p crm-sync-provisioner -p crm-sync-e2e --bin ingest --bin workflow-evaluator \
    --bin provisioner --bin loadrun
else
  cargo build --quiet --workspace --bins
fi
exec "$CARGO_TARGET_DIR/$PROFILE/loadrun" "${ARGS[@]}"
