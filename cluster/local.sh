#!/usr/bin/env bash
# A real two-node Ray cluster on this machine, for trying `hpsearch submit` before a cloud one.
#
#   cluster/local.sh up       head node (CPU only) + a worker node with 2 logical GPUs
#   cluster/local.sh status   `ray status` of this cluster
#   cluster/local.sh down     stop this cluster's processes (and only them)
#
# The head runs the dashboard (Jobs API) at http://127.0.0.1:$HPSEARCH_LOCAL_DASHBOARD_PORT
# and owns no GPU; the worker node declares GPUs and a `gpu_node` resource, so GPU
# trials can only land there. Each node has its own Ray temp dir under
# $HPSEARCH_LOCAL_DIR; `down` stops the processes that use those dirs, so other Ray
# instances on the machine (an embedded `ray.init()`, another cluster) are left alone.
# Ray's own ports (GCS, node managers) listen on this machine's address: keep token
# authentication on when the machine is reachable from a network.
#
# Settings (environment):
#   HPSEARCH_LOCAL_GCS_PORT        head (GCS) port                        default 6379
#   HPSEARCH_LOCAL_DASHBOARD_PORT  dashboard / Jobs API port              default 8265
#   HPSEARCH_LOCAL_CLIENT_PORT     Ray Client server port                 default GCS port + 1
#   HPSEARCH_LOCAL_HEAD_CPUS       CPUs of the head node                  default 1
#   HPSEARCH_LOCAL_WORKER_CPUS     CPUs of the worker node                default 2
#   HPSEARCH_LOCAL_WORKER_GPUS     logical GPUs of the worker node        default 2
#   HPSEARCH_LOCAL_OBJECT_STORE    object store bytes per node            default 200000000
#   HPSEARCH_LOCAL_DIR             state dir (the nodes' Ray temp dirs and logs; keep
#                                  it short: Unix socket paths are limited to 107 bytes)
#                                                                         default /tmp/hpsearch-local-<GCS port>
#   HPSEARCH_LOCAL_AUTH            token | disabled: Ray token authentication   default token
#   HPSEARCH_RAY                   the `ray` executable     default .venv/bin/ray, else ray on PATH
#
# With token authentication (the default) the token comes from RAY_AUTH_TOKEN,
# RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, in that order; when none exists, one is
# generated into ~/.ray/auth_token (`ray get-auth-token --generate`). `hpsearch submit`
# reads the token from the same places.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${HPSEARCH_RAY:-}" ]]; then
    RAY="$HPSEARCH_RAY"
elif [[ -x "$ROOT/.venv/bin/ray" ]]; then
    RAY="$ROOT/.venv/bin/ray"
else
    RAY="ray"
fi
PY="$(dirname "$(command -v "$RAY")")/python"
[[ -x "$PY" ]] || PY="python3"
# Job entrypoints run `python ...`: make it the Python that runs Ray.
[[ "$PY" == python3 ]] || export PATH="$(dirname "$PY"):$PATH"

GCS_PORT="${HPSEARCH_LOCAL_GCS_PORT:-6379}"
DASH_PORT="${HPSEARCH_LOCAL_DASHBOARD_PORT:-8265}"
CLIENT_PORT="${HPSEARCH_LOCAL_CLIENT_PORT:-$((GCS_PORT + 1))}"
HEAD_CPUS="${HPSEARCH_LOCAL_HEAD_CPUS:-1}"
WORKER_CPUS="${HPSEARCH_LOCAL_WORKER_CPUS:-2}"
WORKER_GPUS="${HPSEARCH_LOCAL_WORKER_GPUS:-2}"
OBJECT_STORE="${HPSEARCH_LOCAL_OBJECT_STORE:-200000000}"
STATE="${HPSEARCH_LOCAL_DIR:-/tmp/hpsearch-local-$GCS_PORT}"
AUTH="${HPSEARCH_LOCAL_AUTH:-token}"
HEAD_TEMP="$STATE/head"     # Ray temp dirs, one per node: two nodes sharing one would
WORKER_TEMP="$STATE/worker" # share (and garbage-collect) each other's runtime_env files
HOST="127.0.0.1"

log() { echo "local.sh: $*" >&2; }
die() { echo "local.sh: error: $*" >&2; exit 2; }

case "$AUTH" in
    token | disabled) export RAY_AUTH_MODE="$AUTH" ;;
    *) die "HPSEARCH_LOCAL_AUTH=$AUTH: expected token or disabled" ;;
esac

# The pids of every process of this cluster: it has a file open under the cluster's
# temp dir (every Ray process logs there), runs in a directory under it (job
# drivers), or names it on its command line. Other Ray instances never match.
cluster_pids() {
    {
        find /proc/[0-9]*/fd /proc/[0-9]*/cwd -maxdepth 1 -lname "$STATE/*" 2>/dev/null |
            cut -d/ -f3 || true
        pgrep -f -- "$STATE/" || true
    } | { grep -vx -- "$$" || true; } | sort -un
}

