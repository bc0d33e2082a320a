#!/usr/bin/env bash
# Load on ingest alone (no evaluator/provisioner), real Kafka with acks=all, loopback only:
#   tests/load/ingest.sh [--seconds 30] [--concurrency-salesforce 8] [--concurrency-hubspot 64]
# Builds ingest and the generator in release mode, prepares a dedicated database
# (crm_sync_load) and topic (load.crm.events.v1), starts ingest on 127.0.0.1:18080, then runs
# Salesforce Outbound Messages of 100 notifications and single HubSpot events, printing
# requests/s, notifications/s, latency percentiles and the Kafka transactions ingest committed
# for each; then the baseline, a raw transactional producer with ingest's producer
# configuration (crates/kafka/examples), writing 100 and 16 records per transaction, for the
# ratios. Ingest runs with its shipped configuration (log level, committers); set
# CRM_SYNC__INGEST__… variables to compare others.
set -euo pipefail
. "$(dirname "$0")/../../deploy/local/lib.sh"

SECONDS_PER_RUN=30
SF_CONCURRENCY=8
HS_CONCURRENCY=64
while (($#)); do
  case $1 in
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --concurrency-salesforce) SF_CONCURRENCY=$2; shift 2 ;;
    --concurrency-hubspot) HS_CONCURRENCY=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

PORT=18080
OPS_PORT=18090
TOPIC=load.crm.events.v1
DB=crm_sync_load
ADMIN_URL=${CRM_SYNC_LOAD_ADMIN_URL:-postgres://crm_sync:crm_sync@127.0.0.1:5432/crm_sync}
DB_URL=${ADMIN_URL%/*}/$DB
# A key for this run only: the load database holds nothing worth protecting.
KEY=$(head -c 32 /dev/urandom | base64)

"$ROOT/deploy/local/stack.sh" up >/dev/null
warn_if_cluttered
warn_if_cold
cd "$ROOT"
# The ingest binary is built from crates/crm-pull (it runs the pull jobs beside the webhooks).
cargo build --quiet --release -p crm-sync-crm-pull --bin ingest
cargo build --quiet --release -p crm-sync-ingest --example load
cargo build --quiet --release -p crm-sync-kafka --example raw_txn_producer
BIN=$CARGO_TARGET_DIR/release

psql_admin() { PGPASSWORD=crm_sync psql -q -h 127.0.0.1 -U crm_sync -d crm_sync "$@" >/dev/null; }
cleanup() {
  "$BIN/examples/load" teardown --topic "$TOPIC" || true
  psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
}
cleanup
psql_admin -c "CREATE DATABASE $DB"
eval "$("$BIN/examples/load" setup --database-url "$DB_URL" --topic "$TOPIC" --encryption-key "$KEY")"

LOG=$CRM_SYNC_HOME/logs/ingest-load.log
mkdir -p "$(dirname "$LOG")"
CRM_SYNC__HTTP__HOST=127.0.0.1 CRM_SYNC__HTTP__PORT=$PORT CRM_SYNC__HTTP__OPS_PORT=$OPS_PORT \
CRM_SYNC__DATABASE__URL=$DB_URL \
CRM_SYNC__DATABASE__MAX_CONNECTIONS=16 \
CRM_SYNC__TOPICS__EVENTS=$TOPIC CRM_SYNC__SECRETS__ENCRYPTION_KEY=$KEY \
CRM_SYNC__INGEST__RATE_LIMIT_PER_SECOND=1000000 CRM_SYNC__INGEST__RATE_LIMIT_BURST=1000000 \
CRM_SYNC__TELEMETRY__LOG_FORMAT=json \
  "$BIN/ingest" >"$LOG" 2>&1 &
INGEST_PID=$!
trap 'kill "$INGEST_PID" 2>/dev/null || true; wait "$INGEST_PID" 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$OPS_PORT/readyz" >/dev/null || { echo "ingest did not become ready; see $LOG" >&2; exit 1; }

# Ingest's committed Kafka transactions so far, to print how many each case took.
transactions() {
  curl -fsS "http://127.0.0.1:$OPS_PORT/metrics" |
    awk '/^crm_sync_transactions_total\{/ && /result="committed"/ {s += $NF} END {print s + 0}'
}
# Runs one case of the generator, then prints the transactions it took.
run_case() {
  local before
  before=$(transactions)
  "$BIN/examples/load" run --url "http://127.0.0.1:$PORT" --seconds "$SECONDS_PER_RUN" "$@"
  echo "transactions:    $(($(transactions) - before))"
}

echo "== machine: $(nproc) cores, $(uname -sr); ingest release build, acks=all, topic $TOPIC"
echo "== Salesforce Outbound Messages, 100 notifications per request"
run_case --mode salesforce --integration-id "$SALESFORCE_INTEGRATION" --concurrency "$SF_CONCURRENCY" --batch 100
echo "== Salesforce Outbound Messages, 100 notifications per request, every record new (owners written each time)"
run_case --mode salesforce --integration-id "$SALESFORCE_INTEGRATION" --concurrency "$SF_CONCURRENCY" --batch 100 --fresh-records
echo "== HubSpot, one event per request"
run_case --mode hubspot --integration-id "$HUBSPOT_INTEGRATION" --concurrency "$HS_CONCURRENCY"
echo "== ingest RSS at the end: $(($(awk '/VmRSS/ {print $2}' "/proc/$INGEST_PID/status") / 1024)) MiB"
echo "== ingest peak RSS: $(($(awk '/VmHWM/ {print $2}' "/proc/$INGEST_PID/status") / 1024)) MiB"
kill "$INGEST_PID" 2>/dev/null || true
wait "$INGEST_PID" 2>/dev/null || true
for per in 100 16; do
  echo "== baseline: raw transactional producer, $per records per transaction"
  "$BIN/examples/raw_txn_producer" 127.0.0.1:9092 "$TOPIC.raw" --producers 4 \
    --per-transaction "$per" --seconds "$SECONDS_PER_RUN"
done
"$BIN/examples/load" teardown --topic "$TOPIC.raw" || true
