#!/usr/bin/env bash
# The chaos suite on the local stack (it restarts Kafka and PostgreSQL: run it alone).
#   tests/chaos/run.sh                              CI size: 20,000 events
#   tests/chaos/run.sh --events 100000 --release   the documented run (release builds)
# Other flags: --rate EVENTS_PER_SEC (default 400), --seed S (default 42), --owners K (default 50).
set -euo pipefail
exec "$(dirname "$0")/../run-bin.sh" chaos "$@"
