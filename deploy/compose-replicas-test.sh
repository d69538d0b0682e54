#!/usr/bin/env bash
# End-to-end test of deploy/docker-compose.replicas.yml (two Console replicas on PostgreSQL)
# with real containers, offline:
#
#   1. builds the images with deploy/build-images.sh (SKIP_BUILD=1 reuses them) and, as no
#      registry can be reached here, a PostgreSQL image from Debian's `postgresql` package with
#      deploy/build-postgres-image.sh, tagged `postgres:<its version>`: the compose file's own
#      image name (`postgres:${POSTGRES_VERSION:-16}`), run with POSTGRES_VERSION set to that
#      version, so the user-facing file stays the conventional one;
#   2. `compose up -d` under its own project name, both UIs on free localhost ports;
#   3. waits (deadline, polling) until both Defenders are connected with their task metadata as
#      seen through BOTH replicas' REST APIs (one API token, created inside console-a, works on
#      both: tokens are in the database), and have events stored;
#   4. finds the replica the `web` Defender holds its stream to (its log: "connected to the
#      Console console=…"), SIGKILLs that container (`docker kill`), and checks that every
#      Defender that was on it is connected to the other replica within 30 s, that a Defender
#      already on the survivor never shows disconnected, that all stay connected on the same
#      streams until 35 s after the kill (3 missed heartbeats would show a dead stream), and
#      that every Defender's events keep arriving with exactly seqs 1..max stored (no gap, no
#      duplicate);
#   5. starts the killed replica again and checks that its API shows both Defenders connected;
#   6. `compose down -v`, always (trap), even on failure (after printing the logs).
#
# Prints timings. Traffic stays on localhost and the compose network.
# Environment: SKIP_BUILD=1 reuses existing Console/Defender/demo images (the PostgreSQL image
# is rebuilt when it was built here, ~10 s); COMPOSE_TEST_TIMEOUT (s, default 1500) is the
# overall deadline; CARGO_TARGET_DIR as for deploy/build-images.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
overall=$((start + ${COMPOSE_TEST_TIMEOUT:-1500}))
failover_deadline=30

log() { printf '[compose-replicas-test %4ds] %s\n' $((SECONDS - start)) "$*"; }
fail() {
    log "FAIL: $*"
    exit 1
}
for tool in docker curl jq; do
    command -v "$tool" >/dev/null || fail "$tool is missing (deploy/install-deps.sh installs it)"
done

# Compose v2 plugin (`docker compose`) or standalone v1 (`docker-compose`).
if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose_cmd=(docker-compose)
else
    fail "neither \`docker compose\` nor \`docker-compose\` is installed"
fi
project="defender-replicas-test-$$"
compose() { "${compose_cmd[@]}" -p "$project" -f deploy/docker-compose.replicas.yml "$@"; }

# Free localhost ports for the replicas' UI/API, so a demo already running is no bother; below
# the kernel's ephemeral range (where port-0 listeners and outgoing connections of other tests
# on this machine take theirs), so none of them takes one between this check and `up`.
ephemeral_start="$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
[ "$ephemeral_start" -gt 21024 ] || ephemeral_start=61000
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % (ephemeral_start - 20000)))
        if [ "$p" != "${1:-}" ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    return 1
}
CONSOLE_A_PORT="$(free_port)" || fail "no free port"
CONSOLE_B_PORT="$(free_port "$CONSOLE_A_PORT")" || fail "no free port"
export CONSOLE_A_PORT CONSOLE_B_PORT
declare -A api=(
    [console-a]="http://127.0.0.1:$CONSOLE_A_PORT/api/v1"
    [console-b]="http://127.0.0.1:$CONSOLE_B_PORT/api/v1"
)
other_replica() { if [ "$1" = console-a ]; then echo console-b; else echo console-a; fi; }

# ---- images -------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-}" != 1 ]; then
    log "building images offline (deploy/build-images.sh)"
    t=$SECONDS
    timeout $((overall - SECONDS)) bash deploy/build-images.sh
    log "images built in $((SECONDS - t))s"
