# Sourced by the project's scripts (set SAY_AS first to name the script in its messages):
# where the clone is, and where everything the scripts download, build and write goes —
# outside the clone, under $CRM_SYNC_HOME, so that a second run on the same machine reuses it.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CRM_SYNC_HOME=${CRM_SYNC_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/crm-sync}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CRM_SYNC_HOME/target}

say() { printf '[%s] %s\n' "${SAY_AS:-crm-sync}" "$*"; }
fail() { printf '[%s] FAILED: %s\n' "${SAY_AS:-crm-sync}" "$*" >&2; exit 1; }
