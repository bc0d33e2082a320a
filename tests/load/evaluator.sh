#!/usr/bin/env bash
# Load run of the workflow-evaluator alone, on the local stack's real Kafka and PostgreSQL:
#   tests/load/evaluator.sh [--events N] [--replicas R] [--provisioner SECS] [--variants "V …"]
#                           [--count-statements SECS]
#     (defaults: 200000 events, 1 replica, variants "default"; --provisioner: afterwards, run one
#      provisioner (shipped configuration) on the first variant's outcomes for SECS seconds, or
#      until it has handled them all, and report its rate and peak RSS in that backlog;
#      --count-statements: then restart it with every statement of the run's database logged
#      (log_statement = all, set on that database only, as the postgres superuser: needs root)
#      and report the statements per outcome it sent during SECS seconds. CRM_SYNC_BIN: a
#      directory holding built binaries to run instead of building them (`raw_copy` among them
#      for the `raw` variant, `core_copy` for `core`); CRM_SYNC_LOAD_PORT: the
#      first HTTP port of the replicas, default 18200, for two runs at once)
#
# Pre-loads N Opportunity updates (25 fields, about a third of them won) into a fresh events
# topic, applies a tenant with 10 active workflows x 5 conditions, then runs each variant in
# turn, back to back on the same events (each with its own consumer group, output topics and
# state) and measures how fast it turns the backlog into committed outputs: events/s from the
# first committed batch to the last, and events per CPU second. Variants:
#   default   R release-built evaluator replicas with the shipped configuration (log level
#             `info`, record trail on)
#   warn      the same at log level `warn`
#   notrail   the same with the record trail off (`trail.enabled=false`)
#   raw       the baseline: crates/kafka/examples/raw_copy, a raw transactional copy of the
#             events writing as many records per event as the last evaluator variant did, with
#             the same client configuration, and no decoding, in transactions of up to 500
#             messages (raw@MAX_MESSAGES=250: of up to 250, the evaluator's own size)
#   core      the same copy through crm-sync's own transactional loop (crates/kafka/examples/
#             core_copy: two transactions in flight, a span per message, the metrics recorder),
#             in transactions of up to 250 messages as the evaluator's (core@MAX_MESSAGES=N):
#             raw → core is what the loop costs, core → default what the evaluator's own work does
#   V@K=V,…   variant V with these environment variables added (a setting such as
#             CRM_SYNC__EVALUATOR__STATE_MEMORY_MIB=8, a librdkafka property through
#             CRM_SYNC__KAFKA__LIBRDKAFKA_OPTIONS__CONSUMER__…, or MIMALLOC_…), so that
#             configurations are compared on the same events back to back
# CRM_SYNC_LOAD_LOGS: a folder to keep the evaluators' logs in (they are removed otherwise).
# Each variant's line ends with its ratio to the first variant's events/s and events per CPU
# second. Everything it creates (database, topics) is removed at the end. Figures: BENCHMARKS.md.
# After each evaluator variant it reports how many record trail entries were written and dropped,
# the CPU the evaluator and its database's PostgreSQL backends used from the first committed batch
# until the trail was written (PostgreSQL shares the cores, and the trail is written behind the
# consume loop), the events per second of that total, and the evaluator's peak RSS.
set -euo pipefail
. "$(dirname "$0")/../../deploy/local/lib.sh"
KAFKA_VERSION=${CRM_SYNC_KAFKA_VERSION:-4.1.1}
JARS=$CRM_SYNC_HOME/kafka-$KAFKA_VERSION/libs
BROKERS=${CRM_SYNC_TEST_BROKERS:-127.0.0.1:9092}
ADMIN_DB=${CRM_SYNC_TEST_DATABASE_URL:-postgres://crm_sync:crm_sync@127.0.0.1:5432/crm_sync}
PARTITIONS=${CRM_SYNC_PARTITIONS:-6}
PORT_BASE=${CRM_SYNC_LOAD_PORT:-18200}

EVENTS=200000
REPLICAS=1
PROVISIONER_SECS=0
COUNT_SECS=0
VARIANTS=default
while (($#)); do
  case $1 in
    --events) EVENTS=$2; shift 2 ;;
    --replicas) REPLICAS=$2; shift 2 ;;
    --provisioner) PROVISIONER_SECS=$2; shift 2 ;;
    --variants) VARIANTS=$2; shift 2 ;;
    --count-statements) COUNT_SECS=$2; shift 2 ;;
    *) echo "usage: $0 [--events N] [--replicas R] [--provisioner SECS] [--variants \"default warn notrail raw core\"] [--count-statements SECS]" >&2; exit 2 ;;
  esac