fi
tag="${IMAGE_TAG:-latest}"
for image in defender console demo; do
    docker image inspect "fargate-defender/$image:$tag" >/dev/null 2>&1 ||
        fail "image fargate-defender/$image:$tag is missing (run without SKIP_BUILD=1)"
done
t=$SECONDS
pg_image="$(bash deploy/build-postgres-image.sh)" || fail "could not build the PostgreSQL image"
POSTGRES_VERSION="${pg_image#postgres:}"
export POSTGRES_VERSION
log "PostgreSQL image $pg_image ready in $((SECONDS - t))s (the compose file's postgres:\${POSTGRES_VERSION}, built from Debian's package: no registry here)"

# ---- the replicas -------------------------------------------------------------------------
cleanup() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        log "--- compose ps / logs (failure) ---"
        compose ps || true
        compose logs --tail=60 --no-color || true
    fi
    log "compose down -v"
    compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || compose down -v -t 5 || true
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t_up=$SECONDS
log "compose up -d (project $project, console-a on 127.0.0.1:$CONSOLE_A_PORT, console-b on 127.0.0.1:$CONSOLE_B_PORT)"
compose up -d --no-build

# Polls `check` (a function) every second until it succeeds or `secs` (bounded by the overall
# deadline) pass; the last failure reason is in $why.
why=""
wait_for() {
    local what="$1" secs="$2" check="$3" until=$((SECONDS + $2))
    [ "$until" -le "$overall" ] || until=$overall
    while ! "$check"; do
        [ "$SECONDS" -lt "$until" ] || fail "$what: not within ${secs}s ($why)"
        sleep 1
    done
}

token=""
make_token() {
    token="$(compose exec -T console-a /usr/local/bin/defender-console token create 2>/dev/null | tr -d '\r\n')" &&
        [ -n "$token" ] || {
        why="no API token yet"
        return 1
    }
}
wait_for "API token" 90 make_token

# get REPLICA PATH
get() { curl -sf --max-time 10 -H "Authorization: Bearer $token" "${api[$1]}/$2"; }

# All seqs a Defender's events have, oldest first (pages of 1000, newest first, `before` cursor).
all_seqs() {
    local replica="$1" id="$2" before="" page
    while :; do
        page="$(get "$replica" "defenders/$id/events?limit=1000${before:+&before=$before}")" || return 1
        [ "$(jq length <<<"$page")" -gt 0 ] || break
        jq -r '.[].seq' <<<"$page"
        before="$(jq '[.[].seq] | min' <<<"$page")"
        [ "$(jq length <<<"$page")" -eq 1000 ] || break
    done | sort -n
}

# Both Defenders connected with their task metadata, as `replica` sees them.
defenders=""
connected_on() {
    local replica="$1" n
    defenders="$(get "$replica" defenders)" || {
        why="$replica's API not answering"
        return 1
    }
    n="$(jq '[.[] | select(.connected and .cluster == "demo"
            and (.task_arn | startswith("arn:aws:ecs:eu-west-1:123456789012:task/demo/")))] | length' <<<"$defenders")"
    why="$replica: $(jq -c '[.[] | {family, mode, status}]' <<<"$defenders")"
    [ "$n" -eq 2 ] &&
        [ "$(jq -r '[.[] | "\(.family)/\(.mode)/\(.revision)"] | sort | join(",")' <<<"$defenders")" = "api/sidecar/7,web/embedded/3" ]
}
connected_on_a() { connected_on console-a; }
connected_on_b() { connected_on console-b; }
wait_for "both Defenders connected (console-a's API)" 120 connected_on_a
wait_for "both Defenders connected (console-b's API)" 30 connected_on_b
id_of() { jq -r --arg f "$1" '.[] | select(.family == $f) | .id' <<<"$defenders"; }
declare -A id=([web]="$(id_of web)" [api]="$(id_of api)")
log "both Defenders connected, on both replicas' APIs, $((SECONDS - t_up))s after up: web=${id[web]} api=${id[api]}"

# Events stored for both (read through the other replica than the one that wrote them, too).
has_events() {
    local f
    for f in web api; do
        for r in console-a console-b; do
            [ "$(get "$r" "defenders/${id[$f]}/events?limit=1" | jq 'length')" = 1 ] || {
                why="no event of $f on $r yet"
                return 1
            }
        done
    done
}
wait_for "events of both Defenders" 90 has_events

