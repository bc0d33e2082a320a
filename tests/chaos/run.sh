#!/usr/bin/env bash
# The chaos suite on the local stack (it restarts Kafka and PostgreSQL: run it alone).
#   tests/chaos/run.sh                              CI size: 20,000 events
#   tests/chaos/run.sh --events 100000 --release   the documented run (release builds)
# Other flags: --rate EVENTS_PER_SEC (default 400), --seed S (default 42), --owners K (default 50).
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
exec "$CARGO_TARGET_DIR/$PROFILE/chaos" "${ARGS[@]}"
