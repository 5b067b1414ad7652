#!/usr/bin/env bash
# Makes hylab's CurveZMQ key pairs and dashboard token, and writes them as the Kubernetes
# Secrets the manifests mount:
#   deploy/k8s/make-secrets.sh OUT_DIR [USER.pub ...]
#   kubectl apply -f OUT_DIR/secrets.yaml        # then: kubectl apply -k deploy/k8s
#
#   hylab-coordinator-key  coordinator.key, coordinator.pub, probe.key (the liveness probe)
#   hylab-allowed-keys     the allow-list: worker.pub, probe.pub and each USER.pub given
#   hylab-worker-key       worker.key, coordinator.pub
#   hylab-dashboard-token  token (the dashboard's bearer token)
#
# Keys already in OUT_DIR/keys are kept (run it again to add users). OUT_DIR holds secret
# keys: keep it out of version control. HYLAB names the hylab executable (default: hylab).
set -euo pipefail
HYLAB=${HYLAB:-hylab}
out=${1:?usage: make-secrets.sh OUT_DIR [USER.pub ...]}
shift
umask 077
mkdir -p "$out/keys"
for name in coordinator worker probe; do
  [[ -f $out/keys/$name.key ]] || "$HYLAB" keygen --out "$out/keys/$name" >/dev/null
done
[[ -f $out/dashboard.token ]] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$out/dashboard.token"

b64() { base64 -w0 < "$1"; }
# secret NAME KEY=FILE...
secret() {
  local name=$1
  shift
  printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: hylab\ntype: Opaque\ndata:\n' "$name"
  for kv in "$@"; do printf '  %s: %s\n' "${kv%%=*}" "$(b64 "${kv#*=}")"; done
}
allowed=("worker.pub=$out/keys/worker.pub" "probe.pub=$out/keys/probe.pub")
for pub in "$@"; do
  [[ $pub == *.pub ]] || { echo "make-secrets.sh: $pub: expected a NAME.pub file" >&2; exit 2; }
  allowed+=("$(basename "$pub")=$pub")
done
{
  secret hylab-coordinator-key "coordinator.key=$out/keys/coordinator.key" \
    "coordinator.pub=$out/keys/coordinator.pub" "probe.key=$out/keys/probe.key"
  secret hylab-allowed-keys "${allowed[@]}"
  secret hylab-worker-key "worker.key=$out/keys/worker.key" "coordinator.pub=$out/keys/coordinator.pub"
  secret hylab-dashboard-token "token=$out/dashboard.token"
} > "$out/secrets.yaml"
echo "wrote $out/secrets.yaml; next: kubectl apply -f $out/secrets.yaml && kubectl apply -k deploy/k8s"