done
for v in $VARIANTS; do
  case ${v%%@*} in default | warn | notrail | raw | core) ;; *) echo "unknown variant $v" >&2; exit 2 ;; esac
  if [[ $v =~ ^(raw|core)@ && ! $v =~ ^(raw|core)@MAX_MESSAGES=[1-9][0-9]*$ ]]; then
    echo "variant $v: ${v%%@*} takes only MAX_MESSAGES=<count>" >&2
    exit 2
  fi
done
# A baseline from another build would make every ratio a comparison with the wrong thing.
for copy in raw core; do
  if [[ -n ${CRM_SYNC_BIN:-} && " $VARIANTS " == *" $copy"* && ! -x $CRM_SYNC_BIN/${copy}_copy ]]; then
    echo "variant $copy: $CRM_SYNC_BIN/${copy}_copy is missing (copy target/release/examples/${copy}_copy of the same build there)" >&2
    exit 2
  fi
done

say() { printf '[load] %s\n' "$*" >&2; }
now() { date +%s.%N; }

"$ROOT/deploy/local/stack.sh" up >/dev/null
warn_if_cluttered
warn_if_cold
cd "$ROOT"
BIN=${CRM_SYNC_BIN:-$CARGO_TARGET_DIR/release}
if [[ -z ${CRM_SYNC_BIN:-} ]]; then
  say "building release binaries"
  cargo build --quiet --release -p crm-sync-workflow-evaluator -p crm-sync-cli -p crm-sync-provisioner
  for copy in raw core; do
    if [[ " $VARIANTS " == *" $copy"* ]]; then
      cargo build --quiet --release -p crm-sync-kafka --example "${copy}_copy"
    fi
  done
fi

