#!/usr/bin/env bash
# Sustained load through the whole pipeline on the local stack (loopback only):
#   tests/load/pipeline.sh --seconds 600 --rate 200 [--release]
# Prints end-to-end and per-hop latency percentiles, consumer lag and each service's RSS at start,
# end and peak; --backlog starts the provisioner only after the last request.
set -euo pipefail
. "$(dirname "$0")/../../deploy/local/lib.sh"
"$ROOT/deploy/local/stack.sh" up >/dev/null
warn_if_cluttered
warn_if_cold
exec "$ROOT/tests/run-bin.sh" loadrun "$@"
