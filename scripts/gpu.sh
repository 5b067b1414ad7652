#!/usr/bin/env bash
# GPU-machine work, one phase per argument, in the order given:
#   build    configure (first time) and build everything with the machine's CUDA LibTorch
#   tests    ctest -L gpu (kernels vs the reference, the model on CUDA, ...)
#   bench    `hylab bench kernels` + `hylab bench train` for d12 all-T / all-M / alternating at
#            nanochat's shapes (device batch 32 x 2048, vocab 32768, bf16; random tokens)
#   train    d12 all-T / all-M / alternating, 500 steps each on the default corpus (data/default)
#   dp       d12 alternating on 1 GPU and on 2 GPUs at the same global batch (needs 2 GPUs)
#   decode   issue 13: `hylab bench decode` at the issue's points (d20 all-T, early-T/late-M
#            hybrid, all-M at vocab 32768; d12 all-T); writes $HYLAB_OUT/decode_h200.json
#   decode_grid  d20 all-T over batch 1,8,32,64 x prompt 512,8192 (+128 new tokens)
#   train_table  issues 11/12: `hylab bench train` at 65,536 tokens per optimizer step, d12/d20
#            all-T at 32 x 2048 (fused block on, and off for d12), d12 (T,M)*6 / M*12 (/ M2*12)
#            at 32 x 2048, 8 x 8192 and 2 x 32768; writes $HYLAB_OUT/training_h200.json
#   fused_curve  issue 11: d12 all-T, 200 steps on data/default with the fused block on and
#            off; prints the largest train-loss difference over the steps and the val_bpb of each
#   scaling  issue 7: the three d20 configs on 1, 2, 4, 8 GPUs (as many as there are) at one
#            global batch; writes $HYLAB_OUT/scaling_h200.json (tok/s, MFU, memory, loss)
# With no argument: build tests bench. Logs and JSON go to $HYLAB_OUT (default build-gpu/out).
# The JSON records `git rev-parse HEAD`; set HYLAB_COMMIT=<commit> where the machine's copy of
# the checkout has no or stale git metadata (a remote GPU machine fed a copied tree may).
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

# d20 all-T, all-M and the seed's early-T/late-M hybrid, SCALING_STEPS steps (default 8) of
# SCALING_BATCH tokens (default nanochat's 524288) at 32 x 2048 per micro-step, on 1, 2, 4 and
# 8 GPUs where the machine has them. The default corpus' val split is small: evaluation runs
# with fewer rows (the trainer says so).
phase_scaling() {
  local n c gpus=(1) max
  max=$(gpu_count)
  for n in 2 4 8; do [ "$n" -le "$max" ] && gpus+=("$n"); done
  for c in transformer_d20 mamba_d20 hybrid_early_t_late_m_d20; do
    for n in "${gpus[@]}"; do
      "$HYLAB" train --config "configs/$c.yaml" --data data/default --nproc "$n" \
        --num_iterations="${SCALING_STEPS:-8}" --device_batch_size=32 --max_seq_len=2048 \
        --total_batch_size="${SCALING_BATCH:-524288}" --eval_every=0 --sample_every=0 \
        --checkpoint_every=0 --probe_steps=0 --run_dir "$OUT_DIR/scaling_${c}_gpus$n" \
        --db "$OUT_DIR/hylab.db" > "$OUT_DIR/scaling_${c}_gpus$n.log" 2>&1
      grep -E "^summary:" "$OUT_DIR/scaling_${c}_gpus$n.log" | cut -c1-200
    done
  done
  python3 - "$OUT_DIR" <<'PY'
import glob, json, os, re, subprocess, sys, datetime
out = sys.argv[1]
results = []
for log in sorted(glob.glob(os.path.join(out, "scaling_*_gpus*.log"))):
    m = re.search(r"scaling_(.+)_gpus(\d+)\.log$", log)
    text = open(log).read()
    summary = [l for l in text.splitlines() if l.startswith("summary: ")]
    steps = re.findall(r"^step (\d+)/\d+ .*?\| loss ([\d.]+)", text, re.M)
    if not summary or not steps:
        print(f"scaling: no result in {log}", file=sys.stderr)
        continue
    s = json.loads(summary[-1][len("summary: "):])
    results.append({"config": m.group(1), "gpus": int(m.group(2)), "tok_per_s": s["tok_per_s"],
                    "mfu": s["mfu"], "peak_mem_gib": s["peak_mem_gib"],
                    "loss_at_step": float(steps[-1][1]), "step": int(steps[-1][0])})
def run(*cmd):
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True).stdout
    except OSError:
        return ""
gpu = run("nvidia-smi", "--query-gpu=name", "--format=csv,noheader").splitlines()
doc = {"commit": os.environ.get("HYLAB_COMMIT") or run("git", "rev-parse", "--short", "HEAD").strip(),
       "date": datetime.date.today().isoformat(), "gpu": gpu[0] if gpu else "?", "results": results}
