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
targets="hylab_bench_kernels kernels_selective_scan_test kernels_causal_conv1d_test kernels_decode_test"
if ! ninja -C "$B" -j16 $targets >> "$OUT/build.log" 2>&1; then
  stamp "build FAILED"; grep -E "error|Error" "$OUT/build.log" | head -40; exit 1
fi
stamp "built"

if has tests; then
  : > "$OUT/tests.log"
  for t in kernels_selective_scan_test kernels_causal_conv1d_test kernels_decode_test; do
    stamp "test $t"
    HYLAB_KERNELS_VERBOSE=1 timeout 300 "$B/tests/kernels/$t" >> "$OUT/tests.log" 2>&1
    echo "$t exit $?" | tee -a "$OUT/tests.log"
  done
  grep -E "^\[  (PASSED|FAILED) |FAILED TEST|Failure|rel_l2" "$OUT/tests.log" | grep -v "    ok " | head -60
fi
if has bench; then
  stamp "bench"
  HYLAB_COMMIT=${HYLAB_COMMIT:-unknown} timeout 240 "$B/hylab_bench_kernels" bench kernels \
    --json "$OUT/kernels_h200.json" > /dev/null 2> "$OUT/bench.log"
  echo "bench exit $?"; cat "$OUT/bench.log"
fi
if has ncu; then
  stamp "ncu"
  timeout 200 ncu --clock-control none -k "regex:scan_(fwd|bwd)_kernel|conv_(fwd|bwd)_kernel" -c 6 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis \
    --section WarpStateStats --section MemoryWorkloadAnalysis \
    "$B/hylab_bench_kernels" bench kernels --reps 1 --warmup 0 --quick > "$OUT/ncu.txt" 2>&1
  echo "ncu exit $?"
  grep -E "scan_|conv_|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible" "$OUT/ncu.txt" | head -60
fi
stamp "done"
