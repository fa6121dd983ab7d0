#!/usr/bin/env bash
# Start a real MLServer (Open Inference Protocol v2) on 127.0.0.1 for the
# conformance tests, serving the model dir produced by train.py.
#
#   start.sh <model_dir> <http_port> <grpc_port> <metrics_port>
#
# - <grpc_port>: gRPC cannot be switched off in MLServer 1.7; give it a free
#   port, or 0 to let the OS pick one (the log then says ":0", not the real port).
# - <metrics_port>: a free port, 0 (OS picks one), or "off" to disable the
#   Prometheus metrics server entirely.
# - Ready when GET http://127.0.0.1:<http_port>/v2/health/ready returns 200
#   (only after every model in <model_dir> has loaded).
# - The script execs mlserver, so the spawned PID *is* the server: SIGKILL
#   stops it at once; SIGTERM/SIGINT shut it down gracefully (~3 s).
# - Venv: $STREAMGATE_VENV (default /root/.cache/streamgate-venv), with
#   `pip install mlserver mlserver-sklearn scikit-learn joblib`.
set -euo pipefail

if [ "$#" -ne 4 ]; then
    echo "usage: $0 <model_dir> <http_port> <grpc_port> <metrics_port|off>" >&2
    exit 2
fi

model_dir=$(cd "$1" && pwd)
http_port=$2
grpc_port=$3
metrics_port=$4
venv=${STREAMGATE_VENV:-/root/.cache/streamgate-venv}

if [ ! -x "$venv/bin/mlserver" ]; then
    echo "start.sh: $venv/bin/mlserver not found; install with:" >&2
    echo "  python3 -m venv $venv && $venv/bin/pip install mlserver mlserver-sklearn scikit-learn joblib" >&2
    exit 127
fi
if [ ! -f "$model_dir/model-settings.json" ]; then
    echo "start.sh: $model_dir/model-settings.json missing (run train.py $model_dir first)" >&2
    exit 2
fi

# Drop any MLSERVER_* settings inherited from the caller so runs are reproducible.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(MLSERVER_[A-Za-z0-9_]*\)=.*/\1/p')

# MLSERVER_* env vars are read by pydantic-settings. NOTE: a key present in
# <model_dir>/settings.json wins over the env var, which is why train.py keeps
# host/ports out of settings.json.
export MLSERVER_HOST=127.0.0.1
export MLSERVER_HTTP_PORT="$http_port"
export MLSERVER_GRPC_PORT="$grpc_port"
if [ "$metrics_port" = "off" ]; then
    export MLSERVER_METRICS_ENDPOINT=""     # empty => metrics server not started
else
    export MLSERVER_METRICS_PORT="$metrics_port"
fi
export MLSERVER_PARALLEL_WORKERS=0          # no worker pool: one light process
export MLSERVER_DEBUG=false
# MLServer puts .envs/ and .metrics/ under the CWD when it needs them; keep
# them inside the (temporary) model dir.
cd "$model_dir"
exec "$venv/bin/mlserver" start "$model_dir"
