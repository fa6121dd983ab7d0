#!/usr/bin/env bash
# Proxy overhead of the streamgate gateway on loopback, against the same fast mock backend
# called directly, through a bare hyper+reqwest proxy, LiteLLM proxy, Portkey's gateway and
# TensorZero's gateway. Writes benches/RESULTS-gateway.md. See benches/gateway/README.md.
#
# Environment (all optional):
#   BENCH_SECONDS=12             length of each measurement point
#   BENCH_RATES="500 2000"       fixed request rates (req/s)
#   BENCH_CONNECTIONS=64         oha connections
#   BENCH_TARGETS="direct bare streamgate litellm portkey tensorzero"
#   STREAMGATE_BIN=...           use this binary instead of building the release one
#   STREAMGATE_REV=...           what to call that binary's source in the results
#   STREAMGATE_BENCH_VENV=...    Python venv for LiteLLM and TensorZero
#   STREAMGATE_BENCH_NODE=...    npm prefix for Portkey's gateway
#   BENCH_RESULTS=...            where to write the results (default benches/RESULTS-gateway.md)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
POINT_SECONDS=${BENCH_SECONDS:-12}
RATES=${BENCH_RATES:-"500 2000"}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
TARGETS=${BENCH_TARGETS:-"direct bare streamgate litellm portkey tensorzero"}
VENV=${STREAMGATE_BENCH_VENV:-$HOME/.cache/streamgate-bench-venv}
NODE_DIR=${STREAMGATE_BENCH_NODE:-$HOME/.cache/streamgate-bench-node}
RESULTS=${BENCH_RESULTS:-$ROOT/benches/RESULTS-gateway.md}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/streamgate-target}
export PATH="$HOME/.cargo/bin:$PATH"

WORK=$(mktemp -d /tmp/streamgate-gateway-bench.XXXXXX)
POINTS=$WORK/points.jsonl
NOTES=$WORK/notes.md
VERSIONS=$WORK/versions.txt
: >"$POINTS"
: >"$NOTES"
: >"$VERSIONS"
SERVICE_PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# A problem worth keeping in the results (a competitor that could not be installed or run).
note() {
  log "NOTE: $1"
  printf -- '- **%s**: %s\n' "$1" "$2" >>"$NOTES"
}