RUN=load_$(date +%s)_$$
DB=crm_sync_$RUN
DB_URL=${ADMIN_DB%/*}/$DB
EVENTS_TOPIC=$RUN.crm.events.v1
MATCHES_TOPIC=""
ACTIVITIES_TOPIC=$RUN.salesscreen.activities.v1
USERS_TOPIC=$RUN.salesscreen.users.v1
WORK=$(mktemp -d)
PIDS=()
CREATED=()

topics() {
  local out rc=0
  out=$(java -Xms128m -Xmx256m -Dlog4j2.configurationFile="$CRM_SYNC_HOME/log4j2.properties" -cp "$JARS/*" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" "$@" 2>&1) || rc=$?
  ((rc == 0)) || printf '%s\n' "$out" >&2
  return "$rc"
}

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$ADMIN_DB" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  for t in "${CREATED[@]}"; do
    topics --delete --topic "$t" >/dev/null 2>&1 || true
  done
  if [[ -n ${CRM_SYNC_LOAD_LOGS:-} ]]; then
    mkdir -p "$CRM_SYNC_LOAD_LOGS" && cp "$WORK"/*.log "$CRM_SYNC_LOAD_LOGS"/ 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

say "database $DB, topics $RUN.*"
psql "$ADMIN_DB" -qc "CREATE DATABASE $DB" >/dev/null
"$BIN/crm-sync" --database-url "$DB_URL" migrate >/dev/null
# A topic of this run, created (compacted with a third argument) and removed at the end.
make_topic() {
  CREATED+=("$1")
  topics --create --if-not-exists --topic "$1" --partitions "$PARTITIONS" --replication-factor 1 \
    ${2:+--config cleanup.policy=compact}
}
for t in "$EVENTS_TOPIC" "$EVENTS_TOPIC.dlq" "$ACTIVITIES_TOPIC" "$USERS_TOPIC"; do
  make_topic "$t"
done

INTEGRATION=$(cat /proc/sys/kernel/random/uuid)
{
  cat <<EOF
companies:
  - slug: $RUN
    name: Load run
    integrations:
      - name: salesforce
        id: $INTEGRATION
        crm: salesforce
        crm_account_id: 00DLOAD0000000AAA
        workflows:
EOF
  # 10 workflows x 5 conditions, the same leaves as the criterion benchmark.
  leaves=(
    '{field: StageName, op: eq, value: Closed Won}'
    '{field: Amount, op: gte, value: 1000}'
    '{field: CloseDate, op: gte, value: "2026-01-01"}'
    '{field: Type, op: in, value: [New Business, Existing Business - Upgrade, Renewal]}'
    '{field: IsWon, op: eq, value: true}'
    '{field: StageName, op: changed_to, value: Closed Won}'
    '{field: LeadSource, op: not_in, value: [Partner Referral, Purchased List]}'
    '{field: Name, op: contains, value: licenses}'
    '{field: OwnerId, op: starts_with, value: "005"}'
    '{field: Probability, op: gte, value: 80}'
    '{field: ForecastCategoryName, op: ne, value: Omitted}'
    '{field: Description, op: is_not_empty}'
    '{field: LastModifiedDate, op: gt, value: "2026-11-01T00:00:00Z"}'
    '{field: Amount, op: changed, type: number}'
    '{field: CurrencyIsoCode, op: eq, value: eur}'
  )
  for n in $(seq 0 9); do
    cat <<EOF
          - name: Workflow $n
            active: true
            object_type: Opportunity
            triggers: [created, updated]
            user_field: OwnerId
            value_field: Amount
            date_field: CloseDate
            activity_type: activity_$n
            conditions:
              all:
EOF
    for i in 0 1 2 3 4; do
      echo "                - ${leaves[$(((n * 3 + i) % 15))]}"
    done
  done
} >"$WORK/tenant.yaml"
"$BIN/crm-sync" --database-url "$DB_URL" apply -f "$WORK/tenant.yaml" >/dev/null

say "generating and producing $EVENTS events"
awk -v n="$EVENTS" -v integration="$INTEGRATION" 'BEGIN {
  split("Closed Won,Prospecting,Negotiation/Review", stages, ",")
  for (i = 0; i < n; i++) {
    stage = stages[i % 3 + 1]
    printf "{\"eventId\":\"load-%d\",\"integrationId\":\"%s\",\"crm\":\"CRM_KIND_SALESFORCE\",", i, integration
    printf "\"objectType\":\"Opportunity\",\"recordId\":\"006LOAD%011d\",\"changeType\":\"CHANGE_TYPE_UPDATED\",", i % 50000
    printf "\"occurredAt\":\"2026-11-20T15:04:05Z\",\"owner\":{\"crmUserId\":\"005LOAD%05d\"},\"fields\":{", i % 500
    printf "\"Id\":{\"text\":\"006LOAD%011d\"},\"AccountId\":{\"text\":\"0015g00000AbCdeAAF\"},", i % 50000
    printf "\"Name\":{\"text\":\"Acme Corp - %d licenses\"},\"StageName\":{\"text\":\"%s\"},", i % 900, stage
    printf "\"Amount\":{\"text\":\"%d.50\"},\"Probability\":{\"text\":\"%d\"},", 500 + (i * 37) % 200000, (i * 7) % 101
    printf "\"CloseDate\":{\"text\":\"2026-%02d-%02d\"},\"Type\":{\"text\":\"New Business\"},", i % 12 + 1, i % 28 + 1
    printf "\"LeadSource\":{\"text\":\"Web\"},\"IsWon\":{\"text\":\"%s\"},\"IsClosed\":{\"text\":\"true\"},", (i % 3 == 0) ? "true" : "false"
    printf "\"ForecastCategoryName\":{\"text\":\"Closed\"},\"CurrencyIsoCode\":{\"text\":\"EUR\"},"
    printf "\"OwnerId\":{\"text\":\"005LOAD%05d\"},\"CreatedById\":{\"text\":\"0055g00000CrEaTAAA\"},", i % 500
    printf "\"CreatedDate\":{\"text\":\"2026-10-01T09:00:00.000Z\"},\"LastModifiedDate\":{\"text\":\"2026-11-20T15:04:05.000Z\"},"
    printf "\"Description\":{\"text\":\"Three-year deal\"},\"NextStep\":{\"text\":\"Kick-off call\"},"
    printf "\"Pricebook2Id\":{\"text\":\"01s5g00000PrIcEAAA\"},\"CampaignId\":{\"text\":\"7015g00000CaMpAAA\"},"
    printf "\"HasOpportunityLineItem\":{\"text\":\"true\"},\"FiscalQuarter\":{\"text\":\"4\"},\"FiscalYear\":{\"text\":\"2026\"},"
    printf "\"TotalOpportunityQuantity\":{\"text\":\"200\"}},"
    printf "\"previousFields\":{\"StageName\":{\"text\":\"Negotiation/Review\"},\"Amount\":{\"text\":\"400\"}}}\n"
  }
}' >"$WORK/events.jsonl"
CRM_SYNC__TELEMETRY__LOG_LEVEL=warn "$BIN/crm-sync" --brokers "$BROKERS" produce --topic "$EVENTS_TOPIC" \
  --file "$WORK/events.jsonl" >/dev/null

# Sum of a counter over every replica's /metrics.
# Whether one of these processes has exited (a setting refused at start, a crash): a run that
# waited for its figures would otherwise wait out its deadline.
any_exited() {
  local pid
  for pid in "$@"; do
    kill -0 "$pid" 2>/dev/null || return 0
  done
  return 1
}

sum_metric() {
  local total=0 v
  for port in "${PORTS[@]}"; do
    v=$(curl -sf "http://127.0.0.1:$port/metrics" 2>/dev/null |
      awk -v name="$1" -v label="$2" '$1 ~ "^"name && index($0, label) {s += $NF} END {print s + 0}') || v=0
    total=$(awk -v a="$total" -v b="${v:-0}" 'BEGIN {print a + b}')
  done
  echo "$total"
}

# CPU seconds (user + system) the replicas used so far: the machine may be shared, so events per
# CPU second is the fairer figure.
cpu_seconds() {
  local total=0 ticks
  ticks=$(getconf CLK_TCK)
  for pid in "${PIDS[@]}"; do
    total=$(awk -v t="$total" -v hz="$ticks" '{print t + ($14 + $15) / hz}' "/proc/$pid/stat")
  done
  echo "$total"
}

# CPU seconds the PostgreSQL backends serving this run's database used so far (PostgreSQL shares
# the cores: the trail's cost is partly its). Backends of other databases (other engineers'
# tests) are not counted; the server's shared writers (WAL, checkpoints) are not either.
pg_cpu_seconds() {
  local total=0 ticks pid
  ticks=$(getconf CLK_TCK)
  for pid in $(psql "$DB_URL" -qAtc "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()" 2>/dev/null); do
    [[ -r /proc/$pid/stat ]] || continue
    total=$(awk -v t="$total" -v hz="$ticks" '{print t + ($14 + $15) / hz}' "/proc/$pid/stat" 2>/dev/null || echo "$total")
  done
  echo "$total"
}

stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}

# The first variant's figures, for the ratios; the last evaluator variant's records per event.
BASE_RATE="" BASE_CPU_RATE="" RECORDS_PER_EVENT=10
FIRST_MATCHES=""
# The first evaluator variant's outcomes: what the provisioner phase has to apply.
FIRST_OUTCOMES=""
# (Called in a command substitution: the first variant's figures are kept by `base`.)
base() {
  if [[ -z $BASE_RATE ]]; then
    BASE_RATE=$1 BASE_CPU_RATE=$2
  fi
}
ratio() {
  awk -v a="$1" -v b="$BASE_RATE" -v c="$2" -v d="$BASE_CPU_RATE" \
    'BEGIN {printf "ratio=%.2f cpu_ratio=%.2f", a / b, c / d}'
}

# Runs the evaluator replicas on the events with the variant's configuration until every event
# is committed; prints their figures.
run_evaluator() {
  local variant=$1 n=$2 extra=()
  local matches=$RUN.$n.crm.matches.v1 records=$RUN.$n.crm.records.v1 hydrations=$RUN.$n.crm.hydrations.v1
  case ${variant%%@*} in
    warn) extra=(CRM_SYNC__TELEMETRY__LOG_LEVEL=warn) ;;
    notrail) extra=(CRM_SYNC__TRAIL__ENABLED=false) ;;
  esac
  # `variant@KEY=VALUE,KEY=VALUE`: the variant with these environment variables added.
  if [[ $variant == *@* ]]; then
    local assignments
    IFS=, read -ra assignments <<<"${variant#*@}"
    extra+=("${assignments[@]}")
  fi
  for t in "$matches" "$matches.dlq" "$hydrations"; do make_topic "$t"; done
  make_topic "$records" compact
  FIRST_MATCHES=${FIRST_MATCHES:-$matches}
  psql "$DB_URL" -qc "TRUNCATE trail_events, trail_pages, trail_page_records" >/dev/null
  say "variant $variant: starting $REPLICAS evaluator replica(s)"
  PORTS=()
  for r in $(seq 0 $((REPLICAS - 1))); do
    port=$((PORT_BASE + r))
    PORTS+=("$port")
    # Another run's replica on the port would be measured instead of this one.
    if curl -sf -o /dev/null "http://127.0.0.1:$port/metrics"; then
      say "port $port is in use (another load run?): set CRM_SYNC_LOAD_PORT"
      exit 1
    fi
    env CRM_SYNC__KAFKA__BROKERS="$BROKERS" CRM_SYNC__DATABASE__URL="$DB_URL" \
      CRM_SYNC__TOPICS__EVENTS="$EVENTS_TOPIC" CRM_SYNC__TOPICS__MATCHES="$matches" \
      CRM_SYNC__TOPICS__RECORDS="$records" CRM_SYNC__TOPICS__HYDRATIONS="$hydrations" \
      CRM_SYNC__EVALUATOR__STATE_DIR="$WORK/state-$n-$r" \
      CRM_SYNC__KAFKA__CONSUMER_GROUP="$RUN-$n-evaluator" \
      CRM_SYNC__KAFKA__TRANSACTIONAL_ID="$RUN-$n-evaluator-$r" \
      CRM_SYNC__HTTP__HOST=127.0.0.1 CRM_SYNC__HTTP__PORT="$port" "${extra[@]}" \
      "$BIN/workflow-evaluator" >"$WORK/evaluator-$n-$r.log" 2>&1 &
    PIDS+=("$!")
  done
  local deadline=$((SECONDS + 600)) first_at="" first_count=0 first_cpu=0 first_pg=0 done_count end_at end_cpu
  while :; do
    done_count=$(sum_metric crm_sync_messages_consumed_total 'outcome="ok"')
    if [[ -z $first_at ]] && awk -v c="$done_count" 'BEGIN {exit !(c > 0)}'; then
      first_at=$(now) first_count=$done_count first_cpu=$(cpu_seconds) first_pg=$(pg_cpu_seconds)
    fi
    if awk -v c="$done_count" -v n="$EVENTS" 'BEGIN {exit !(c >= n)}'; then
      end_at=$(now) end_cpu=$(cpu_seconds)
      break
    fi
    ((SECONDS < deadline)) || { say "did not finish within 600 s ($done_count of $EVENTS)"; tail -5 "$WORK"/evaluator-"$n"-*.log >&2; exit 1; }
    if any_exited "${PIDS[@]}"; then
      say "an evaluator replica exited after $done_count of $EVENTS events; its log:"
      tail -5 "$WORK"/evaluator-"$n"-*.log >&2
      exit 1
    fi
    sleep 0.1
  done
  local matched retracted transactions produced
  matched=$(sum_metric crm_sync_evaluator_outcomes_total 'kind="matched"')
  retracted=$(sum_metric crm_sync_evaluator_outcomes_total 'kind="retracted"')
  FIRST_OUTCOMES=${FIRST_OUTCOMES:-$((matched + retracted))}
  transactions=$(sum_metric crm_sync_transactions_total 'result="committed"')
  produced=$(sum_metric crm_sync_messages_produced_total crm_sync_messages_produced_total)
  RECORDS_PER_EVENT=$(awk -v p="$produced" -v n="$EVENTS" 'BEGIN {printf "%.3f", p / n}')
  local line rate cpu_rate
  line=$(awk -v n="$EVENTS" -v f="$first_count" -v a="$first_at" -v b="$end_at" -v r="$REPLICAS" \
    -v m="$matched" -v x="$retracted" -v t="$transactions" -v c0="$first_cpu" -v c1="$end_cpu" \
    -v k="$RECORDS_PER_EVENT" -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
    secs = b - a; cpu = c1 - c0
    printf "replicas=%d events=%d seconds=%.2f events_per_second=%.0f cpu_seconds=%.1f events_per_cpu_second=%.0f outcomes_matched=%d outcomes_retracted=%d records_per_event=%s transactions=%d events_per_transaction=%.0f load_average=%s",
      r, n, secs, (n - f) / secs, cpu, (n - f) / (cpu > 0 ? cpu : 1), m, x, k, t, n / (t > 0 ? t : 1), load
  }')
  rate=$(sed 's/.*events_per_second=\([0-9]*\).*/\1/' <<<"$line")
  cpu_rate=$(sed 's/.*events_per_cpu_second=\([0-9]*\).*/\1/' <<<"$line")
  base "$rate" "$cpu_rate"
  echo "variant=$variant $line $(ratio "$rate" "$cpu_rate")"
  # Where the transactions' time went, seconds summed over the replicas' runs: the loop's
  # phases (fill, room, hand_over, settle) add up to its time; deliver and commit run beside it.
  local phases="" phase
  for phase in fill room hand_over deliver commit settle; do
    phases+=" $phase=$(sum_metric crm_sync_transaction_phase_seconds_sum "phase=\"$phase\"")"
  done
  echo "variant=$variant phase_seconds$phases"

  # The record trail is written behind the consume loop: wait (briefly) until the writer took
  # every event, and report how many it wrote and how many it dropped because it fell behind.
  local written=0 dropped=0 rows trail_deadline=$((SECONDS + 60))
  if [[ ${variant%%@*} != notrail ]]; then
    while :; do
      written=$(sum_metric crm_sync_trail_written_total crm_sync_trail_written_total)
      dropped=$(sum_metric crm_sync_trail_dropped_total crm_sync_trail_dropped_total)
      if awk -v w="$written" -v d="$dropped" -v n="$EVENTS" 'BEGIN {exit !(w + d >= n)}' || ((SECONDS >= trail_deadline)); then
        break
      fi
      sleep 0.2
    done
  fi
  rows=$(psql "$DB_URL" -qAtc "SELECT (SELECT count(*) FROM trail_events)
      + (SELECT coalesce(sum(entries), 0) FROM trail_pages)" 2>/dev/null || echo 0)
  # Everything the run cost, the trail's writing behind the loop included: the evaluator's and
  # its database backends' CPU from the first committed batch until the trail was written.
  local all_cpu pg_cpu peak
  all_cpu=$(cpu_seconds) pg_cpu=$(pg_cpu_seconds)
  # The largest resident set of any replica so far, in MiB.
  peak=$(for pid in "${PIDS[@]}"; do awk '/^VmHWM:/ {print $2}' "/proc/$pid/status"; done |
    sort -n | tail -1 | awk '{printf "%.0f", $1 / 1024}')
  awk -v v="$variant" -v w="$written" -v d="$dropped" -v r="$rows" -v n="$EVENTS" -v f="$first_count" \
    -v e="$(awk -v a="$all_cpu" -v b="$first_cpu" 'BEGIN {print a - b}')" \
    -v p="$(awk -v a="$pg_cpu" -v b="$first_pg" 'BEGIN {print a - b}')" -v m="${peak:-0}" 'BEGIN {
    printf "variant=%s trail_written=%d trail_dropped=%d trail_rows=%d evaluator_cpu_seconds_until_trail_written=%.1f postgres_cpu_seconds=%.1f events_per_total_cpu_second=%.0f peak_rss_mib=%d\n",
      v, w, d, r, e, p, (n - f) / (e + p > 0 ? e + p : 1), m
  }'
  stop_all
}

