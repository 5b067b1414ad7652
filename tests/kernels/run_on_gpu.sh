#!/usr/bin/env bash
# Builds the kernels, their GPU tests and the kernel benchmark on a GPU host and runs them,
# writing logs to ${OUT:-/tmp/kernels_out}. Used with the device tool (one H200):
#   source .devdeps/env.sh && bash tests/kernels/run_on_gpu.sh [tests|bench|ncu|all]...
# Logs: build.log, tests.log, bench.log, kernels_h200.json, ncu.txt, env.txt.
set -u
OUT=${OUT:-/tmp/kernels_out}
mkdir -p "$OUT"
B=${BUILD_DIR:-/tmp/b}
phases=${*:-all}
has() { [[ " $phases " == *" all "* || " $phases " == *" $1 "* ]]; }
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }

{ nvidia-smi; nvcc --version | tail -2; python3 -c 'import torch; print("torch", torch.__version__)'; } > "$OUT/env.txt" 2>&1
stamp "configure"
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DHYLAB_KERNELS_LOCAL_GLUE=ON > "$OUT/build.log" 2>&1 || { stamp "configure FAILED"; tail -30 "$OUT/build.log"; exit 1; }
stamp "build"
targets="hylab_bench_kernels kernels_selective_scan_test kernels_causal_conv1d_test kernels_decode_test kernels_fused_block_test"
# -k 0: build whatever can be built and report every failure; the phases below run what exists.
if ! ninja -C "$B" -j16 -k 0 $targets >> "$OUT/build.log" 2>&1; then
  stamp "build had failures"; grep -E "error|FAILED" "$OUT/build.log" | head -40
fi
stamp "built"

if has tests; then
  : > "$OUT/tests.log"
  for t in kernels_selective_scan_test kernels_causal_conv1d_test kernels_decode_test kernels_fused_block_test; do
    stamp "test $t"
    [ -x "$B/tests/kernels/$t" ] || { echo "$t not built"; continue; }
    lim=60; [ "$t" = kernels_selective_scan_test ] && lim=400
    HYLAB_KERNELS_VERBOSE=1 timeout $lim "$B/tests/kernels/$t" >> "$OUT/tests.log" 2>&1
    echo "$t exit $?" | tee -a "$OUT/tests.log"
  done
  grep -E "^\[  (PASSED|FAILED) |FAILED TEST|Failure|rel_l2" "$OUT/tests.log" | grep -v "    ok " | head -60
fi
if has bench && [ -x "$B/hylab_bench_kernels" ]; then
  stamp "bench"
  HYLAB_COMMIT=${HYLAB_COMMIT:-unknown} timeout 150 "$B/hylab_bench_kernels" bench kernels \
    --json "$OUT/kernels_h200.json" > /dev/null 2> "$OUT/bench.log"
  echo "bench exit $?"; cat "$OUT/bench.log"
fi
if has ncu && [ -x "$B/hylab_bench_kernels" ]; then
  stamp "ncu"
  timeout 120 ncu --clock-control none -k "regex:scan_(fwd|bwd)_kernel|conv_(fwd|bwd)_kernel" -c 6 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis \
    --section WarpStateStats \
    "$B/hylab_bench_kernels" bench kernels --reps 1 --warmup 0 --quick > "$OUT/ncu.txt" 2>&1
  echo "ncu exit $?"
  grep -E "scan_|conv_|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible" "$OUT/ncu.txt" | head -60
fi
stamp "done"
