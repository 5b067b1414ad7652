#!/usr/bin/env bash
# Ablation of mamba_muon_params (issue 11): which Mamba matrices Muon should take.
#
# For every block pattern x routing x seed, one `hylab train` run at equal tokens (the same
# total_batch_size and num_iterations for all), evaluated once at the end on the val split;
# one JSON line per run on stdout (and appended to $OUT):
#   {"block_pattern": "M*12", "mamba_muon_params": "in_proj,out_proj", "seed": 0,
#    "val_bpb": 1.234, "final_train_loss": 3.21, "steps": 500, "tokens": 8192000,
#    "tok_per_s": 401234, "wall_s": 31.2, "exit": 0}
# then, at the end, one summary line per (pattern, routing): the mean val_bpb over seeds.
#
# Defaults (the lead's H200 run): d12 (configs/d12.yaml: n_embd 768, 12 layers) at
# max_seq_len 2048, 8 x 2048 = 16,384 tokens per step, one micro-step, 500 steps = 8.2M
# tokens per run (~20 s of training at ~400k tok/s, plus start-up and the final eval).
# Everything can be changed through the environment, e.g. a tiny CPU check:
#   HYLAB=build/hylab CONFIG=configs/d4_mamba.yaml PATTERNS="M*2" SEEDS="0" STEPS=3 \
#     SEQ=64 BATCH=2 TOTAL=128 ROUTINGS="none" EXTRA="--device=cpu --eval_tokens=4096" \
#     scripts/ablate_mamba_muon.sh
# Runs resume nothing and leave only $OUT behind (run folders go to $WORK, deleted per run
# unless KEEP_RUNS=1). Each run takes one command; to stay under a time limit per command,
# split the grid with PATTERNS/ROUTINGS/SEEDS: the lines append to the same $OUT.
set -euo pipefail

HYLAB=${HYLAB:-build/hylab}
CONFIG=${CONFIG:-configs/d12.yaml}
DATA=${DATA:-data/default}
PATTERNS=${PATTERNS:-"M*12 (T,M)*6"}
ROUTINGS=${ROUTINGS:-"in_proj,x_proj,dt_proj,out_proj in_proj,out_proj in_proj,dt_proj,out_proj in_proj,x_proj,out_proj none"}
SEEDS=${SEEDS:-"0 1"}
STEPS=${STEPS:-500}
SEQ=${SEQ:-2048}
BATCH=${BATCH:-8}
TOTAL=${TOTAL:-$((BATCH * SEQ))}
EXTRA=${EXTRA:-}
OUT=${OUT:-runs/ablate_mamba_muon.jsonl}
WORK=${WORK:-runs/ablate_mamba_muon}
KEEP_RUNS=${KEEP_RUNS:-0}

[[ -x "$HYLAB" ]] || { echo "ablate_mamba_muon.sh: $HYLAB is not an executable (set HYLAB=)" >&2; exit 2; }
[[ -f "$DATA/meta.json" ]] || { echo "ablate_mamba_muon.sh: no prepared data in $DATA (scripts/fetch_corpus.sh && hylab data prepare --input data/raw --out $DATA)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "ablate_mamba_muon.sh: needs python3 to read the metrics" >&2; exit 2; }
mkdir -p "$WORK" "$(dirname "$OUT")"

for pattern in $PATTERNS; do
  for routing in $ROUTINGS; do
    for seed in $SEEDS; do
      tag=$(echo "${pattern}_${routing}_s${seed}" | tr -c 'A-Za-z0-9_\n' '_')
      run_dir="$WORK/$tag"
      rm -rf "$run_dir"
      start=$(date +%s.%N)
      code=0
      # shellcheck disable=SC2086  # EXTRA is a list of flags
      "$HYLAB" train --config "$CONFIG" --run_dir "$run_dir" --metrics_jsonl "$run_dir.jsonl" \
        --data="$DATA" --block_pattern="$pattern" --mamba_muon_params="$routing" --seed="$seed" \
        --max_seq_len="$SEQ" --device_batch_size="$BATCH" --total_batch_size="$TOTAL" \
        --num_iterations="$STEPS" --eval_every=0 --sample_every=0 --probe_steps=0 \
        --name="ablate_$tag" $EXTRA > "$run_dir.log" 2>&1 || code=$?
      wall=$(python3 -c "import time,sys; print(round(time.time() - float(sys.argv[1]), 1))" "$start")
      python3 - "$run_dir.jsonl" "$pattern" "$routing" "$seed" "$STEPS" "$TOTAL" "$wall" "$code" <<'EOF' | tee -a "$OUT"
import json, sys
path, pattern, routing, seed, steps, total, wall, code = sys.argv[1:]
summary = {}
try:
    for line in open(path):
        rec = json.loads(line)
        if rec.get("type") == "summary":
            summary = rec
except FileNotFoundError:
    pass
print(json.dumps({"block_pattern": pattern, "mamba_muon_params": routing, "seed": int(seed),
                  "val_bpb": summary.get("final_val_bpb"),
                  "final_train_loss": summary.get("final_train_loss"),
                  "steps": summary.get("steps", 0), "tokens": int(steps) * int(total),
                  "tok_per_s": summary.get("tok_per_s"), "wall_s": float(wall), "exit": int(code)}))
EOF
      if [[ "$code" != 0 ]]; then
        echo "ablate_mamba_muon.sh: run $tag exited $code; its log: $run_dir.log" >&2
        tail -5 "$run_dir.log" >&2
      elif [[ "$KEEP_RUNS" != 1 ]]; then
        rm -rf "$run_dir" "$run_dir.jsonl" "$run_dir.log"
      fi
    done
  done
done

# Mean val_bpb per (pattern, routing) over the seeds found in $OUT (all runs so far).
python3 - "$OUT" <<'EOF'
import json, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("exit") == 0 and r.get("val_bpb") is not None:
        runs[(r["block_pattern"], r["mamba_muon_params"])].append(r["val_bpb"])
for (pattern, routing), v in sorted(runs.items(), key=lambda kv: (kv[0][0], sum(kv[1]) / len(kv[1]))):
    print(json.dumps({"summary": True, "block_pattern": pattern, "mamba_muon_params": routing,
                      "seeds": len(v), "mean_val_bpb": round(sum(v) / len(v), 5),
                      "val_bpb": [round(x, 5) for x in v]}))
EOF