# The replica a Defender's sidecar holds its stream to: the last "connected to the Console"
# line of its log (console=HOST:PORT), after `since` (RFC 3339) when given.
replica_of() {
    local svc="$1" since="${2:-}" line
    line="$(docker logs ${since:+--since "$since"} "$(compose ps -q "$svc")" 2>&1 |
        grep 'connected to the Console' | tail -n1)"
    sed -n 's/.*console=\(console-[ab]\):8084.*/\1/p' <<<"$line"
}
declare -A on
for f in web api; do
    on[$f]="$(replica_of "$f-defender")"
    [ -n "${on[$f]}" ] || fail "$f-defender's log names no Console it connected to"
done
victim="${on[web]}"
survivor="$(other_replica "$victim")"
log "web is connected to ${on[web]}, api to ${on[api]}: killing $victim"

# Before the kill, as the survivor sees it.
defenders="$(get "$survivor" defenders)" || fail "$survivor's API not answering"
declare -A before_seq since_before
for f in web api; do
    before_seq[$f]="$(get "$survivor" "defenders/${id[$f]}/events?limit=1" | jq '.[0].seq // 0')"
    since_before[$f]="$(jq -r --arg id "${id[$f]}" '.[] | select(.id == $id) | .connected_since' <<<"$defenders")"
done

# The API's connected_since is derived at each request from the stream's monotonic open time
# (robust to clock steps), so it moves by a few ms between heartbeats: the same stream is a
# connected_since within 1 s, and (below) no new "connected to the Console" in the sidecar's log.
same_stream() {
    local a b
    a="$(date -d "$1" +%s%3N 2>/dev/null)" && b="$(date -d "$2" +%s%3N 2>/dev/null)" || return 1
    [ $((a > b ? a - b : b - a)) -lt 1000 ]
}
# Lines of `svc`'s log since `since` (RFC 3339) that say the link (re)connected.
connects_since() {
    docker logs --since "$2" "$(compose ps -q "$1")" 2>&1 | grep -c 'connected to the Console' || true
}

# ---- SIGKILL one replica ------------------------------------------------------------------
kill_ms="$(date +%s%3N)"
kill_time="$(date -u -d "@${kill_ms:0:-3}" +%Y-%m-%dT%H:%M:%SZ)"
t_kill=$SECONDS
docker kill -s KILL "$(compose ps -q "$victim")" >/dev/null
log "$victim SIGKILLed (stored so far: web 1..${before_seq[web]}, api 1..${before_seq[api]})"

# Every Defender that was on the victim: connected again, on the survivor, on a stream started
# after the kill; every Defender that was on the survivor: connected all along, same stream.
declare -A reconnected_after
failed_over() {
    local d f since conn all=0
    d="$(get "$survivor" defenders)" || {
        why="$survivor's API not answering"
        return 1
    }
    for f in web api; do
        conn="$(jq -r --arg id "${id[$f]}" '.[] | select(.id == $id) | .connected' <<<"$d")"
        since="$(jq -r --arg id "${id[$f]}" '.[] | select(.id == $id) | .connected_since // ""' <<<"$d")"
        if [ "${on[$f]}" = "$survivor" ]; then
            [ "$conn" = true ] && same_stream "$since" "${since_before[$f]}" ||
                fail "$f, on $survivor, flapped while $victim died: connected=$conn since=$since (was ${since_before[$f]})"
            continue
        fi
        if [ "$conn" = true ] && [[ "${since:0:19}" > "${kill_time:0:19}" || "${since:0:19}" == "${kill_time:0:19}" ]] &&
            [ "$(replica_of "$f-defender" "$kill_time")" = "$survivor" ]; then
            # From the kill to the start of the new stream, as the survivor recorded it.
            [ -n "${reconnected_after[$f]:-}" ] ||
                reconnected_after[$f]="$(awk -v a="$(date -d "$since" +%s%3N)" -v b="$kill_ms" \
                    'BEGIN { printf "%.1f", (a - b) / 1000 }')"
        else
            all=1
            why="$f: connected=$conn since=$since on $survivor's API"
        fi
    done
    return "$all"
}
wait_for "Defenders of $victim connected to $survivor" "$failover_deadline" failed_over
moved=""
for f in web api; do
    if [ "${on[$f]}" = "$victim" ]; then
        moved+="$f on $survivor ${reconnected_after[$f]}s after the kill; "
    else
        moved+="$f stayed on $survivor, connected throughout; "
    fi
