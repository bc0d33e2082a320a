#!/usr/bin/env bash
# The main job in one command: bring up the local stack (Kafka + PostgreSQL), build and start the
# services, and run the demo, which prints the users created and the activities recorded.
# The services keep running afterwards; stop everything with:
#   deploy/local/services.sh stop && deploy/local/stack.sh down
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CRM_SYNC_HOME=${CRM_SYNC_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/crm-sync}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CRM_SYNC_HOME/target}

"$ROOT/deploy/local/stack.sh" up
"$ROOT/deploy/local/services.sh" start
"$CARGO_TARGET_DIR/debug/crm-sync" demo "$@"
