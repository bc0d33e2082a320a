#!/usr/bin/env bash
# Browser tests of the integration management page: installs what they need (Debian's chromium
# with apt when missing; the npm packages into $CRM_SYNC_HOME/browser, reused across runs), builds
# the services, and runs tests/e2e/tests/suites/admin_browser.rs, which starts a fresh database, topics
# and the services as real processes and drives Playwright against them. Screenshots and
# Playwright's traces land in $CARGO_TARGET_DIR/e2e-logs/admin-browser-*/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SAY_AS=browser
. "$HERE/../../deploy/local/lib.sh"

if ! command -v chromium >/dev/null 2>&1; then
  say "installing Debian's chromium"
  SUDO=; ((EUID == 0)) || SUDO=sudo
  $SUDO apt-get update -qq || fail "apt-get update"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null || fail "apt-get install chromium"
fi
export CHROMIUM=${CHROMIUM:-$(command -v chromium)}
say "$("$CHROMIUM" --version 2>/dev/null || echo chromium)"

command -v npm >/dev/null 2>&1 || fail "npm is needed (Node.js 20 or newer)"
MODULES=$CRM_SYNC_HOME/browser
mkdir -p "$MODULES"
if ! cmp -s "$HERE/package-lock.json" "$MODULES/package-lock.json" || [[ ! -d $MODULES/node_modules/@playwright/test ]]; then
  say "installing the npm packages into $MODULES"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$MODULES/"
  # Playwright must not fetch a browser of its own: the machine's chromium is used.
  (cd "$MODULES" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci"
fi
ln -sfn "$MODULES/node_modules" "$HERE/node_modules"

cd "$ROOT"
# Built for the whole workspace, as deploy/local/test.sh does: building a subset of packages
# unifies other dependency features and would compile librdkafka and OpenSSL all over again.
cargo build --workspace --bins
# The test is #[ignore]d in plain `cargo test`, which may run where no browser is installed.
cargo test --workspace --test suites admin_browser:: -- --ignored --nocapture
