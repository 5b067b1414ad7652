#!/usr/bin/env bash
# One hylab worker, run by srun from workers.sbatch or workers-array.sbatch (or by hand).
# Needs HYLAB_SHARED; HYLAB (default $HYLAB_SHARED/bin/hylab) and HYLAB_KEYS (default
# $HYLAB_SHARED/keys) are optional. Waits up to HYLAB_WAIT_S (600) seconds for the
# coordinator job to publish its endpoint.
set -euo pipefail
: "${HYLAB_SHARED:?set HYLAB_SHARED to a folder on the shared filesystem}"
HYLAB=${HYLAB:-$HYLAB_SHARED/bin/hylab}
KEYS=${HYLAB_KEYS:-$HYLAB_SHARED/keys}
ENDPOINT_FILE=$HYLAB_SHARED/coordinator.endpoint
for ((i = 0; i < ${HYLAB_WAIT_S:-600}; i++)); do
  [[ -s $ENDPOINT_FILE ]] && break
  sleep 1
done
[[ -s $ENDPOINT_FILE ]] || { echo "no $ENDPOINT_FILE: is the coordinator job running?" >&2; exit 1; }
# One id per node and job, stable across the worker's reconnects.
WORKER_ID=${HYLAB_WORKER_ID:-$(hostname -s)-${SLURM_JOB_ID:-local}${SLURM_ARRAY_TASK_ID:+-$SLURM_ARRAY_TASK_ID}}
if [[ -v CUDA_VISIBLE_DEVICES ]]; then
  echo "hylab worker $WORKER_ID: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"
else
  echo "hylab worker $WORKER_ID: no CUDA_VISIBLE_DEVICES: every GPU nvidia-smi lists"
fi
# work_dir is shared by all workers, so a retried trial resumes from its checkpoint; trials
# resolve relative data paths (data: data/default) from $HYLAB_SHARED.
cd "$HYLAB_SHARED"
exec "$HYLAB" worker --coordinator "$(cat "$ENDPOINT_FILE")" \
  --key "$KEYS/worker.key" --server_key "$KEYS/coordinator.pub" \
  --work_dir "$HYLAB_SHARED/work" --gpus auto --kill_grace_ms 60000 --worker_id "$WORKER_ID"