done
log "failover: ${moved%; } (seen by this poll $((SECONDS - t_kill))s after the kill)"

# Steady on the survivor for longer than a dead stream takes to count as disconnected (3
# missed heartbeats of 10 s): every Defender stays connected on the same stream (no flap, no
# bouncing back and forth), as the survivor sees it.
defenders="$(get "$survivor" defenders)" || fail "$survivor's API not answering"
declare -A since_after
for f in web api; do
    since_after[$f]="$(jq -r --arg id "${id[$f]}" '.[] | select(.id == $id) | .connected_since' <<<"$defenders")"
done
steady_until=$((t_kill + 35))
log "watching both Defenders on $survivor until 35s after the kill"
while [ "$SECONDS" -lt "$steady_until" ]; do
    d="$(get "$survivor" defenders)" || fail "$survivor's API stopped answering"
    for f in web api; do
        state="$(jq -r --arg id "${id[$f]}" '.[] | select(.id == $id) | "\(.connected) \(.connected_since)"' <<<"$d")"
        [ "${state%% *}" = true ] && same_stream "${state#* }" "${since_after[$f]}" ||
            fail "$f flapped on $survivor $((SECONDS - t_kill))s after the kill: connected, since = $state (was true ${since_after[$f]})"
    done
    sleep 1
done
# One new stream since the kill for each Defender that was on the victim, none for the others.
for f in web api; do
    want=0
    [ "${on[$f]}" = "$victim" ] && want=1
    n="$(connects_since "$f-defender" "$kill_time")"
    [ "$n" = "$want" ] || fail "$f-defender connected $n times since the kill (expected $want)"
done
log "both Defenders connected throughout, same streams (the sidecars' logs agree)"

# Events keep arriving, and each Defender stored exactly seqs 1..max: nothing in flight or
# spooled when the replica died was lost, nothing stored twice.
caught_up=""
no_gap() {
    local f="$1" seqs count max after
    seqs="$(all_seqs "$survivor" "${id[$f]}")" || {
        why="events of $f not answering"
        return 1
    }
    count="$(grep -c . <<<"$seqs")"
    max="$(tail -n1 <<<"$seqs")"
    after="$(get "$survivor" "defenders/${id[$f]}/events?limit=1000&since=$kill_time" | jq length)" || return 1
    why="$f: $count events, max seq $max (before the kill: ${before_seq[$f]}), $after observed since the kill"
    caught_up="seqs 1..$max, no gap, no duplicate (${before_seq[$f]} before the kill, $after observed since)"
    [ "$max" -gt "${before_seq[$f]}" ] && [ "$after" -gt 0 ] && [ "$(head -n1 <<<"$seqs")" = 1 ] &&
        [ "$count" = "$max" ] && [ "$(uniq <<<"$seqs" | grep -c .)" = "$count" ]
}
web_caught_up() { no_gap web; }
api_caught_up() { no_gap api; }
wait_for "web: events keep arriving, no gap" 60 web_caught_up
log "web: $caught_up ($((SECONDS - t_kill))s after the kill)"
wait_for "api: events keep arriving, no gap" 60 api_caught_up
log "api: $caught_up ($((SECONDS - t_kill))s after the kill)"

# ---- the killed replica comes back --------------------------------------------------------
t_back=$SECONDS
compose start "$victim" >/dev/null 2>&1
victim_sees_both() { connected_on "$victim"; }
wait_for "$victim back, showing both Defenders connected" 60 victim_sees_both
log "$victim restarted; its API shows both Defenders connected after $((SECONDS - t_back))s"

jq -e 'all(.[]; .dropped_events == 0)' <<<"$(get "$survivor" defenders)" >/dev/null ||
    fail "a Defender dropped events"

log "PASS in $((SECONDS - start))s (compose part $((SECONDS - t_up))s; failover: ${moved%; })"