for r in results:  # efficiency against one GPU of the same config
    one = [q for q in results if q["config"] == r["config"] and q["gpus"] == 1]
    if one: r["scaling_efficiency"] = r["tok_per_s"] / (r["gpus"] * one[0]["tok_per_s"])
json.dump(doc, open(os.path.join(out, "scaling_h200.json"), "w"), indent=2)
print(json.dumps(results, indent=1))
PY
}

# One `hylab bench decode` per model (name config pattern points [extra...]).
decode_one() {
  local name=$1 config=$2 pattern=$3 points=$4
  shift 4
  "$HYLAB" bench decode --config "$config" --vocab_size=32768 --max_seq_len=2048 \
    --block_pattern="$pattern" --points "$points" --json "$OUT_DIR/decode_$name.json" "$@" \
    > /dev/null 2> "$OUT_DIR/decode_$name.log"
  local rc=$?
  grep "^bench decode:" "$OUT_DIR/decode_$name.log" || tail -n 5 "$OUT_DIR/decode_$name.log"
  return $rc
}
bench_train_one() {  # name config pattern B T [extra flags...]
  local name=$1 cfg=$2 pattern=$3 b=$4 t=$5
  shift 5
  "$HYLAB" bench train --config "$cfg" --steps 6 --warmup 2 --block_pattern="$pattern" \
    --device_batch_size="$b" --max_seq_len="$t" --vocab_size=32768 --total_batch_size=65536 "$@" \
    > "$OUT_DIR/bt_$name.json" 2> "$OUT_DIR/bt_$name.log" \
    || { echo "bench train $name failed: $(tail -n 2 "$OUT_DIR/bt_$name.log")"; rm -f "$OUT_DIR/bt_$name.json"; return 1; }
  python3 - "$OUT_DIR/bt_$name.json" "$name" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"bench train {sys.argv[2]}: {d['tok_per_s'] / 1e3:.1f}k tok/s, MFU {100 * d['mfu']:.1f} %, "
      f"peak {d['peak_mem_gib']:.1f} GiB")
PY
}
phase_train_table() {
  local rc=0
  bench_train_one d12_T configs/d12.yaml "T*12" 32 2048 || rc=1
  bench_train_one d12_T_unfused configs/d12.yaml "T*12" 32 2048 --fused_block=false || rc=1
  bench_train_one d20_T configs/transformer_d20.yaml "T*20" 32 2048 || rc=1
  local p
  for p in "T*12" "(T,M)*6" "M*12" "M2*12"; do
    bench_train_one "d12_${p}_32x2048" configs/d12.yaml "$p" 32 2048 || rc=1
    [ "$p" = "M2*12" ] && continue
    bench_train_one "d12_${p}_8x8192" configs/d12.yaml "$p" 8 8192 || rc=1
    bench_train_one "d12_${p}_2x32768" configs/d12.yaml "$p" 2 32768 || rc=1
  done
  python3 - "$OUT_DIR" <<'PY'
import datetime, glob, json, os, re, subprocess, sys
out = sys.argv[1]
results = []
for f in sorted(glob.glob(os.path.join(out, "bt_*.json"))):
    d = json.load(open(f))
    c = d.get("config", {})
    log = open(f[:-5] + ".log").read() if os.path.exists(f[:-5] + ".log") else ""
    name = os.path.basename(f)[3:-5]
    m = re.search(r"_(\d+)x(\d+)$", name)
    pattern = {"d12_T": "T*12", "d12_T_unfused": "T*12", "d20_T": "T*20"}.get(name) or name.split("_")[1]
    r = {"name": name, "n_layer": c.get("n_layer"), "block_pattern": pattern,
         "device_batch_size": int(m.group(1)) if m else 32,
         "max_seq_len": c.get("sequence_len"), "total_batch_size": d.get("total_batch_size", d.get("tokens_per_step")),
         "tok_per_s": d["tok_per_s"], "mfu": d["mfu"], "peak_mem_gib": d["peak_mem_gib"],
         "fused_block": "unfused" not in name, "step_ms": d.get("step_ms"),
         "optimizer_ms": d.get("optimizer_ms"), "breakdown": d.get("breakdown")}
    results.append(r)
doc = {"commit": os.environ.get("HYLAB_COMMIT") or "?", "date": datetime.date.today().isoformat(),
       "gpu": "NVIDIA H200", "command": "scripts/gpu.sh train_table", "results": results}
json.dump(doc, open(os.path.join(out, "training_h200.json"), "w"), indent=2)
PY
  return $rc
}

