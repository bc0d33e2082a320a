#!/usr/bin/env bash
# The database's own rate for the provisioner's writes, as a baseline for the provisioner:
#   tests/load/provisioner_bulk.sh [--outcomes N] [--matched-percent P] [--mapped]
#     (defaults: 200000 outcomes, 28 % matched as in tests/load/evaluator.sh's mix; --mapped:
#      every owner already has a platform user, so each matched outcome also stages an
#      ActivityChanged in the outbox, deleted after the batch as the provisioner does once Kafka
#      acknowledged it)
#
# On a fresh database (migrated, one integration with 10 workflows), pgbench runs
# tests/load/provisioner_bulk.sql once per 64-outcome batch, one client: deduplication rows,
# identities, owner memory, activities, retractions and outbox rows, each one set-based statement
# per batch, in one transaction. Reports outcomes/s. Everything it creates is removed at the end.
set -euo pipefail
. "$(dirname "$0")/../../deploy/local/lib.sh"
ADMIN_DB=${CRM_SYNC_TEST_DATABASE_URL:-postgres://crm_sync:crm_sync@127.0.0.1:5432/crm_sync}

OUTCOMES=200000
MATCHED=28
MAPPED=0
while (($#)); do
  case $1 in
    --outcomes) OUTCOMES=$2; shift 2 ;;
    --matched-percent) MATCHED=$2; shift 2 ;;
    --mapped) MAPPED=1; shift ;;
    *) echo "usage: $0 [--outcomes N] [--matched-percent P] [--mapped]" >&2; exit 2 ;;
  esac
done
say() { printf '[bulk] %s\n' "$*" >&2; }

cd "$ROOT"
# CRM_SYNC_BIN: a directory that already holds a built crm-sync (skips the release build).
BIN=${CRM_SYNC_BIN:-$CARGO_TARGET_DIR/release}
[[ -n ${CRM_SYNC_BIN:-} ]] || cargo build --quiet --release -p crm-sync-cli
RUN=bulk_$(date +%s)_$$
DB=crm_sync_$RUN
DB_URL=${ADMIN_DB%/*}/$DB
WORK=$(mktemp -d)
cleanup() {
  psql "$ADMIN_DB" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

say "database $DB"
psql "$ADMIN_DB" -qc "CREATE DATABASE $DB" >/dev/null
"$BIN/crm-sync" --database-url "$DB_URL" migrate >/dev/null
INTEGRATION=$(cat /proc/sys/kernel/random/uuid)
{
  cat <<YAML
companies:
  - slug: $RUN
    name: Bulk run
    integrations:
      - name: salesforce
        id: $INTEGRATION
        crm: salesforce
        crm_account_id: 00DBULK0000000AAA
        workflows:
YAML
  for n in $(seq 0 9); do
    cat <<YAML
          - name: Workflow $n
            active: true
            object_type: Opportunity
            triggers: [created, updated]
            user_field: OwnerId
            value_field: Amount
            activity_type: activity_$n
            conditions:
              all:
                - {field: StageName, op: eq, value: Closed Won}
YAML
  done
} >"$WORK/tenant.yaml"
"$BIN/crm-sync" --database-url "$DB_URL" apply -f "$WORK/tenant.yaml" >/dev/null
COMPANY=$(psql "$DB_URL" -qAtc "SELECT company_id FROM integrations WHERE id = '$INTEGRATION'")
psql "$DB_URL" -q >/dev/null <<SQL
CREATE SEQUENCE bulk_batch MINVALUE 0 START 0;
CREATE TABLE bulk_tenant AS SELECT '$COMPANY'::uuid AS company_id, '$INTEGRATION'::uuid AS integration_id;
CREATE TABLE bulk_workflows AS
SELECT (row_number() OVER (ORDER BY name) - 1)::int AS slot, id, activity_type
FROM workflows WHERE integration_id = '$INTEGRATION';
SQL
if ((MAPPED)); then
  psql "$DB_URL" -q >/dev/null <<SQL
INSERT INTO users (id, company_id, display_name, status, source)
SELECT md5('user' || o)::uuid, '$COMPANY', 'Owner ' || o, 'active', 'auto_sync'
FROM generate_series(0, 499) AS o;
INSERT INTO crm_identities (company_id, integration_id, crm_user_id, user_id)
SELECT '$COMPANY', '$INTEGRATION', '005LOAD' || lpad(o::text, 5, '0'), md5('user' || o)::uuid
FROM generate_series(0, 499) AS o;
SQL
fi

BATCHES=$(((OUTCOMES + 63) / 64))
say "$BATCHES batches of 64 outcomes ($MATCHED % matched, mapped=$MAPPED)"
pgbench "$DB_URL" --no-vacuum --client 1 --transactions "$BATCHES" --file tests/load/provisioner_bulk.sql \
  --define matched_pct="$MATCHED" \
  >"$WORK/pgbench.log" 2>&1 || { cat "$WORK/pgbench.log" >&2; exit 1; }
tps=$(awk -F' = ' '/^tps/ {split($2, v, " "); print v[1]}' "$WORK/pgbench.log" | tail -1)
activities=$(psql "$DB_URL" -qAtc "SELECT count(*) FILTER (WHERE state = 'recorded') || '/' || count(*) FROM activities")
awk -v t="$tps" -v n="$((BATCHES * 64))" -v a="$activities" -v m="$MAPPED" \
  -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
  printf "bulk outcomes=%d mapped=%d batches_per_second=%.1f outcomes_per_second=%.0f activities_recorded/total=%s load_average=%s\n",
    n, m, t, t * 64, a, load
}'
