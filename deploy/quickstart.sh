#!/usr/bin/env bash
# Quick start: builds the project, starts a Console (SQLite, self-generated certificates) and a
# demo Defender running a sample workload, all on this machine. Ctrl-C stops everything.
# Data lives in ./defender-data (Console) and ./defender-agent-data (Defender); delete them to
# start afresh.
set -euo pipefail
cd "$(dirname "$0")/.."

HTTP_LISTEN="${CONSOLE_HTTP_LISTEN:-127.0.0.1:8083}"
GRPC_LISTEN="${CONSOLE_GRPC_LISTEN:-127.0.0.1:8084}"
DATA_DIR="${CONSOLE_DATA_DIR:-./defender-data}"
AGENT_DIR="${DEFENDER_DATA_DIR:-./defender-agent-data}"

echo "==> building (first build takes a few minutes)"
cargo build --quiet --bins
BIN="${CARGO_TARGET_DIR:-./target}/debug"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "==> starting the Console (UI on http://$HTTP_LISTEN)"
"$BIN/defender-console" serve --data-dir "$DATA_DIR" \
    --http-listen "$HTTP_LISTEN" --grpc-listen "$GRPC_LISTEN" &
pids+=($!)

# Wait until the Console answers (bounded), instead of guessing a delay.
up=""
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/${HTTP_LISTEN%:*}/${HTTP_LISTEN##*:}") 2>/dev/null; then up=1; break; fi
    kill -0 "${pids[0]}" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$up" ]; then
    echo "the Console did not start (see its messages above)" >&2
    exit 1
fi

echo "==> creating an install bundle and starting a demo Defender"
BUNDLE="$("$BIN/defender-console" bundle --data-dir "$DATA_DIR" --console-addr "$GRPC_LISTEN" --description quickstart)"
INSTALL_BUNDLE="$BUNDLE" FARGATE_TASK=quickstart-demo "$BIN/defender" run --data-dir "$AGENT_DIR" -- \
    sh -c 'echo "demo workload running (pid $$)"; while true; do sleep 5; done' &
pids+=($!)

cat <<MSG

    Console:   http://$HTTP_LISTEN   (Manage > Defenders shows the demo Defender as "Connected for …")
    Login:     user "admin"; the password was printed above on first start
               (set CONSOLE_ADMIN_PASSWORD before the first start to choose it).
    Stop:      Ctrl-C

MSG
wait