note_failure() { # name, command, log file
  local tail_text
  tail_text=$(tail -n 15 "$3" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' || true)
  note "$1" "\`$2\` failed:"$'\n\n      '"${tail_text//$'\n'/$'\n      '}"$'\n'
}

version() { printf '%s: %s\n' "$1" "$2" >>"$VERSIONS"; }

stop_service() { # pid: each service runs in its own session, so its whole group is stopped
  local pid=$1
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${SERVICE_PIDS[@]}"; do stop_service "$pid"; done
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME CMD...: runs CMD in its own session with output in $WORK/NAME.{out,err}; sets PID.
start() {
  local name=$1
  shift
  setsid "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null &
  PID=$!
  SERVICE_PIDS+=("$PID")
}

# wait_url NAME PID: waits for the `url=...` line a service prints once listening; sets URL.
wait_url() {
  local name=$1 pid=$2
  for _ in $(seq 1 600); do
    if URL=$(grep -m1 -o 'url=[^[:space:]]*' "$WORK/$name.out" 2>/dev/null); then
      URL=${URL#url=}
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# wait_ready NAME PID URL BODY_FILE [HEADER...]: polls the real route until it answers 2xx.
wait_ready() {
  local name=$1 pid=$2 url=$3 body=$4
  shift 4
  local args=(-s -o "$WORK/$name.probe" -w '%{http_code}' -X POST -H 'content-type: application/json' --data-binary "@$body" --max-time 5)
  local h
  for h in "$@"; do args+=(-H "$h"); done
  local code
  for _ in $(seq 1 1200); do
    code=$(curl "${args[@]}" "$url" 2>/dev/null || true)
    [[ $code == 2* ]] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# bench TARGET PROTOCOL URL BODY_FILE PID [HEADER...]: warm-up, fixed rates, then maximum.
bench() {
  local target=$1 protocol=$2 url=$3 body=$4 pid=$5
  shift 5
  local headers=() h rate
  for h in "$@"; do headers+=(--header "$h"); done
  local common=(--out "$POINTS" --target "$target" --protocol "$protocol" --url "$url"
    --body-file "$body" --pid "$pid" --backend-pid "$MOCK_PID" --connections "$CONNECTIONS"
    "${headers[@]}")
  log "$target $protocol: warm-up"
  python3 "$HERE/measure.py" "${common[@]}" --max --seconds 3 --warmup
  for rate in $RATES; do
    python3 "$HERE/measure.py" "${common[@]}" --rate "$rate" --seconds "$POINT_SECONDS"
  done
  python3 "$HERE/measure.py" "${common[@]}" --max --seconds "$POINT_SECONDS"
}

wants() { [[ " $TARGETS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------
# Tools
log "work folder: $WORK"
if ! command -v oha >/dev/null; then
  log "installing oha (cargo install oha --locked)"
  cargo install oha --locked
fi
version oha "$(oha --version)"

if [[ -n ${STREAMGATE_BIN:-} ]]; then
  SG=$STREAMGATE_BIN
else
  log "building streamgate (release)"
  (cd "$ROOT" && cargo build --release --bin streamgate)
  SG=$CARGO_TARGET_DIR/release/streamgate
fi
if [[ -z ${STREAMGATE_REV:-} ]]; then
  STREAMGATE_REV="git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  if [[ -n $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    STREAMGATE_REV+=" with uncommitted changes"
  fi
fi
version streamgate "$("$SG" --version 2>/dev/null || echo '?') ($STREAMGATE_REV; release build)"
version rustc "$(rustc --version)"

BARE=""
if wants bare; then
  log "building the bare hyper+reqwest proxy"
  mkdir -p "$WORK/bare-proxy"
  cp -r "$HERE/bare-proxy/." "$WORK/bare-proxy/"
  cp "$ROOT/Cargo.lock" "$WORK/bare-proxy/Cargo.lock"
  if (cd "$WORK/bare-proxy" && CARGO_TARGET_DIR=$HOME/.cache/streamgate-bench-bare-target \
    cargo build --release) >"$WORK/bare-build.log" 2>&1; then
    BARE=$HOME/.cache/streamgate-bench-bare-target/release/bare-proxy
  else
    note_failure "bare proxy" "cargo build --release (benches/gateway/bare-proxy)" "$WORK/bare-build.log"
  fi
fi

PY_OK=0
if wants litellm || wants tensorzero; then
  if ! "$VENV/bin/python" -c 'import litellm.proxy.proxy_server, tensorzero' >/dev/null 2>&1; then
    log "installing litellm[proxy] and tensorzero into $VENV"
    if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'litellm[proxy]' tensorzero; } \
      >"$WORK/pip.log" 2>&1; then
      note_failure "LiteLLM / TensorZero" "pip install 'litellm[proxy]' tensorzero" "$WORK/pip.log"
    fi
  fi
  if "$VENV/bin/python" -c 'import litellm.proxy.proxy_server, tensorzero' >/dev/null 2>&1; then
    PY_OK=1
    version python "$("$VENV/bin/python" --version)"
    version litellm "$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("litellm"))')"
    version tensorzero "$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("tensorzero"))')"
    version uvicorn "$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("uvicorn"))')"
  fi
fi

PORTKEY_JS=$NODE_DIR/node_modules/@portkey-ai/gateway/build/start-server.js
if wants portkey; then
  if [[ ! -f $PORTKEY_JS ]]; then
    log "installing @portkey-ai/gateway into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    if ! npm install --prefix "$NODE_DIR" --no-audit --no-fund @portkey-ai/gateway >"$WORK/npm.log" 2>&1; then
      note_failure "Portkey" "npm install @portkey-ai/gateway" "$WORK/npm.log"
    fi
  fi
  if [[ -f $PORTKEY_JS ]]; then
    version node "$(node --version)"
    version "@portkey-ai/gateway" "$(node -p "require('$NODE_DIR/node_modules/@portkey-ai/gateway/package.json').version")"
  fi
fi

# ---------------------------------------------------------------------------------------------
# Backend and request bodies
version "load average before the measurements (1/5/15 min)" "$(cut -d' ' -f1-3 /proc/loadavg)"
start mock "$SG" --log-level warn mock-model --listen 127.0.0.1:0
MOCK_PID=$PID
wait_url mock "$MOCK_PID" || { cat "$WORK/mock.err" >&2; exit 1; }
MOCK=$URL
log "mock backend at $MOCK (pid $MOCK_PID)"

OIP_BODY=$WORK/oip.json
echo '{"inputs":[{"name":"amount","shape":[1],"datatype":"FP64","data":[12.5]}]}' >"$OIP_BODY"
chat_body() { # model -> file
  local file="$WORK/chat-${1//[^a-zA-Z0-9]/_}.json"
  printf '{"model":"%s","messages":[{"role":"user","content":"hi"}]}\n' "$1" >"$file"
  echo "$file"
}

wait_ready mock "$MOCK_PID" "$MOCK/v2/models/scorer/infer" "$OIP_BODY"

# ---------------------------------------------------------------------------------------------
# Targets, one at a time (the others stopped) so nothing else competes for the two cores.
if wants direct; then
  # The backend itself is the "gateway" here: its CPU is what the point reports.
  body=$(chat_body mock-chat)
  bench direct oip "$MOCK/v2/models/scorer/infer" "$OIP_BODY" "$MOCK_PID"
  bench direct chat "$MOCK/v1/chat/completions" "$body" "$MOCK_PID"
fi

if wants bare && [[ -n $BARE ]]; then
  start bare "$BARE" 127.0.0.1:0 "$MOCK"
  if wait_url bare "$PID" && wait_ready bare "$PID" "$URL/v2/models/scorer/infer" "$OIP_BODY"; then
    body=$(chat_body mock-chat)
    bench bare oip "$URL/v2/models/scorer/infer" "$OIP_BODY" "$PID"
    bench bare chat "$URL/v1/chat/completions" "$body" "$PID"
  else
    note_failure "bare proxy" "bare-proxy 127.0.0.1:0 $MOCK" "$WORK/bare.err"
  fi
  stop_service "$PID"
fi

if wants streamgate; then
  SG_AUTH="authorization: Bearer sg-bench-key"
  start streamgate env MOCK_URL="$MOCK" "$SG" --log-level warn serve --config "$HERE/streamgate.yaml" --listen 127.0.0.1:0
  if wait_url streamgate "$PID" && wait_ready streamgate "$PID" "$URL/v2/models/scorer/infer" "$OIP_BODY" "$SG_AUTH"; then
    body=$(chat_body chat)
    bench streamgate oip "$URL/v2/models/scorer/infer" "$OIP_BODY" "$PID" "$SG_AUTH"
    bench streamgate chat "$URL/v1/chat/completions" "$body" "$PID" "$SG_AUTH"
  else
    note_failure "streamgate" "streamgate serve --config benches/gateway/streamgate.yaml" "$WORK/streamgate.err"
  fi
  stop_service "$PID"
fi

if wants litellm && [[ $PY_OK == 1 ]]; then
  port=$(free_port)
  LL_AUTH="authorization: Bearer sk-bench-master-key"
  # Two uvicorn workers, one per core (LiteLLM's advice: as many workers as cores). The local
  # model cost map avoids a fetch from the internet at start.
  start litellm env MOCK_OPENAI_BASE="$MOCK/v1" LITELLM_LOG=ERROR LITELLM_LOCAL_MODEL_COST_MAP=True \
    "$VENV/bin/litellm" --config "$HERE/litellm.yaml" --host 127.0.0.1 --port "$port" --num_workers 2
  body=$(chat_body bench-chat)
  if wait_ready litellm "$PID" "http://127.0.0.1:$port/v1/chat/completions" "$body" "$LL_AUTH"; then
    bench litellm chat "http://127.0.0.1:$port/v1/chat/completions" "$body" "$PID" "$LL_AUTH"
  else
    note_failure "LiteLLM" "litellm --config benches/gateway/litellm.yaml --num_workers 2" "$WORK/litellm.err"
  fi
  stop_service "$PID"
fi

if wants portkey && [[ -f $PORTKEY_JS ]]; then
  port=$(free_port)
  PK_HEADERS=("x-portkey-provider: openai" "x-portkey-custom-host: $MOCK/v1" "authorization: Bearer sk-dummy-backend-key")
  start portkey env NODE_ENV=production node "$PORTKEY_JS" "--port=$port" --headless
  body=$(chat_body mock-chat)
  if wait_ready portkey "$PID" "http://127.0.0.1:$port/v1/chat/completions" "$body" "${PK_HEADERS[@]}"; then
    bench portkey chat "http://127.0.0.1:$port/v1/chat/completions" "$body" "$PID" "${PK_HEADERS[@]}"
  else
    note_failure "Portkey" "node start-server.js --port=$port --headless" "$WORK/portkey.err"
  fi
  stop_service "$PID"
fi

if wants tensorzero && [[ $PY_OK == 1 ]]; then
  sed "s|@MOCK_OPENAI_BASE@|$MOCK/v1/|" "$HERE/tensorzero.toml.in" >"$WORK/tensorzero.toml"
  start tensorzero env RUST_LOG=warn "$VENV/bin/python" "$HERE/tensorzero_gateway.py" "$WORK/tensorzero.toml"
  body=$(chat_body tensorzero::model_name::mock)
  if wait_url tensorzero "$PID" && wait_ready tensorzero "$PID" "$URL/chat/completions" "$body"; then
    bench tensorzero chat "$URL/chat/completions" "$body" "$PID"
  else
    note_failure "TensorZero" "python benches/gateway/tensorzero_gateway.py tensorzero.toml" "$WORK/tensorzero.err"
  fi
  stop_service "$PID"
fi

stop_service "$MOCK_PID"

# ---------------------------------------------------------------------------------------------
version "load average after the measurements (1/5/15 min)" "$(cut -d' ' -f1-3 /proc/loadavg)"
version kernel "$(uname -r)"
version cpu "$(lscpu | sed -n 's/^Model name:[[:space:]]*//p') × $(nproc) cores"
python3 "$HERE/report.py" --points "$POINTS" --notes "$NOTES" --versions "$VERSIONS" \
  --seconds "$POINT_SECONDS" --connections "$CONNECTIONS" --out "$RESULTS"
cp "$POINTS" "$WORK/points-final.jsonl"
log "wrote $RESULTS (raw points: $POINTS)"
