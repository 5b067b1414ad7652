#!/usr/bin/env bash
# One command on a GPU machine: build with the machine's CUDA LibTorch, run the GPU tests and
# the benchmarks. Results (JSON + logs) go to $HYLAB_OUT (default build-gpu/out).
#
# On a host without package access, first copy the Debian dependencies gathered by
# ../shared/device/prepare.sh into .devdeps/ (this script sources .devdeps/env.sh if present).
#   scripts/gpu.sh                  # build + ctest -L gpu + benchmarks
#   scripts/gpu.sh tests            # build + ctest -L gpu only
#   scripts/gpu.sh bench            # build + benchmarks only
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
BUILD_DIR=${HYLAB_BUILD_DIR:-build-gpu}
OUT_DIR=${HYLAB_OUT:-$BUILD_DIR/out}
mkdir -p "$OUT_DIR"

if [ -f .devdeps/env.sh ]; then
  # shellcheck disable=SC1091
  source .devdeps/env.sh
fi
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${HYLAB_CMAKE_ARGS:-} 2>&1 \
    | tee "$OUT_DIR/configure.log" | grep -E "^-- hylab:|Error" || true
fi
start=$(date +%s)
cmake --build "$BUILD_DIR" -j "$(nproc)" 2>&1 | tee "$OUT_DIR/build.log" | tail -n 3
echo "gpu.sh: build took $(( $(date +%s) - start )) s"

status=0
if [ "$what" = all ] || [ "$what" = tests ]; then
  (cd "$BUILD_DIR" && ctest -L gpu --output-on-failure --timeout 900) 2>&1 | tee "$OUT_DIR/ctest_gpu.log" || status=1
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
  "$BUILD_DIR/hylab" bench kernels --json "$OUT_DIR/kernels_h200.json" 2>&1 | tee "$OUT_DIR/bench_kernels.log" || status=1
  for cfg in transformer mamba alternating; do
    "$BUILD_DIR/hylab" bench train --config configs/d12.yaml --steps 20 \
      $( [ $cfg = mamba ] && echo "--block_pattern=M*12" ) \
      $( [ $cfg = alternating ] && echo "--block_pattern=(T,M)*6" ) \
      --device_batch_size=32 --max_seq_len=2048 --vocab_size=32768 \
      > "$OUT_DIR/bench_train_d12_$cfg.json" 2> "$OUT_DIR/bench_train_d12_$cfg.log" || status=1
    cat "$OUT_DIR/bench_train_d12_$cfg.json"
  done
fi
exit $status
