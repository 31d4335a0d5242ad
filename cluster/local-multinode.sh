#!/usr/bin/env bash
# Try lrservice's cluster placement on one machine: a head node with {"head": 1} and a
# worker node with one *logical* GPU and {"gpu_worker": 1}, token auth on, all on this host.
#
#   bash cluster/local-multinode.sh start     # prints the addresses
#   RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . \
#       -- lrservice compare --config cluster/compare-cluster.yaml
#   bash cluster/local-multinode.sh stop
#
# The logical GPU is only a scheduling token: trials land on the worker, torch there still
# sees no CUDA device and trains on the CPU. Ports: GCS 6380, dashboard 8265 (override with
# LRS_GCS_PORT / LRS_DASHBOARD_PORT). Uses its own temp dir, so `stop` ends only these nodes.
set -euo pipefail

GCS_PORT=${LRS_GCS_PORT:-6380}
DASHBOARD_PORT=${LRS_DASHBOARD_PORT:-8265}
TMP=${LRS_RAY_TMP:-/tmp/lrs-multinode}
export RAY_AUTH_MODE=token

start() {
  mkdir -p "$TMP"
  # A token for this cluster (ray start does not create one; clients read the same file).
  [ -s "$HOME/.ray/auth_token" ] || ray get-auth-token --generate >/dev/null
  ray start --head --node-ip-address=127.0.0.1 --port="$GCS_PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
    --num-cpus=1 --num-gpus=0 --resources='{"head": 1}' \
    --temp-dir="$TMP" --disable-usage-stats
  local address
  address=$(cat "$TMP/ray_current_cluster")
  # A second node on the same host needs its own agent port (the default 52365 is the head's).
  ray start --address="$address" --num-cpus=1 --num-gpus=1 --resources='{"gpu_worker": 1}' \
    --dashboard-agent-listen-port="${LRS_WORKER_AGENT_PORT:-52366}" --disable-usage-stats
  for _ in $(seq 30); do  # wait until both nodes have registered
    [ "$(python -c "import ray; ray.init(address='$address', log_to_driver=False); print(len([n for n in ray.nodes() if n['Alive']]))" 2>/dev/null)" = 2 ] && break
    sleep 1
  done
  ray status --address="$address"
  echo "[lrservice] GCS: $address  (lrservice ... --address $address, or RAY_ADDRESS=$address)"
  echo "[lrservice] jobs/dashboard: http://127.0.0.1:$DASHBOARD_PORT  (token: ray get-auth-token)"
  echo "[lrservice] config: resources: {worker_resource: gpu_worker, head_resource: head}"
}

descendants() {
  local pid
  for pid in "$@"; do
    echo "$pid"
    descendants $(pgrep -P "$pid" || true)
  done
}

ancestors() {  # this shell and its parents: never ours to kill, even if their command line names $TMP
  local pid=$$
  while [ "$pid" -gt 1 ]; do echo "$pid"; pid=$(ps -o ppid= -p "$pid" | tr -d ' '); done
}

stop() {
  # Ends only this script's nodes (processes naming its temp dir or GCS port, and their
  # children: workers, agents), not other Ray instances on the host; `ray stop` ends all.
  local pids
  pids=$(descendants $(pgrep -f -- "$TMP|:$GCS_PORT" || true) | sort -u | grep -vxF -f <(ancestors) || true)
  [ -n "$pids" ] && kill $pids 2>/dev/null || true
  sleep 3
  pids=$(for p in $pids; do kill -0 "$p" 2>/dev/null && echo "$p"; done || true)
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
  echo "[lrservice] stopped the nodes under $TMP"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
