#!/usr/bin/env bash
# The main job on the embedded default data: fetch the corpus, tokenize it, then run the
# quickstart sweep (all-Transformer, all-Mamba and two hybrids, CPU-sized, three seeds each)
# through a local coordinator and two workers (HYLAB_WORKERS; a trainer uses one core), ending
# with the comparison table: mean ± std and n per pattern, marked by Welch's t-test.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${HYLAB_BUILD_DIR:-build}

scripts/fetch_corpus.sh
if [ ! -f data/default/meta.json ]; then
  "$BUILD_DIR/hylab" data prepare --input data/raw --out data/default
fi
"$BUILD_DIR/hylab" local sweeps/quickstart.yaml --workers "${HYLAB_WORKERS:-2}" "$@"
