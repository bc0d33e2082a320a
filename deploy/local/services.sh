#!/usr/bin/env bash
# Runs the crm-sync services as background processes against the local stack.
#
#   deploy/local/services.sh start    build, migrate, (re)start ingest, admin-api, workflow-evaluator, provisioner
#   deploy/local/services.sh stop     stop them (SIGTERM, then wait)
#   deploy/local/services.sh status   which run, on which port, where their logs are
#   deploy/local/services.sh key      print the path of the local secrets.encryption_key (made if missing)
set -euo pipefail

SAY_AS=services
. "$(dirname "$0")/lib.sh"
BIN=$CARGO_TARGET_DIR/debug
RUN=$CRM_SYNC_HOME/run
LOGS=$CRM_SYNC_HOME/logs
# name:port:ops port (/healthz, /readyz, /metrics; the consumers serve only those, on their port)
SERVICES=(ingest:8080:9080 admin-api:8081:9081 workflow-evaluator:8082:8082 provisioner:8083:8083)

running() { [[ -f $RUN/$1.pid ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# The local secrets.encryption_key (integration credentials are sealed with it): generated once
# under $CRM_SYNC_HOME (mode 0600) and kept, so credentials set in the page or by `crm-sync apply`
# stay readable across restarts. A key configured in the environment wins.
KEY_FILE=$CRM_SYNC_HOME/secrets/encryption_key
local_encryption_key() {
  if [[ -n ${CRM_SYNC__SECRETS__ENCRYPTION_KEY:-} || -n ${CRM_SYNC__SECRETS__ENCRYPTION_KEY_FILE:-} ]]; then
    return 0
  fi
  if [[ ! -s $KEY_FILE ]]; then
    (umask 077 && mkdir -p "$(dirname "$KEY_FILE")" && head -c 32 /dev/urandom | base64 >"$KEY_FILE.tmp" \
      && mv "$KEY_FILE.tmp" "$KEY_FILE") || fail "cannot write $KEY_FILE"
    say "generated a local secrets.encryption_key in $KEY_FILE" >&2
  fi
  chmod 600 "$KEY_FILE"
  export CRM_SYNC__SECRETS__ENCRYPTION_KEY_FILE=$KEY_FILE
}

stop_one() {
  local name=$1
  running "$name" || { rm -f "$RUN/$name.pid"; return 0; }
  local pid; pid=$(cat "$RUN/$name.pid")
  say "stopping $name (pid $pid)"
  kill -TERM "$pid"
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || { say "$name ignored SIGTERM for 30 s; killing"; kill -9 "$pid"; }
    sleep 0.2
  done
  rm -f "$RUN/$name.pid"
}

start() {
  mkdir -p "$RUN" "$LOGS"
  say "building (target dir $CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --workspace --bins --quiet) || fail "cargo build failed"
  "$BIN/crm-sync" migrate || fail "database migrations failed"
  local_encryption_key
  for entry in "${SERVICES[@]}"; do
    local name port ops
    IFS=: read -r name port ops <<<"$entry"
    stop_one "$name"
    # admin-api shows webhook URLs under the address CRMs reach ingest at (locally: this one).
    CRM_SYNC__INGEST__PUBLIC_URL=${CRM_SYNC__INGEST__PUBLIC_URL:-http://127.0.0.1:8080} \
      CRM_SYNC__HTTP__PORT=$port CRM_SYNC__HTTP__OPS_PORT=$ops \
      CRM_SYNC__TELEMETRY__LOG_FORMAT=${CRM_SYNC__TELEMETRY__LOG_FORMAT:-json} \
      nohup "$BIN/$name" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
    say "started $name on :$port (log $LOGS/$name.log)"
  done
  for entry in "${SERVICES[@]}"; do
    local name port ops
    IFS=: read -r name port ops <<<"$entry"
    local deadline=$((SECONDS + 60))
    until curl -fsS "http://127.0.0.1:$ops/readyz" >/dev/null 2>&1; do
      running "$name" || { tail -n 20 "$LOGS/$name.log" >&2; fail "$name exited; see $LOGS/$name.log"; }
      ((SECONDS < deadline)) || { curl -sS "http://127.0.0.1:$ops/readyz" >&2 || true; fail "$name not ready within 60 s; see $LOGS/$name.log"; }
      sleep 0.3
    done
    say "$name ready"
  done
}

status() {
  for entry in "${SERVICES[@]}"; do
    local name port ops
    IFS=: read -r name port ops <<<"$entry"
    if running "$name"; then
      say "$name: running, pid $(cat "$RUN/$name.pid"), http://127.0.0.1:$port, ops :$ops (log $LOGS/$name.log)"
    else
      say "$name: stopped (log $LOGS/$name.log)"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) for entry in "${SERVICES[@]}"; do stop_one "${entry%%:*}"; done ;;
  status) status ;;
  key) local_encryption_key; echo "${CRM_SYNC__SECRETS__ENCRYPTION_KEY_FILE:-$KEY_FILE}" ;;
  *) echo "usage: $0 start|stop|status|key" >&2; exit 2 ;;
esac
