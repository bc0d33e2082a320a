# Sourced by the project's scripts (set SAY_AS first to name the script in its messages):
# where the clone is, and where everything the scripts download, build and write goes —
# outside the clone, under $CRM_SYNC_HOME, so that a second run on the same machine reuses it.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CRM_SYNC_HOME=${CRM_SYNC_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/crm-sync}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CRM_SYNC_HOME/target}

say() { printf '[%s] %s\n' "${SAY_AS:-crm-sync}" "$*"; }
fail() { printf '[%s] FAILED: %s\n' "${SAY_AS:-crm-sync}" "$*" >&2; exit 1; }

# librdkafka's OAUTHBEARER/OIDC support needs libcurl at build time: the `curl-static` feature
# builds libcurl itself, but librdkafka's configure still checks that `-lcurl` links, and
# silently builds without OIDC where it does not (the OAUTHBEARER listener's suite then fails
# with "sasl.oauthbearer.method not supported in this build"). Installs the OS's libcurl
# development package when it is missing, and drops the librdkafka built without it.
ensure_libcurl_dev() {
  ldconfig -p 2>/dev/null | grep -q 'libcurl\.so ' && return 0
  say "installing libcurl's development files (librdkafka's OIDC support links them)"
  command -v apt-get >/dev/null || fail "libcurl development files are missing (-lcurl) and apt-get is not available to install them"
  local sudo=""; ((EUID == 0)) || sudo=sudo
  $sudo apt-get update -qq >/dev/null || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libcurl4-openssl-dev >/dev/null \
    || fail "apt-get install libcurl4-openssl-dev failed"
  (cd "$ROOT" && cargo clean -p rdkafka-sys >/dev/null 2>&1) || true
}

# A broker started a moment ago is not ready for measuring: its JVM compiles its hot paths in
# the first minutes, and a fresh storage creates its internal topics on first use. Measured on a
# stack started clean, 60-second pipeline runs at 1,000 events/s: end-to-end p99 2,699 and 717 ms
# in the first run after the start (the broker at 0.92 of a core), 154 and 172 ms in the next
# (0.66-0.68 for the same traffic, started 75 s after the broker); the first ~25 s of the
# first run carry the excess.
# Warns when the broker is younger than two minutes; never stops the run.
warn_if_cold() {
  local pid age
  pid=$(cat "$CRM_SYNC_HOME/run/kafka.pid" 2>/dev/null) || return 0
  age=$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ') || return 0
  if [[ -n $age ]] && ((age < 120)); then
    say "warning: the Kafka broker started ${age} s ago; its first minutes run slower (a JVM warming up, internal topics created), so this run's first figures will be too. For figures to compare, run a short load first (e.g. --seconds 20) and measure the next run" >&2
  fi
}

# Load figures taken on a stack the test suites have just used come out slower: the broker holds
# hundreds of test topics and PostgreSQL hundreds of test databases (the suites drop them only
# after two hours). Measured once: end-to-end p99 333 ms on such a stack, 208 ms on a clean one.
# Warns, saying how to start clean; never stops the run.
warn_if_cluttered() {
  local data=$CRM_SYNC_HOME/kafka-data topics=0 databases
  if [[ -d $data ]]; then
    topics=$(find "$data" -mindepth 1 -maxdepth 1 -type d -name '*-[0-9]*' \
      | sed -E 's#^.*/##; s/-[0-9]+$//' | sort -u | wc -l)
  fi
  databases=$(PGPASSWORD=crm_sync psql -qAt -h 127.0.0.1 -U crm_sync -d crm_sync \
    -c "SELECT count(*) FROM pg_database WHERE datname LIKE 'crm_sync_test_%'" 2>/dev/null) \
    || databases=0
  if ((topics > 250 || databases > 50)); then
    say "warning: the stack holds $topics topics and $databases test databases left by the test suites; figures will be slower than on a clean stack. To start clean: deploy/local/stack.sh down; rm -rf $data; deploy/local/stack.sh up (the suites drop their databases after two hours)" >&2
  fi
}
