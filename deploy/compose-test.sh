#!/usr/bin/env bash
# End-to-end test of the docker compose demo with real containers, offline:
#
#   1. builds the images with deploy/build-images.sh (no registry needed);
#   2. `compose up -d` the demo under its own project name and a free localhost port;
#   3. waits (deadline, polling the REST API) until both Defenders are connected with their task
#      metadata and their events show the demo's processes and connections;
#   4. stops the Console for 30 s while the apps keep working, starts it again, and waits until
#      both Defenders have reconnected by themselves, caught up, and stored exactly seqs 1..max
#      (no gap: nothing spooled during the outage was lost), and their health checks pass;
#   5. `compose down -v`, always (trap), even on failure (after printing the logs).
#
# Prints image sizes and timings. Traffic stays on localhost and the compose network.
# Environment: SKIP_BUILD=1 reuses existing images; COMPOSE_TEST_TIMEOUT (s, default 1500) is
# the overall deadline; CARGO_TARGET_DIR as for deploy/build-images.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
overall=$((start + ${COMPOSE_TEST_TIMEOUT:-1500}))
outage=30

log() { printf '[compose-test %4ds] %s\n' $((SECONDS - start)) "$*"; }
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
project="defender-compose-test-$$"
compose() { "${compose_cmd[@]}" -p "$project" -f deploy/docker-compose.yml "$@"; }

# A free localhost port for the Console's UI/API, so a demo already running on 8083 is no bother.
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    return 1
}
CONSOLE_PORT="$(free_port)" || fail "no free port"
export CONSOLE_PORT
api="http://127.0.0.1:$CONSOLE_PORT/api/v1"

# ---- images -------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-}" != 1 ]; then
    log "building images offline (deploy/build-images.sh)"
    t=$SECONDS
    timeout $((overall - SECONDS)) bash deploy/build-images.sh
    log "images built in $((SECONDS - t))s"
fi
tag="${IMAGE_TAG:-latest}"
sizes=""
for image in defender console demo; do
    bytes="$(docker image inspect -f '{{.Size}}' "fargate-defender/$image:$tag")" ||
        fail "image fargate-defender/$image:$tag is missing"
    sizes+="$(printf '%s=%.1fMB ' "$image" "$(echo "$bytes" | awk '{print $1 / 1000000}')")"
    [ "$bytes" -lt 20000000 ] || fail "fargate-defender/$image is $bytes bytes (target < 20 MB)"
done
log "image sizes: $sizes"

# ---- the demo -----------------------------------------------------------------------------
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
log "compose up -d (project $project, Console on 127.0.0.1:$CONSOLE_PORT)"
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
    token="$(compose exec -T console /usr/local/bin/defender-console token create 2>/dev/null | tr -d '\r\n')" &&
        [ -n "$token" ] || {
        why="no API token yet"
        return 1
    }
}
wait_for "API token" 60 make_token

get() { curl -sf --max-time 10 -H "Authorization: Bearer $token" "$api/$1"; }

# All seqs a Defender's events have, oldest first (pages of 1000, newest first, `before` cursor).
all_seqs() {
    local id="$1" before="" page
    while :; do
        page="$(get "defenders/$id/events?limit=1000${before:+&before=$before}")" || return 1
        [ "$(jq length <<<"$page")" -gt 0 ] || break
        jq -r '.[].seq' <<<"$page"
        before="$(jq '[.[].seq] | min' <<<"$page")"
        [ "$(jq length <<<"$page")" -eq 1000 ] || break
    done | sort -n
}

