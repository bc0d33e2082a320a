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
