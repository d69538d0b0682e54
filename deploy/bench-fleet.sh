#!/usr/bin/env bash
# Fleet-scale benchmark (issue 16): how many Defenders one Console process holds at 10-second
# heartbeats, what that costs (CPU, memory per connected Defender), how the API answers
# meanwhile, whether any stream drops; then a reconnect storm after a Console restart.
#
#   cargo build --release -p defender-console -p defender
#   bash deploy/bench-fleet.sh                          # SQLite; PostgreSQL too when
#                                                       # CONSOLE_TEST_DATABASE_URL is set
#   FLEET_DEFENDERS=2000 FLEET_HOLD_SECS=60 bash deploy/bench-fleet.sh     # a quick run
#
# For each store it starts a release Console as its own process (`--heartbeat-interval 10s`),
# records its idle RSS and the API latency on an empty database, then starts
# `defender simulate --defenders N --events 1 --hold …` (split over several processes: each
# simulated Defender holds two descriptors and RLIMIT_NOFILE caps a process), waits until the
# Console lists N connected, and holds them for FLEET_HOLD_SECS. During the hold it reads the
# Console's CPU time and RSS from /proc/<pid>/stat and /proc/<pid>/status and times
# FLEET_API_SAMPLES requests of `GET /api/v1/defenders?limit=100` spread over the hold (with an
# API token from `defender-console token create`, passed to curl in a 0600 header file). At the
# end it checks the Console still lists N connected, counts the sessions that ended or started
# during the hold (Console side) and the stream drops `defender simulate` counted (Defender
# side): both are false disconnects. Baseline in the same run: the same requests on the same
# rows once every Defender is disconnected, as ratios.
#
# Reconnect storm: FLEET_STORM_DEFENDERS of the enrolled Defenders connect again with their
# identities (no enrollment), the Console is killed (SIGKILL) and started again on the same
# data; the time until every one has a new session and the Console's CPU seconds from its start
# until then are printed (mTLS handshakes with full certificate verification, session rows).
#
# Environment (all optional):
#   FLEET_DEFENDERS=25000  FLEET_HOLD_SECS=600  FLEET_API_SAMPLES=200  FLEET_STORM_DEFENDERS=5000
#   FLEET_DEFENDERS_PER_PROCESS=4000   simulated Defenders per `defender simulate` process
#   FLEET_STORES="sqlite postgres"     default: sqlite, plus postgres with the URL below
#   CONSOLE_TEST_DATABASE_URL          postgres:// URL of a user that may create databases
#                                      (deploy/pg-test-cluster.sh start sets it); a database is
#                                      created for the run and dropped after
#   FLEET_BIN_DIR=target/release       where defender-console and defender are
#   FLEET_WORK_DIR                     scratch directory (default: a new one under /tmp, removed)
set -euo pipefail

N=${FLEET_DEFENDERS:-25000}
HOLD=${FLEET_HOLD_SECS:-600}
SAMPLES=${FLEET_API_SAMPLES:-200}
STORM_N=${FLEET_STORM_DEFENDERS:-5000}
PER_PROC=${FLEET_DEFENDERS_PER_PROCESS:-4000}
BIN=$(cd "${FLEET_BIN_DIR:-target/release}" && pwd)
CONSOLE_BIN=$BIN/defender-console
DEFENDER_BIN=$BIN/defender
if [[ -z "${FLEET_STORES:-}" ]]; then
    FLEET_STORES=sqlite
    [[ -n "${CONSOLE_TEST_DATABASE_URL:-}" ]] && FLEET_STORES="sqlite postgres"
fi
((STORM_N <= N)) || STORM_N=$N
for b in "$CONSOLE_BIN" "$DEFENDER_BIN"; do
    [[ -x "$b" ]] || { echo "missing $b: cargo build --release -p defender-console -p defender" >&2; exit 1; }
done
for t in curl sqlite3 python3; do
    command -v $t >/dev/null || { echo "bench-fleet.sh needs $t" >&2; exit 1; }
done

if [[ -n "${FLEET_WORK_DIR:-}" ]]; then WORK=$FLEET_WORK_DIR; mkdir -p "$WORK"; KEEP=1; else WORK=$(mktemp -d /tmp/bench-fleet.XXXXXX); KEEP=; fi
CLK_TCK=$(getconf CLK_TCK)
CONSOLE_PID=
SIM_PIDS=()
PG_DB=
PG_ADMIN_URL=