# Both Defenders connected with their task metadata (and, when $since is set, on a stream
# started after it).
defenders=""
since=""
both_connected() {
    defenders="$(get defenders)" || {
        why="API not answering"
        return 1
    }
    local n
    n="$(jq --arg since "$since" '[.[] | select(.connected and .cluster == "demo"
            and (.task_arn | startswith("arn:aws:ecs:eu-west-1:123456789012:task/demo/"))
            and ((.connected_since // "")[0:19] >= $since[0:19]))] | length' <<<"$defenders")"
    why="$(jq -c '[.[] | {family, mode, status}]' <<<"$defenders")"
    [ "$n" -eq 2 ] &&
        [ "$(jq -r '[.[] | "\(.family)/\(.mode)/\(.revision)"] | sort | join(",")' <<<"$defenders")" = "api/sidecar/7,web/embedded/3" ]
}
wait_for "both Defenders connected" 120 both_connected
id_of() { jq -r --arg f "$1" '.[] | select(.family == $f) | .id' <<<"$defenders"; }
web_id="$(id_of web)"
api_id="$(id_of api)"
log "connected after $((SECONDS - t_up))s: web=$web_id (embedded) api=$api_id (sidecar)"
jq -e '.[] | select(.family == "web") | .containers | map(.name) | sort == ["defender", "web"]' \
    <<<"$defenders" >/dev/null || fail "web task metadata lacks its containers: $defenders"

# The demo's processes and connections reached the Console.
has_events() {
    local id="$1" container="$2" ev
    ev="$(get "defenders/$id/events?limit=1000")" || {
        why="events of $id not answering"
        return 1
    }
    why="$(jq -c 'group_by(.kind) | map({(.[0].kind): length}) | add' <<<"$ev") for $container"
    jq -e --arg c "$container" '
        (any(.[]; .kind == "process_start" and (.summary | contains("defender-demo child"))
             and ($c == "" or .container == $c)))
        and any(.[]; .kind == "network_listen" and (.summary | contains(":8080")))
        and any(.[]; .kind == "network_connection" and (.summary | contains(":8080")))' \
        <<<"$ev" >/dev/null
}
web_events() { has_events "$web_id" web; }
api_events() { has_events "$api_id" ""; }
wait_for "web's processes and connections" 90 web_events
wait_for "api's processes and connections" 90 api_events
log "events arrived after $((SECONDS - t_up))s"

# Exact capture in the embedded-mode task (seccomp user notification in the app container),
# polling in the sidecar-mode one (its sidecar cannot install a filter in other containers).
capture_modes() {
    local d
    d="$(get defenders)" || return 1
    why="$(jq -c '[.[] | {family, capture: .capture.summary, detail: .capture.detail}]' <<<"$d")"
    [ "$(jq -r '.[] | select(.family == "web") | .capture.mode' <<<"$d")" = exact ] &&
        [ "$(jq -r '.[] | select(.family == "api") | .capture.mode' <<<"$d")" = polling ]
}
wait_for "web: exact capture, api: polling" 60 capture_modes
log "capture: $why"

# ---- Console outage -----------------------------------------------------------------------
max_seq() { get "defenders/$1/events?limit=1" | jq '.[0].seq // 0'; }
before_web="$(max_seq "$web_id")"
before_api="$(max_seq "$api_id")"
log "stopping the Console for ${outage}s (stored so far: web 1..$before_web, api 1..$before_api)"
stop_time="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
compose stop -t 10 console >/dev/null 2>&1
sleep "$outage" # the outage itself, not a wait for readiness

# The apps kept working: every container but the Console still runs, and the apps still talked
# to each other during the outage.
for svc in web web-defender web-task api api-defender api-task; do
    cid="$(compose ps -q "$svc")"
    [ "$(docker inspect -f '{{.State.Running}}' "$cid")" = true ] || fail "$svc stopped during the outage"
done
web_log="$(docker logs --since "$stop_time" "$(compose ps -q web)" 2>&1)"
grep -q 'GET http://api-task:8080/slow?ms=1500 -> 200' <<<"$web_log" ||
    fail "the web app stopped working during the outage"
grep -q 'child #.* exit status: 0' <<<"$web_log" ||
    fail "the web app spawned no child during the outage"

restart_time="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
t_restart=$SECONDS
log "starting the Console again"
compose start console >/dev/null 2>&1
since="$restart_time"
wait_for "both Defenders reconnected by themselves" 120 both_connected
log "reconnected $((SECONDS - t_restart))s after the restart"

# Caught up: more events than before the outage, and exactly seqs 1..max (no gap, no
# duplicate) — the events spooled during the outage were all delivered.
no_gap() {
    local id="$1" before="$2" seqs count max
    seqs="$(all_seqs "$id")" || {
        why="events of $id not answering"
        return 1
    }
    count="$(grep -c . <<<"$seqs")"
    max="$(tail -n1 <<<"$seqs")"
    why="$count events, max seq $max (before the outage: $before)"
    caught_up="seqs 1..$max, no gap, no duplicate ($before before the outage)"
    [ "$max" -gt "$before" ] && [ "$(head -n1 <<<"$seqs")" = 1 ] && [ "$count" = "$max" ] &&
        [ "$(uniq <<<"$seqs" | grep -c .)" = "$count" ]
}
outage_events() {
    # Events the Defender observed while the Console was down.
    local id="$1" n
    n="$(get "defenders/$id/events?limit=1000&since=${stop_time}&until=${restart_time}" | jq length)" ||
        return 1
    why="$n events observed during the outage"
    [ "$n" -gt 0 ] && caught_up+=", $n observed during the outage"
}
web_caught_up() { no_gap "$web_id" "$before_web" && outage_events "$web_id"; }
api_caught_up() { no_gap "$api_id" "$before_api" && outage_events "$api_id"; }
caught_up=""
wait_for "web: every event delivered" 90 web_caught_up
log "web: $caught_up"
wait_for "api: every event delivered" 90 api_caught_up
log "api: $caught_up"

# The sidecars' health checks (`defender fargate healthcheck`) pass again.
healthy() {
    local svc cid h
    for svc in web-defender api-defender; do
        cid="$(compose ps -q "$svc")"
        h="$(docker inspect -f '{{.State.Health.Status}}' "$cid")"
        why="$svc is $h"
        [ "$h" = healthy ] || return 1
    done
}
wait_for "sidecar health checks" 60 healthy

# Nothing was dropped (the spool had room for the whole outage).
jq -e 'all(.[]; .dropped_events == 0)' <<<"$(get defenders)" >/dev/null || fail "a Defender dropped events"

log "PASS in $((SECONDS - start))s (compose part $((SECONDS - t_up))s); image sizes: $sizes"