# The baselines: a transactional copy of the events (raw, or through crm-sync's loop: core), as
# many records per event as the last evaluator variant wrote.
run_copy() {
  local n=$1 kind=${2%%@*} max=500 line rate cpu_rate
  local state=$RUN.$1.$kind.state out=$RUN.$1.$kind.out
  [[ $kind == core ]] && max=250
  make_topic "$state" compact
  make_topic "$out"
  [[ $2 == *@* ]] && max=${2#*@MAX_MESSAGES=}
  say "variant $kind: copying with $RECORDS_PER_EVENT records per event, up to $max per transaction"
  # CRM_SYNC_BIN's copy when it holds one: a baseline built from other sources would not be
  # the one the variants are compared with.
  local copy=$BIN/${kind}_copy
  [[ -z ${CRM_SYNC_BIN:-} ]] && copy=$CARGO_TARGET_DIR/release/examples/${kind}_copy
  # Its figures' line: core_copy logs around it.
  line=$("$copy" --brokers "$BROKERS" --from "$EVENTS_TOPIC" \
    --state-topic "$state" --out-topic "$out" --events "$EVENTS" --group "$RUN-$n-$kind" \
    --records-per-event "$RECORDS_PER_EVENT" --outcome-bytes 250 --max-messages "$max" | grep "^${kind}_copy ")
  rate=$(sed 's/.*events_per_second=\([0-9]*\).*/\1/' <<<"$line")
  cpu_rate=$(sed 's/.*events_per_cpu_second=\([0-9]*\).*/\1/' <<<"$line")
  base "$rate" "$cpu_rate"
  echo "variant=${2} $line load_average=$(cut -d' ' -f1 /proc/loadavg) $(ratio "$rate" "$cpu_rate")"
}

n=0
for variant in $VARIANTS; do
  n=$((n + 1))
  if [[ ${variant%%@*} == raw || ${variant%%@*} == core ]]; then
    run_copy "$n" "$variant"
  else
    run_evaluator "$variant" "$n"
  fi
done
MATCHES_TOPIC=$FIRST_MATCHES

# As deployed (docker-compose and the Kubernetes manifests configure secrets.encryption_key),
# the provisioner reads integrations' API credentials and prepares directory lookups for the
# accounts it creates; without a key it skips that work. The local development key, unless one
# is given.
DEV_ENCRYPTION_KEY=ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=
start_provisioner() {
  CRM_SYNC__SECRETS__ENCRYPTION_KEY=${CRM_SYNC__SECRETS__ENCRYPTION_KEY:-$DEV_ENCRYPTION_KEY} \
    CRM_SYNC__KAFKA__BROKERS=$BROKERS CRM_SYNC__DATABASE__URL=$DB_URL \
    CRM_SYNC__TOPICS__EVENTS=$EVENTS_TOPIC CRM_SYNC__TOPICS__MATCHES=$MATCHES_TOPIC \
    CRM_SYNC__TOPICS__ACTIVITIES=$ACTIVITIES_TOPIC CRM_SYNC__TOPICS__USERS=$USERS_TOPIC \
    CRM_SYNC__KAFKA__CONSUMER_GROUP=$RUN-provisioner \
    CRM_SYNC__HTTP__HOST=127.0.0.1 CRM_SYNC__HTTP__PORT=$port \
    CRM_SYNC__TELEMETRY__LOG_FORMAT=json \
    "$BIN/provisioner" >>"$WORK/provisioner.log" 2>&1 &
  PIDS+=("$!")
}

if ((PROVISIONER_SECS > 0)); then
  say "running one provisioner on the outcomes for $PROVISIONER_SECS s"
  deadline=$((SECONDS + 600))
  port=$((PORT_BASE + 99))
  start_provisioner
  PORTS=("$port")
  until [[ $(sum_metric crm_sync_provisioner_outcomes_total 'result="applied"') != 0 ]]; do
    ((SECONDS < deadline)) || { say "the provisioner applied nothing"; tail -5 "$WORK/provisioner.log" >&2; exit 1; }
    if any_exited "${PIDS[-1]}"; then
      say "the provisioner exited; its log:"
      tail -5 "$WORK/provisioner.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  # Timed from its first applied outcome until SECS later, or until every outcome was handled
  # (applied or found a duplicate) if that comes first: a rate over a window that ends in
  # idling would only be a floor.
  a=$(sum_metric crm_sync_provisioner_outcomes_total 'result="applied"') t0=$(now)
  until_s=$(awk -v t="$t0" -v s="$PROVISIONER_SECS" 'BEGIN {printf "%.3f", t + s}')
  drained=no
  while awk -v t="$(now)" -v u="$until_s" 'BEGIN {exit !(t < u)}'; do
    if (($(sum_metric crm_sync_provisioner_outcomes_total result=) >= FIRST_OUTCOMES)); then
      drained=yes
      break
    fi
    sleep 0.05
  done
  b=$(sum_metric crm_sync_provisioner_outcomes_total 'result="applied"') t1=$(now)
  # The provisioner worked through a backlog all along: its peak RSS is the backlog's.
  rss=$(awk '/^VmHWM:/ {print $2}' "/proc/${PIDS[-1]}/status")
  awk -v a="$a" -v b="$b" -v t0="$t0" -v t1="$t1" -v rss="$rss" -v drained="$drained" 'BEGIN {
    printf "provisioner replicas=1 outcomes_applied=%d seconds=%.1f outcomes_per_second=%.0f drained=%s peak_rss_mib=%d\n", b - a, t1 - t0, (b - a) / (t1 - t0), drained, rss / 1024
  }'
