#!/usr/bin/env bash
# Quick start: builds the project, starts a Console (SQLite, self-generated certificates) and a
# demo Defender protecting a sample workload, all on this machine. Ctrl-C stops everything.
# Data lives in ./defender-data (Console) and ./defender-agent-data (Defender); delete both to
# start afresh (the admin password is chosen again then).
#
# The workload (`defender-demo app`) gives every page something to show: it serves HTTP, spawns
# a short-lived child every 10 s (processes), calls itself and the Console every 5 s (network),
# and once, after 15 s, runs a shell from a non-shell process, which the default runtime policy
# audits (Monitor › Audits).
set -euo pipefail
cd "$(dirname "$0")/.."

HTTP_LISTEN="${CONSOLE_HTTP_LISTEN:-127.0.0.1:8083}"
GRPC_LISTEN="${CONSOLE_GRPC_LISTEN:-127.0.0.1:8084}"
DEMO_LISTEN="${DEMO_LISTEN:-127.0.0.1:8090}"
DATA_DIR="${CONSOLE_DATA_DIR:-./defender-data}"
AGENT_DIR="${DEFENDER_DATA_DIR:-./defender-agent-data}"

port_in_use() {
    (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}
for addr in "$HTTP_LISTEN" "$GRPC_LISTEN" "$DEMO_LISTEN"; do
    if port_in_use "$addr"; then
        cat >&2 <<MSG
$addr is already in use (the docker compose demo also listens on 127.0.0.1:8083, and a
Console started earlier may still run). Stop it, or choose other addresses, e.g.
    CONSOLE_HTTP_LISTEN=127.0.0.1:9083 CONSOLE_GRPC_LISTEN=127.0.0.1:9084 DEMO_LISTEN=127.0.0.1:9090 $0
MSG
        exit 1
    fi
done

echo "==> building (the first build takes a few minutes)"
cargo build --quiet --bins
TARGET_DIR="${CARGO_TARGET_DIR:-./target}"
BIN="$(cd "$TARGET_DIR/debug" && pwd)"

# A fresh data directory gets an admin password chosen here, so that it can be shown below; it
# reaches the Console through the environment, never the command line.
password_note=""
if [ ! -e "$DATA_DIR/console.db" ]; then
    CONSOLE_ADMIN_PASSWORD="$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
    export CONSOLE_ADMIN_PASSWORD
    password_note="password \"$CONSOLE_ADMIN_PASSWORD\" (chosen for this data directory)"
else
    password_note="the password chosen on the first start (reset: defender-console user set-password --data-dir $DATA_DIR)"
fi

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
unset CONSOLE_ADMIN_PASSWORD

# Wait until the Console answers (bounded), instead of guessing a delay.
up=""
for _ in $(seq 1 100); do
    if port_in_use "$HTTP_LISTEN"; then up=1; break; fi
    kill -0 "${pids[0]}" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$up" ]; then
    echo "the Console did not start (see its messages above)" >&2
    exit 1
fi

echo "==> creating an install bundle and starting a demo Defender"
INSTALL_BUNDLE="$("$BIN/defender-console" bundle --data-dir "$DATA_DIR" --console-addr "$GRPC_LISTEN" --description quickstart)"
INSTALL_BUNDLE="$INSTALL_BUNDLE" FARGATE_TASK=quickstart-demo "$BIN/defender" run --data-dir "$AGENT_DIR" -- \
    "$BIN/defender-demo" app --name quickstart --listen "$DEMO_LISTEN" \
    --target "http://$DEMO_LISTEN/slow?ms=1500" --target "http://$HTTP_LISTEN/healthz" \
    --shell-after 15s &
pids+=($!)

cat <<MSG

  ┌──────────────────────────────────────────────────────────────────────────────
  │ Console:  http://$HTTP_LISTEN
  │ Log in:   user "admin", $password_note
  │ Look at:  Manage › Defenders (the demo Defender, "Connected for …"), its page
  │           (processes, network), Monitor › Audits (one audit after ~15 s)
  │
  │ In another terminal, paste this to use the commands (or: cargo install --path console
  │ && cargo install --path agent, which puts them in ~/.cargo/bin):
  │     export PATH="$BIN:\$PATH" CONSOLE_DATA_DIR="$(cd "$DATA_DIR" && pwd)"
  │ then e.g.:
  │     defender-console token create          # an API token
  │     defender-console user set-password     # reset the admin password
  │
  │ Stop: Ctrl-C
  └──────────────────────────────────────────────────────────────────────────────

MSG
wait
