#!/usr/bin/env bash
# Every test, on the real stack: brings up Kafka and PostgreSQL (installing/fetching them if
# missing), builds the service binaries the end-to-end suites run as processes, runs the suites.
# Extra arguments go to `cargo test`. The end-to-end suites are modules of one test binary,
# `suites`; a module path picks one: `deploy/local/test.sh -p crm-sync-e2e --test suites pipeline::`.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

"$ROOT/deploy/local/stack.sh" up
ensure_libcurl_dev
cd "$ROOT"
cargo build --workspace --bins
if (($#)); then
  cargo test "$@"
else
  cargo test --workspace
fi

# ---- Browser tests of the integration management page (admin-api) -------------------------------
# Headless Debian Chromium driven by Playwright; the script installs chromium and the npm packages
# when missing (cached under $CRM_SYNC_HOME). Only with the full suite, not for a chosen subset.
if ((!$#)); then
  "$ROOT/tests/browser/run.sh"
fi
