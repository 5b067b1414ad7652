#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang-16 with ASan + UBSan, in build-fuzz/) and runs
# each one for SECONDS (default 60), one at a time, niced, one job each. Prints one JSON
# array: [{"target", "execs", "crashes_open", "seconds", "corpus"}], execs of this run.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     e.g. scripts/fuzz.sh 600 sweep wire
#
# New corpus entries go to build-fuzz/corpus/<target>/ (not committed; copy the small
# interesting ones to fuzz/corpus/<target>/). An input that crashes is written to
# build-fuzz/artifacts/<target>/: fix the bug, then commit the input as
# fuzz/regressions/<target>/<name> so that CTest's fuzz_replay_<target> replays it for good.
# A cumulative ledger of runs is appended to build-fuzz/fuzz_runs.jsonl. HYLAB_FUZZ_NO_BUILD=1
# skips the build (targets already built).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(wire sweep config checkpoint shard)
export CCACHE_DIR="${CCACHE_DIR:-/work/.ccache}" CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [[ ! -f build-fuzz/build.ninja ]]; then
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang-16 -DCMAKE_CXX_COMPILER=clang++-16 -DHYLAB_FUZZ=ON \
    -DHYLAB_WITH_CUDA=OFF -DHYLAB_BUILD_TESTS=OFF "${launcher[@]}" >&2
fi
[[ -n "${HYLAB_FUZZ_NO_BUILD:-}" ]] || nice cmake --build build-fuzz -j2 --target "${targets[@]/%/_fuzz}" >&2

repo="$PWD"
root="$repo/build-fuzz"
echo -n "["
first=1
for t in "${targets[@]}"; do
  work="$root/run/$t"
  rm -rf "$work"
  mkdir -p "$work" "$root/corpus/$t" "$root/artifacts/$t"
  before=$(ls "$root/artifacts/$t" | wc -l)
  regressions=()
  [[ -d fuzz/regressions/$t ]] && regressions=("$repo/fuzz/regressions/$t")
  # sweep and config run each input through much instrumented code (YAML, JSON, every
  # derived field), so libFuzzer's own per-run work dominated: the entropic schedule's
  # UpdateFeatureFrequency (one random access into a 4 MB table per feature per run, 27% of
  # sweep's profile) and ASan's allocation stacks (StackDepot, ~6-8%). Without them, 15,000
  # runs from the same corpus and seed: sweep 517 -> 1,126, config 378 -> 537 runs per CPU
  # second, same or more coverage at the end (docs/RELIABILITY.md, "Throughput of the slow
  # targets"). A report then has no allocation stack: replay the saved input for one.
  extra=()
  asan_opts="${ASAN_OPTIONS:-}"
  if [[ $t == sweep || $t == config ]]; then
    extra=(-entropic=0)
    asan_opts="malloc_context_size=0${asan_opts:+:$asan_opts}"
  fi
  # -jobs=1: one fuzzing process; its log is fuzz-0.log in the working directory.
  (cd "$work" && ASAN_OPTIONS="$asan_opts" nice -n 10 "$root/fuzz/${t}_fuzz" "${extra[@]}" -jobs=1 -workers=1 \
      -max_total_time="$seconds" -max_len=4096 -timeout=25 -rss_limit_mb=2560 -malloc_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$root/artifacts/$t/" \
      "$root/corpus/$t" "$repo/fuzz/corpus/$t" "${regressions[@]}" >/dev/null 2>&1) || true
  log="$work/fuzz-0.log"
  execs=$(grep -h 'stat::number_of_executed_units' "$log" 2>/dev/null | awk '{s+=$2} END {print s+0}')
  if [[ "$execs" == 0 ]]; then  # a crash ends the job before the final stats: the last status line
    execs=$(grep -ho '^#[0-9]*' "$log" 2>/dev/null | tail -1 | tr -d '#')
    execs=${execs:-0}
  fi
  after=$(ls "$root/artifacts/$t" | wc -l)
  crashes=$((after - before))
  corpus=$(ls "$root/corpus/$t" | wc -l)
  line="{\"target\": \"$t\", \"execs\": $execs, \"crashes_open\": $crashes, \"seconds\": $seconds, \"corpus\": $corpus}"
  echo "{\"date\": \"$(date -u +%FT%TZ)\", \"commit\": \"$(git rev-parse --short HEAD 2>/dev/null)\", ${line:1}" >> "$root/fuzz_runs.jsonl"
  [[ $first == 1 ]] || echo -n ", "
  first=0
  echo -n "$line"
done
echo "]"
