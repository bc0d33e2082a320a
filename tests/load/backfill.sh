#!/usr/bin/env bash
# A backfill under load, through the real services (ingest with its pull jobs, evaluator,
# provisioner) against the e2e kit's fake Salesforce API, real Kafka and PostgreSQL:
#   tests/load/backfill.sh [--records 100000] [--rate 2000] [--max-lag 400] [--page 200] [--release]
# Needs the local stack (deploy/local/stack.sh up). Puts N opportunities (a third won) into the
# fake CRM, sends live Outbound Messages 10 per second for 15 s, then gives the integration API
# credentials: the backfill on connect pulls all N in pages of `--page` (pull.page_size, one
# Kafka transaction each) at `--rate` records/s (pull.records_per_second),
# waiting while the evaluator is more than `--max-lag` records behind (pull.max_evaluator_lag,
# 0 = not watched), while the live messages go on. Prints records/s pulled and published, the backfill end to end
# to activities, the live path's latency (webhook sent → activity stored, p50/p99/max ms) before
# and during the backfill, and the load average.
set -euo pipefail
. "$(dirname "$0")/../../deploy/local/lib.sh"

RECORDS=100000
RATE=2000
MAX_LAG=400
PAGE=200
PROFILE=()
while (($#)); do
  case $1 in
    --records) RECORDS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --max-lag) MAX_LAG=$2; shift 2 ;;
    --page) PAGE=$2; shift 2 ;;
    --release) PROFILE=(--release); shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

cd "$ROOT"
# The e2e kit starts the services from the test binary's profile directory.
cargo build --quiet "${PROFILE[@]}" --workspace --bins
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
PULL_LOAD_RECORDS=$RECORDS PULL_LOAD_RATE=$RATE PULL_LOAD_MAX_LAG=$MAX_LAG PULL_LOAD_PAGE=$PAGE \
  cargo test --quiet "${PROFILE[@]}" -p crm-sync-e2e --test suites pull::load::backfill_load_figures \
  -- --ignored --nocapture 2>&1 | grep -E "FIGURES|panicked|test result"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
