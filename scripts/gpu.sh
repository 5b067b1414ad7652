#!/usr/bin/env bash
# GPU-machine work, one phase per argument, in the order given:
#   build    configure (first time) and build everything with the machine's CUDA LibTorch
#   tests    ctest -L gpu (kernels vs the reference, the model on CUDA, ...)
#   bench    `hylab bench kernels` + `hylab bench train` for d12 all-T / all-M / alternating at
#            nanochat's shapes (device batch 32 x 2048, vocab 32768, bf16; random tokens)
#   train    d12 all-T / all-M / alternating, 500 steps each on the default corpus (data/default)
#   dp       d12 alternating on 1 GPU and on 2 GPUs at the same global batch (needs 2 GPUs)
# With no argument: build tests bench. Logs and JSON go to $HYLAB_OUT (default build-gpu/out).
# Select GPUs with CUDA_VISIBLE_DEVICES as usual; `train` runs its three models at once, one
# per visible GPU, when there are several.
#
# On a host without package access, first copy the Debian dependencies gathered by
# ../shared/device/prepare.sh into .devdeps/ (this script sources .devdeps/env.sh if present).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${HYLAB_BUILD_DIR:-build-gpu}
OUT_DIR=${HYLAB_OUT:-$BUILD_DIR/out}
HYLAB="$BUILD_DIR/hylab"
mkdir -p "$OUT_DIR"
[ $# -gt 0 ] || set -- build tests bench

if [ -f .devdeps/env.sh ]; then
  # shellcheck disable=SC1091
  source .devdeps/env.sh
fi
# NVLink multicast stays off in every process we start (it can take a shared host's GPUs down).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

gpu_count() { nvidia-smi -L 2>/dev/null | wc -l; }
patterns=("transformer:T*12" "mamba:M*12" "alternating:(T,M)*6")

phase_build() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${HYLAB_CMAKE_ARGS:-} \
      > "$OUT_DIR/configure.log" 2>&1 || { tail -n 30 "$OUT_DIR/configure.log"; return 1; }
    grep -E "^-- hylab:" "$OUT_DIR/configure.log" || true
  fi
  local start=$SECONDS
  cmake --build "$BUILD_DIR" -j "$(nproc)" > "$OUT_DIR/build.log" 2>&1 \
    || { grep -B2 -A12 -m5 "error" "$OUT_DIR/build.log" | head -n 80; return 1; }
  echo "gpu.sh: build took $(( SECONDS - start )) s"
}

phase_tests() {
  (cd "$BUILD_DIR" && ctest -L gpu --output-on-failure --timeout 900) > "$OUT_DIR/ctest_gpu.log" 2>&1
  local rc=$?
  grep -E "tests passed|tests failed|Failed|timing:" "$OUT_DIR/ctest_gpu.log" || true
  return $rc
}

phase_bench() {
  "$HYLAB" bench kernels --json "$OUT_DIR/kernels_h200.json" > "$OUT_DIR/bench_kernels.log" 2>&1
  for p in "${patterns[@]}"; do
    local name=${p%%:*} pattern=${p#*:}
    "$HYLAB" bench train --config configs/d12.yaml --steps 10 --warmup 2 \
      --block_pattern="$pattern" --device_batch_size=32 --max_seq_len=2048 --vocab_size=32768 \
      --profile "$OUT_DIR/trace_d12_$name.json" \
      > "$OUT_DIR/bench_train_d12_$name.json" 2> "$OUT_DIR/bench_train_d12_$name.log"
    echo "bench train d12 $name: $(tr -d '\n ' < "$OUT_DIR/bench_train_d12_$name.json" | cut -c1-160)"
  done
}

# 500 steps of 16 x 2048 tokens (32k tokens a step, 16M in all: four passes over the ~4M-token
# default corpus), eval every 100 steps.
train_one() {  # name pattern
  "$HYLAB" train --config configs/d12.yaml --data data/default --block_pattern="$2" \
    --num_iterations=500 --device_batch_size=16 --max_seq_len=2048 --total_batch_size=32768 \
    --eval_every=100 --eval_tokens=32768 --sample_every=250 --checkpoint_every=0 \
    --run_dir "$OUT_DIR/train_d12_$1" --db "$OUT_DIR/hylab.db" > "$OUT_DIR/train_d12_$1.log" 2>&1
}
phase_train() {
  [ -f data/default/meta.json ] || { echo "gpu.sh train: no data/default (run scripts/setup.sh and carry it)"; return 1; }
  local n i=0 rc=0 pids=()
  n=$(gpu_count)
  for p in "${patterns[@]}"; do
    if [ "$n" -gt 1 ]; then
      CUDA_VISIBLE_DEVICES=$(( i % n )) train_one "${p%%:*}" "${p#*:}" & pids+=($!)
    else
      train_one "${p%%:*}" "${p#*:}" || rc=1
    fi
    i=$(( i + 1 ))
  done
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  for p in "${patterns[@]}"; do grep -E "^summary:" "$OUT_DIR/train_d12_${p%%:*}.log" | cut -c1-300 || true; done
  return $rc
}

# The same global batch on 1 GPU and on 2 (nanochat's 524288 tokens by default: 16 micro-steps
# of 16 x 2048 on one GPU, 8 on each of two): the loss curves must agree, tokens/s should
# double. DP_TOTAL_BATCH and DP_STEPS change the batch and the number of steps.
phase_dp() {
  [ "$(gpu_count)" -ge 2 ] || { echo "gpu.sh dp: needs 2 GPUs"; return 1; }
  local n
  for n in 1 2; do
    "$HYLAB" train --config configs/d12.yaml --data data/default --block_pattern="(T,M)*6" \
      --nproc "$n" --num_iterations="${DP_STEPS:-30}" --device_batch_size=16 --max_seq_len=2048 \
      --total_batch_size="${DP_TOTAL_BATCH:-524288}" --eval_every=10 --eval_tokens=32768 \
      --sample_every=0 --checkpoint_every=0 --run_dir "$OUT_DIR/dp_d12_gpus$n" \
      --db "$OUT_DIR/hylab.db" > "$OUT_DIR/dp_d12_gpus$n.log" 2>&1
    grep -E "^summary:" "$OUT_DIR/dp_d12_gpus$n.log" | cut -c1-300
  done
}

status=0
for phase in "$@"; do
  echo "== gpu.sh $phase"
  "phase_$phase" || { echo "gpu.sh: phase $phase failed"; status=1; }
done
exit $status