phase_fused_curve() {
  [ -f data/default/meta.json ] || { echo "gpu.sh fused_curve: no data/default"; return 1; }
  local fb
  for fb in true false; do
    rm -f "$OUT_DIR/curve_$fb.db"
    "$HYLAB" train --config configs/d12.yaml --data data/default --block_pattern="T*12" \
      --num_iterations=200 --device_batch_size=16 --max_seq_len=2048 --total_batch_size=32768 \
      --eval_every=50 --eval_tokens=65536 --sample_every=0 --checkpoint_every=0 --seed=0 \
      --fused_block="$fb" --run_dir "$OUT_DIR/curve_$fb" --db "$OUT_DIR/curve_$fb.db" \
      > "$OUT_DIR/curve_$fb.log" 2>&1 || { echo "fused_curve $fb failed: $(tail -n 3 "$OUT_DIR/curve_$fb.log")"; return 1; }
  done
  python3 - "$OUT_DIR" <<'PY'
import json, sqlite3, sys
out = sys.argv[1]
def curve(fb, name):
    db = sqlite3.connect(f"{out}/curve_{fb}.db")
    return dict(db.execute("SELECT step, value FROM metrics WHERE name = ? ORDER BY step", (name,)).fetchall())
on, off = curve("true", "train_loss"), curve("false", "train_loss")
steps = sorted(set(on) & set(off))
diffs = [(abs(on[s] - off[s]), s) for s in steps]
worst = max(diffs) if diffs else (float("nan"), -1)
von, voff = curve("true", "val_bpb"), curve("false", "val_bpb")
res = {"steps_compared": len(steps), "max_abs_train_loss_diff": worst[0], "at_step": worst[1],
       "final_train_loss": [on.get(steps[-1]), off.get(steps[-1])] if steps else None,
       "val_bpb_fused": von, "val_bpb_unfused": voff}
json.dump(res, open(f"{out}/fused_curve.json", "w"), indent=2)
print("fused_curve:", json.dumps(res))
PY
}

phase_decode() {
  local rc=0
  decode_one d20_T configs/transformer_d20.yaml "T*20" 1x512+128,1x8192+64,32x512+64,8x16384+16 \
    --profile "$OUT_DIR/trace_decode_d20_T.json" || rc=1
  decode_one d20_hybrid configs/hybrid_early_t_late_m_d20.yaml "T*12,M*8" 8x16384+16 || rc=1
  decode_one d20_M configs/mamba_d20.yaml "M*20" 8x16384+16 || rc=1
  decode_one d12_T configs/d12.yaml "T*12" 1x512+128 --profile "$OUT_DIR/trace_decode_d12_T.json" || rc=1
  python3 - "$OUT_DIR" <<'PY'
import datetime, glob, json, os, subprocess, sys
out = sys.argv[1]
docs = [json.load(open(os.path.join(out, f"decode_{n}.json")))
        for n in ("d20_T", "d20_hybrid", "d20_M", "d12_T")
        if os.path.exists(os.path.join(out, f"decode_{n}.json"))]
results = []
for d in docs:
    for r in d["results"]:
        r.pop("profile", None)
        results.append(r)
def run(*cmd):
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True).stdout
    except OSError:
        return ""
doc = {"commit": os.environ.get("HYLAB_COMMIT") or run("git", "rev-parse", "--short", "HEAD").strip(),
       "date": datetime.date.today().isoformat(), "gpu": docs[0]["gpu"] if docs else "?",
       "copy_bandwidth_gb_per_s": docs[0]["copy_bandwidth_gb_per_s"] if docs else None,
       "command": "scripts/gpu.sh decode", "results": results}
json.dump(doc, open(os.path.join(out, "decode_h200.json"), "w"), indent=2)
for r in results:
    print(f'{r["block_pattern"]:>10} L{r["n_layer"]} {r["batch"]}x{r["prompt"]}+{r["new"]}: '
          f'{r.get("tok_per_s", 0):9.0f} tok/s {r.get("decode_ms_per_step", 0):7.3f} ms/step '
          f'MBU {r.get("mbu", 0):.3f} prefill {r.get("prefill_ms", 0):8.1f} ms '
          f'cache {r.get("cache_bytes", 0)/1e9:.2f} GB peak {r.get("peak_mem_gib", 0):.1f} GiB')
PY
  return $rc
}
phase_decode_grid() {
  "$HYLAB" bench decode --config configs/transformer_d20.yaml --vocab_size=32768 \
    --max_seq_len=2048 --block_pattern="T*20" --batch_sizes 1,8,32,64 --prompt_lens 512,8192 \
    --new_tokens 128 --json "$OUT_DIR/decode_grid_d20_T.json" > /dev/null \
    2> "$OUT_DIR/decode_grid_d20_T.log"
  local rc=$?
  grep "^bench decode:" "$OUT_DIR/decode_grid_d20_T.log" || tail -n 5 "$OUT_DIR/decode_grid_d20_T.log"
  return $rc
}

status=0
for phase in "$@"; do
  echo "== gpu.sh $phase"
  "phase_$phase" || { echo "gpu.sh: phase $phase failed"; status=1; }
done
exit $status
