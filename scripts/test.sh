#!/usr/bin/env bash
# The test suite: default corpus (fetched once), then every CTest suite.
# Labels: unit, integration, gpu. Without a CUDA LibTorch the gpu suites are not built and
# ctest reports them as skipped. Extra arguments go to ctest (e.g. -L unit).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${HYLAB_BUILD_DIR:-build}

# Some integration tests train on the embedded default corpus.
scripts/fetch_corpus.sh
if [ ! -f data/default/meta.json ]; then
  "$BUILD_DIR/hylab" data prepare --input data/raw --out data/default
fi

# The dashboard's chart library and the browser test's driver (idempotent; setup.sh fetched them).
scripts/fetch_web.sh "$BUILD_DIR"

cd "$BUILD_DIR"
ctest --output-on-failure --timeout 1200 "$@"