port_busy() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

dashboard_up() {
    # 401/403 count as up: the dashboard answers and asks for the token.
    "$PY" -c '
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/version", timeout=2)
except urllib.error.HTTPError as e:
    sys.exit(0 if e.code in (401, 403) else 1)
except Exception:
    sys.exit(1)
' "$DASH_PORT"
}

ensure_token() {
    [[ "$AUTH" == token ]] || return 0
    if [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then return 0; fi
    if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
        [[ -s "$RAY_AUTH_TOKEN_PATH" ]] || die "RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH is missing or empty"
        return 0
    fi
    if [[ ! -s "$HOME/.ray/auth_token" ]]; then
        log "no Ray auth token yet: generating ~/.ray/auth_token"
        "$RAY" get-auth-token --generate >/dev/null
    fi
}

cmd_up() {
    if [[ -n "$(cluster_pids)" ]]; then
        log "already up ($STATE); dashboard http://$HOST:$DASH_PORT"
        return 0
    fi
    for port in "$GCS_PORT" "$DASH_PORT" "$CLIENT_PORT"; do
        if port_busy "$port"; then
            die "port $port on $HOST is in use by another program. Fix: choose free ports with HPSEARCH_LOCAL_GCS_PORT / HPSEARCH_LOCAL_DASHBOARD_PORT / HPSEARCH_LOCAL_CLIENT_PORT"
        fi
    done
    ensure_token
    mkdir -p "$HEAD_TEMP" "$WORKER_TEMP"
    log "starting the head node on $HOST:$GCS_PORT (dashboard $DASH_PORT, $HEAD_CPUS CPU, no GPU)"
    # Ports left to Ray (0 = any free port) so that two raylets, and any other Ray on
    # this machine, never compete for the defaults (52365, 10002-19999, ...).
    "$RAY" start --head \
        --node-ip-address "$HOST" --port "$GCS_PORT" \
        --include-dashboard true --dashboard-host "$HOST" --dashboard-port "$DASH_PORT" \
        --dashboard-agent-listen-port 0 --ray-client-server-port "$CLIENT_PORT" \
        --min-worker-port 0 --max-worker-port 0 \
        --num-cpus "$HEAD_CPUS" --num-gpus 0 \
        --object-store-memory "$OBJECT_STORE" \
        --temp-dir "$HEAD_TEMP" --node-name head --disable-usage-stats \
        >"$STATE/head.log" 2>&1 || {
        cat "$STATE/head.log" >&2
        die "the head node did not start (log: $STATE/head.log)"
    }
    log "starting the worker node ($WORKER_CPUS CPU, $WORKER_GPUS logical GPU)"
    "$RAY" start --address "$HOST:$GCS_PORT" \
        --node-ip-address "$HOST" \
        --dashboard-agent-listen-port 0 \
        --min-worker-port 0 --max-worker-port 0 \
        --num-cpus "$WORKER_CPUS" --num-gpus "$WORKER_GPUS" \
        --resources '{"gpu_node": 1}' \
        --object-store-memory "$OBJECT_STORE" \
        --temp-dir "$WORKER_TEMP" --node-name gpu-worker --disable-usage-stats \
        >"$STATE/worker.log" 2>&1 || {
        cat "$STATE/worker.log" >&2
        cmd_down
        die "the worker node did not start (log: $STATE/worker.log)"
    }
    for _ in $(seq 1 60); do
        if dashboard_up; then
            echo "Ray cluster up: 2 nodes, dashboard and Jobs API at http://$HOST:$DASH_PORT"
            echo "  hpsearch submit SPEC --address http://$HOST:$DASH_PORT --wait"
            return 0
        fi
        sleep 1
    done
    die "the dashboard did not answer on http://$HOST:$DASH_PORT (logs: $HEAD_TEMP/session_latest/logs/dashboard.*)"
}

cmd_down() {
    local pids
    pids="$(cluster_pids)"
    if [[ -z "$pids" ]]; then
        log "not running ($STATE)"
        return 0
    fi
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 8); do
        pids="$(cluster_pids)"
        [[ -z "$pids" ]] && break
        sleep 0.5
    done
    pids="$(cluster_pids)"
    if [[ -n "$pids" ]]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
    log "stopped ($STATE)"
}

cmd_status() {
    if [[ -z "$(cluster_pids)" ]]; then
        log "not running ($STATE)"
        return 1
    fi
    echo "dashboard / Jobs API: http://$HOST:$DASH_PORT"
    "$RAY" status --address "$HOST:$GCS_PORT"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 2
        ;;
esac