fi

if ((PROVISIONER_SECS > 0 && COUNT_SECS > 0)) && [[ $drained == yes ]]; then
  say "no statements counted: the provisioner handled every outcome within $PROVISIONER_SECS s (give it fewer)"
elif ((PROVISIONER_SECS > 0 && COUNT_SECS > 0)); then
  # Settings of a database apply to sessions opened after the change: a new provisioner process.
  kill "${PIDS[-1]}" && wait "${PIDS[-1]}" 2>/dev/null || true
  unset 'PIDS[-1]'
  su postgres -c "psql -qd $DB -c \"ALTER DATABASE $DB SET log_statement = 'all'\"" >/dev/null
  PG_LOG=${CRM_SYNC_PG_LOG:-/var/log/postgresql/postgresql-15-main.log}
  start_provisioner
  a=$(sum_metric crm_sync_provisioner_outcomes_total 'result="applied"')
  deadline=$((SECONDS + 120))
  until [[ $a != 0 ]]; do
    ((SECONDS < deadline)) || { say "the restarted provisioner applied nothing"; exit 1; }
    sleep 0.1
    a=$(sum_metric crm_sync_provisioner_outcomes_total 'result="applied"')
  done
  from=$(($(stat -c %s "$PG_LOG") + 1))
  sleep "$COUNT_SECS"
  b=$(sum_metric crm_sync_provisioner_outcomes_total 'result="applied"')
  to=$(stat -c %s "$PG_LOG")
  statements=$(tail -c +"$from" "$PG_LOG" | head -c $((to - from + 1)) |
    grep -cE "@$DB LOG:  (statement|execute)" || true)
  awk -v a="$a" -v b="$b" -v s="$statements" 'BEGIN {
    printf "provisioner statements=%d outcomes_applied=%d statements_per_outcome=%.2f statements_per_64_outcomes=%.1f\n", s, b - a, s / (b - a), 64 * s / (b - a)
  }'
fi