cleanup() {
    for p in "${SIM_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    [[ -n "$CONSOLE_PID" ]] && kill -TERM "$CONSOLE_PID" 2>/dev/null || true
    sleep 1
    for p in "${SIM_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    [[ -n "$CONSOLE_PID" ]] && kill -KILL "$CONSOLE_PID" 2>/dev/null || true
    if [[ -n "$PG_DB" ]]; then psql "$PG_ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true; fi
    [[ -z "$KEEP" ]] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

log() { printf '%s [load %s] %s\n' "$(date -u +%H:%M:%S)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$*" >&2; }
now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU ticks of the local PostgreSQL server (postmaster and backends) when deploy/pg-test-cluster.sh
# started it (PG_TEST_DIR set); empty otherwise. Backends that exit take their time with them.
pg_ticks() {
    local pm f=${PG_TEST_DIR:-/nonexistent}/data/postmaster.pid
    [[ $STORE == postgres && -r $f ]] || return 0
    pm=$(head -1 "$f")
    for p in $pm $(pgrep -P "$pm"); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{t += $1} END {print t + 0}'
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# p50 and p99 (nearest rank) of the milliseconds in file $1.
percentiles() { sort -n "$1" | awk '{a[NR]=$1} END {i50=int(NR*0.50+0.999); i99=int(NR*0.99+0.999); if (i50<1) i50=1; if (i99<1) i99=1; printf "%.1f %.1f\n", a[i50], a[i99]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# One `GET /api/v1/defenders?limit=100`: prints "<ms> <X-Connected-Count>".
api_get() {
    local hdr
    hdr=$(mktemp "$WORK/hdr.XXXXXX")
    local t
    t=$(curl -sS -o /dev/null -D "$hdr" -w '%{time_total}' -H "@$WORK/auth-header" \
        "http://127.0.0.1:$HTTP_PORT/api/v1/defenders?limit=100") || t=
    local c
    c=$(awk -F': ' 'tolower($1)=="x-connected-count" {gsub("\r",""); print $2}' "$hdr")
    rm -f "$hdr"
    [[ -n "$t" ]] || { echo "fail 0"; return; }
    awk -v t="$t" -v c="${c:-0}" 'BEGIN { printf "%.2f %d\n", t * 1000, c }'
}
connected_count() { api_get | awk '{print $2}'; }

# SQL on the run's database (SQLite file or PostgreSQL), one value per line.
sql() {
    if [[ $STORE == sqlite ]]; then
        sqlite3 -cmd ".timeout 10000" "$DATA/console.db" "$1"
    else
        psql "$CONSOLE_DATABASE_URL" -qAtc "$1"
    fi
}

start_console() {
    CONSOLE_ADMIN_PASSWORD=bench-fleet-admin-password \
        "$CONSOLE_BIN" serve --data-dir "$DATA" \
        --grpc-listen "127.0.0.1:$GRPC_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
        --heartbeat-interval 10s --http-max-connections 64 \
        --enroll-limit-per-token 1000000:100000 --enroll-limit-per-source 1000000:100000 \
        >>"$DATA/console.log" 2>&1 &
    CONSOLE_PID=$!
    local deadline=$((SECONDS + 120))
    until curl -s -o /dev/null "http://127.0.0.1:$HTTP_PORT/"; do
        ((SECONDS < deadline)) || { tail -20 "$DATA/console.log" >&2; echo "Console did not start" >&2; exit 1; }
        kill -0 "$CONSOLE_PID" 2>/dev/null || { tail -20 "$DATA/console.log" >&2; echo "Console exited" >&2; exit 1; }
        sleep 0.2
    done
}

# Starts `defender simulate` processes for Defenders 0..$1-1 (data dirs reused: identities
# persist), holding for $2 seconds; their pids go to SIM_PIDS, logs to $WORK/sim-<k>.log.
start_simulate() {
    local total=$1 hold=$2 tag=$3 k=0 left=$1
    SIM_PIDS=()
    rm -f "$WORK/$tag"-*.out "$WORK/$tag"-*.log
    while ((left > 0)); do
        local n=$((left < PER_PROC ? left : PER_PROC))
        DEFENDER_LOG=warn INSTALL_BUNDLE_FILE="$WORK/bundle.b64" \
            "$DEFENDER_BIN" simulate --data-dir "$WORK/sim-$STORE-$k" --defenders "$n" --events 1 \
            --hold "${hold}s" >"$WORK/$tag-$k.out" 2>"$WORK/$tag-$k.log" &
        SIM_PIDS+=($!)
        left=$((left - n))
        k=$((k + 1))
    done
}

# Waits until every simulate process of SIM_PIDS printed its "holding" line.
wait_holding() {
    local tag=$1 deadline=$((SECONDS + $2)) k
    for ((k = 0; k < ${#SIM_PIDS[@]}; k++)); do
        until grep -q '^simulate: holding' "$WORK/$tag-$k.log" 2>/dev/null; do
            ((SECONDS < deadline)) || { echo "simulate $tag-$k did not reach its hold" >&2; tail -5 "$WORK/$tag-$k.log" >&2; exit 1; }
            kill -0 "${SIM_PIDS[$k]}" 2>/dev/null || { echo "simulate $tag-$k exited" >&2; tail -5 "$WORK/$tag-$k.log" >&2; exit 1; }
            sleep 1
        done
    done
}

# Ends the hold of every simulate process (SIGINT: summary printed); in this shell, which
# alone can wait for them.
stop_simulate() {
    for p in "${SIM_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${SIM_PIDS[@]}"; do wait "$p" || true; done
    SIM_PIDS=()
}

# Sums the hold figures of the simulate processes tagged $1: connected at start and end,
# disconnects, Defenders disconnected, RSS (MiB), processes.
sum_simulate() {
    local tag=$1
    cat "$WORK/$tag"-*.out | awk '
        /^simulate: hold=/ {
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2] + 0 }
            procs++
        }
        END {
            printf "%d %d %d %d %.1f %d\n", v["connected_at_start"], v["connected_at_end"], v["disconnects"], v["defenders_disconnected"], v["rss"], procs
        }'
}

run_store() {
    STORE=$1
    DATA=$WORK/console-$STORE
    mkdir -p "$DATA"
    GRPC_PORT=$(free_port)
    HTTP_PORT=$(free_port)
    unset CONSOLE_DATABASE_URL
    if [[ $STORE == postgres ]]; then
        PG_ADMIN_URL=$CONSOLE_TEST_DATABASE_URL
        PG_DB=bench_fleet_$$
        psql "$PG_ADMIN_URL" -qAtc "CREATE DATABASE $PG_DB" >/dev/null
        CONSOLE_DATABASE_URL=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$PG_ADMIN_URL" "$PG_DB")
        export CONSOLE_DATABASE_URL
    fi
    echo
    echo "== $STORE: $N Defenders, hold ${HOLD}s, heartbeat 10s ($(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo))"
    log "$STORE: starting the Console"
    start_console
    "$CONSOLE_BIN" token create --data-dir "$DATA" --name bench-fleet | (read -r tok; umask 077; printf 'Authorization: Bearer %s\n' "$tok" >"$WORK/auth-header")
    "$CONSOLE_BIN" bundle --data-dir "$DATA" --console-addr "127.0.0.1:$GRPC_PORT" -o "$WORK/bundle.b64" >/dev/null
    sleep 5
    local rss_idle start_cpu
    rss_idle=$(rss_kib "$CONSOLE_PID")
    start_cpu=$(awk -v c="$(cpu_ticks "$CONSOLE_PID")" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", c / hz }')
    : >"$WORK/lat-empty"
    for ((i = 0; i < SAMPLES; i++)); do api_get | awk '{print $1}' >>"$WORK/lat-empty"; done
    read -r e50 e99 < <(percentiles "$WORK/lat-empty")
    log "$STORE: idle RSS $((rss_idle / 1024)) MiB; API on an empty fleet p50 ${e50} ms p99 ${e99} ms"

    # Enrollment and first connection of N Defenders.
    local t_enroll c_enroll
    t_enroll=$(now_ms)
    c_enroll=$(cpu_ticks "$CONSOLE_PID")
    start_simulate "$N" $((HOLD + 3600)) hold
    local deadline=$((SECONDS + 3600)) seen=0
    while :; do
        seen=$(connected_count)
        ((seen >= N)) && break
        ((SECONDS < deadline)) || { echo "only $seen of $N connected after an hour" >&2; exit 1; }
        sleep 2
    done
    wait_holding hold 600
    local enroll_s enroll_cpu
    enroll_s=$(awk -v a="$t_enroll" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
    enroll_cpu=$(awk -v a="$c_enroll" -v b="$(cpu_ticks "$CONSOLE_PID")" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", (b - a) / hz }')
    log "$STORE: $N enrolled and connected in ${enroll_s}s; Console CPU ${enroll_cpu}s"

    # The hold.
    local failed=0 t0 c0 t1 c1 pg0 pg1 rss_sum=0 rss_max=0 rss_n=0 min_conn=$N
    t0=$(now_ms)
    c0=$(cpu_ticks "$CONSOLE_PID")
    pg0=$(pg_ticks)
    : >"$WORK/lat-hold"
    for ((i = 0; i < SAMPLES; i++)); do
        local due=$((t0 + (i + 1) * HOLD * 1000 / SAMPLES)) now
        read -r ms conn < <(api_get)
        if [[ $ms == fail ]]; then
            failed=$((failed + 1))
        else
            echo "$ms" >>"$WORK/lat-hold"
            ((conn < min_conn)) && min_conn=$conn
        fi
        local r
        r=$(rss_kib "$CONSOLE_PID")
        rss_sum=$((rss_sum + r)); rss_n=$((rss_n + 1)); ((r > rss_max)) && rss_max=$r
        now=$(now_ms)
        ((due > now)) && sleep "$(awk -v d=$((due - now)) 'BEGIN { printf "%.3f", d / 1000 }')"
    done
    t1=$(now_ms)
    c1=$(cpu_ticks "$CONSOLE_PID")
    pg1=$(pg_ticks)
    local end_conn ended started
    end_conn=$(connected_count)
    ended=$(sql "SELECT count(*) FROM sessions WHERE ended_at BETWEEN $t0 AND $t1")
    started=$(sql "SELECT count(*) FROM sessions WHERE started_at BETWEEN $t0 AND $t1")
    local cores rss_avg rss_per
    cores=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" -v ms=$((t1 - t0)) 'BEGIN { printf "%.3f", (b - a) / hz / (ms / 1000) }')
    rss_avg=$((rss_sum / rss_n))
    rss_per=$(awk -v a="$rss_avg" -v b="$rss_idle" -v n="$N" 'BEGIN { printf "%.1f", (a - b) / n }')
    read -r h50 h99 < <(percentiles "$WORK/lat-hold")
    stop_simulate
    read -r s_start s_end s_drops s_ddef s_rss s_procs < <(sum_simulate hold)
    log "$STORE: hold over"

    # Baseline: the same rows, nobody connected.
    local deadline2=$((SECONDS + 120))
    while (($(connected_count) > 0)) && ((SECONDS < deadline2)); do sleep 1; done
    : >"$WORK/lat-base"
    for ((i = 0; i < SAMPLES; i++)); do api_get | awk '{print $1}' >>"$WORK/lat-base"; done
    read -r b50 b99 < <(percentiles "$WORK/lat-base")

    echo "$STORE: enrollment + first connection of $N: ${enroll_s} s, Console CPU ${enroll_cpu} s ($(awk -v c="$enroll_cpu" -v n="$N" 'BEGIN { printf "%.2f", c * 1000 / n }') ms per Defender)"
    echo "$STORE: hold $(((t1 - t0) / 1000)) s with $N connected: Console CPU ${cores} cores on average (target < 1)${pg0:+; PostgreSQL server $(awk -v a="$pg0" -v b="$pg1" -v hz="$CLK_TCK" -v ms=$((t1 - t0)) 'BEGIN { printf "%.3f", (b - a) / hz / (ms / 1000) }') cores}"
    echo "$STORE: Console RSS idle $((rss_idle / 1024)) MiB, during the hold avg $((rss_avg / 1024)) MiB max $((rss_max / 1024)) MiB: ${rss_per} KiB per connected Defender"
    echo "$STORE: GET /api/v1/defenders?limit=100 during the hold ($SAMPLES spread): p50 ${h50} ms p99 ${h99} ms (target p99 < 100 ms), $failed failed"
    echo "$STORE:   baseline, same $N rows, 0 connected: p50 ${b50} ms p99 ${b99} ms -> hold/baseline p50 $(ratio "$h50" "$b50")x p99 $(ratio "$h99" "$b99")x"
    echo "$STORE:   empty fleet: p50 ${e50} ms p99 ${e99} ms"
    echo "$STORE: connected (API): fewest seen during the hold $min_conn, at its end $end_conn of $N"
    echo "$STORE: false disconnects: Console side $ended sessions ended and $started started during the hold; Defender side $s_drops stream drops ($s_ddef Defenders), $s_end of $s_start connected at the end (target 0)"
    echo "$STORE: defender simulate: $s_procs processes, RSS $(awk -v r="$s_rss" 'BEGIN { printf "%.0f", r }') MiB in all, $(awk -v r="$s_rss" -v n="$s_start" 'BEGIN { printf "%.1f", r * 1024 / n }') KiB per simulated Defender"

    # Reconnect storm.
    log "$STORE: reconnect storm with $STORM_N Defenders"
    local defenders_before
    defenders_before=$(sql "SELECT count(*) FROM defenders")
    start_simulate "$STORM_N" 3600 storm
    deadline=$((SECONDS + 600))
    while (($(connected_count) < STORM_N)); do
        ((SECONDS < deadline)) || { echo "storm Defenders did not connect" >&2; exit 1; }
        sleep 1
    done
    wait_holding storm 600
    sleep 12 # a heartbeat each, as in a steady fleet
    kill -KILL "$CONSOLE_PID"
    wait "$CONSOLE_PID" 2>/dev/null || true
    local t_kill t_start c_ready t_all
    t_kill=$(now_ms)
    start_console
    t_start=$(now_ms)
    local c_start=0 reconnected=0
    deadline=$((SECONDS + 600))
    while :; do
        reconnected=$(sql "SELECT count(DISTINCT defender_id) FROM sessions WHERE started_at >= $t_kill AND ended_at IS NULL")
        ((reconnected >= STORM_N)) && break
        ((SECONDS < deadline)) || break
        sleep 0.5
    done
    t_all=$(now_ms)
    c_ready=$(cpu_ticks "$CONSOLE_PID")
    local api_conn defenders_after
    api_conn=$(connected_count)
    defenders_after=$(sql "SELECT count(*) FROM defenders")
    stop_simulate
    read -r _ _ st_drops st_ddef _ _ < <(sum_simulate storm)
    local storm_cpu
    storm_cpu=$(awk -v c="$c_ready" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", c / hz }')
    echo "$STORE: reconnect storm: Console SIGKILLed with $STORM_N connected, started again: $reconnected of $STORM_N have a new session $(awk -v a="$t_kill" -v b="$t_all" 'BEGIN { printf "%.1f", (b - a) / 1000 }') s after the kill ($(awk -v a="$t_start" -v b="$t_all" 'BEGIN { printf "%.1f", (b - a) / 1000 }') s after the new Console answered; target all within 60 s); API lists $api_conn connected"
    echo "$STORE:   Console CPU from its start until all reconnected: ${storm_cpu} s (a fresh start on an empty database took ${start_cpu} s; $(awk -v c="$storm_cpu" -v n="$STORM_N" 'BEGIN { printf "%.2f", c * 1000 / n }') ms per reconnect: TLS 1.3 handshake with client certificate verification, ECDSA P-256, no resumption, plus the session row); enrollments: $((defenders_after - defenders_before)) new (none expected); Defender side: $st_drops stream drops"
    log "$STORE: done"

    kill -TERM "$CONSOLE_PID" 2>/dev/null || true
    wait "$CONSOLE_PID" 2>/dev/null || true
    CONSOLE_PID=
    if [[ $STORE == postgres ]]; then
        psql "$PG_ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
        PG_DB=
    fi
}

echo "bench-fleet: $(date -u +%FT%TZ) $(uptime)"
for s in $FLEET_STORES; do run_store "$s"; done
echo
echo "bench-fleet: finished $(date -u +%FT%TZ) $(uptime)"
