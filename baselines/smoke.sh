#!/usr/bin/env bash
# Smoke test of the benchmark's peers (issue 9): each relays one stream from tokenpipe's mock upstream,
# and must deliver the same SSE events as tokenpipe itself, having sent the mock the same request body.
#
#   bash baselines/smoke.sh
#
# Builds tokenpipe and the three Rust baselines (release), starts the mock and tokenpipe on loopback
# ports the kernel picks, then each baseline in front of the same mock. The Python peer runs if its
# packages are importable (target/baselines-venv, made with
# `python3 -m venv target/baselines-venv && target/baselines-venv/bin/pip install -r
# baselines/python-fastapi/requirements.txt`, or the system python3), nginx if `nginx` is on PATH
# (Debian's nginx-light); otherwise they are skipped with a message. This script installs nothing.
#
# For each relay it checks: status 200 and `Content-Type: text/event-stream`; the events received are
# byte for byte those received through tokenpipe (so the same count of `data:` events, ending with
# `data: [DONE]`); the body the mock received is tokenpipe's. The translating relays must also answer 400
# to a body with an unknown field and 502 to an upstream error (a mock fault). The floor is sent the
# request tokenpipe sent upstream (it forwards bytes verbatim). Every process it starts is stopped on
# exit; every wait is bounded. Traffic goes to 127.0.0.1 only. Exit status 0 if nothing failed.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tokenpipe-smoke.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded: a process that ignores SIGTERM for 5 s gets SIGKILL.
        timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Loopback only, whatever the environment says about proxies.
CURL=(curl --noproxy '*' -sS --max-time 20)
FAILED=0
PASSED=0
SKIPPED=()
fail() {
    echo "FAIL $*"
    FAILED=$((FAILED + 1))
}

# Start a command in the background, its output in $WORK/NAME.log; its pid is kept for cleanup.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
}

# The port a server printed as "listening on http://127.0.0.1:PORT" (within 10 s), or fail.
port_of() {
    local name=$1 i line
    for i in $(seq 100); do
        line=$(grep -m1 -o 'listening on http://127\.0\.0\.1:[0-9]*' "$WORK/$name.log" || true)
        if [ -n "$line" ]; then
            echo "${line##*:}"
            return 0
        fi
        sleep 0.1
    done
    echo "no 'listening on' line from $name in 10 s; its log:" >&2
    cat "$WORK/$name.log" >&2
    return 1
}

# Wait (at most 10 s) until GET URL answers 200.
wait_ready() {
    local i
    for i in $(seq 100); do
        if "${CURL[@]}" --max-time 1 -o /dev/null "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# A port free right now, for the peers that cannot report the one the kernel picked.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The body of the last request the mock received (its /debug/requests log).
last_upstream_body() {
    "${CURL[@]}" "http://127.0.0.1:$MOCK_PORT/debug/requests" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["requests"][-1]["body"])'
}

# One stream through URL (a relay), with BODY: writes $WORK/NAME.events and $WORK/NAME.headers.
stream() {
    local name=$1 url=$2 body=$3
    "${CURL[@]}" -N -D "$WORK/$name.headers" -o "$WORK/$name.events" -X POST "$url" -d "$body"
}

SIMPLE='{"prompt":"hello brave new world","max_tokens":8}'
FULL='{"system":"Be brief.","prompt":"caf\u00e9 \"au\" lait","model":"m-1","temperature":0.7,"top_p":1,"stop":"\n\n","max_tokens":5}'

# Check a relay named NAME at http://127.0.0.1:PORT; TRANSLATES=yes for those that translate the body
# fully (all but nginx, which reads only prompt and max_tokens, and the floor, which translates nothing).
check_relay() {
    local name=$1 port=$2 translates=$3 url path body
    url="http://127.0.0.1:$port/api/v1/generate-stream"
    body=$SIMPLE
    if [ "$name" = floor ]; then
        url="http://127.0.0.1:$port/v1/chat/completions"
        body=$TOKENPIPE_UPSTREAM_BODY
    fi
    if ! stream "$name" "$url" "$body"; then
        fail "$name: the stream failed (curl)"
        return
    fi
    local ok=yes
    if ! grep -qi '^HTTP/1.1 200' "$WORK/$name.headers" ||
        ! grep -qi '^content-type: text/event-stream' "$WORK/$name.headers"; then
        fail "$name: not a 200 text/event-stream answer:"
        cat "$WORK/$name.headers"
        ok=no
    fi
    if ! cmp -s "$WORK/tokenpipe.events" "$WORK/$name.events"; then
        fail "$name: events differ from tokenpipe's ($(grep -c '^data:' "$WORK/$name.events" || true) data: events, tokenpipe $EVENTS)"
        diff <(head -c 2000 "$WORK/tokenpipe.events") <(head -c 2000 "$WORK/$name.events") | head -20 || true
        ok=no
    fi
    if [ "$(last_upstream_body)" != "$TOKENPIPE_UPSTREAM_BODY" ]; then
        fail "$name: sent the mock $(last_upstream_body), tokenpipe sent $TOKENPIPE_UPSTREAM_BODY"
        ok=no
    fi
    if [ "$translates" = yes ]; then
        stream "$name-full" "$url" "$FULL" || true
        if [ "$(last_upstream_body)" != "$TOKENPIPE_FULL_BODY" ]; then
            fail "$name: for all fields sent $(last_upstream_body), tokenpipe sent $TOKENPIPE_FULL_BODY"
            ok=no
        fi
    fi
    if [ "$name" != floor ]; then
        local bad upstream_error
        bad=$("${CURL[@]}" -o /dev/null -w '%{http_code}' -X POST "$url" -d '{"promt":"x"}' || true)
        upstream_error=$("${CURL[@]}" -o /dev/null -w '%{http_code}' -X POST "$url" \
            -d '{"prompt":"x [fault: status=503]"}' || true)
        if [ "$bad" != 400 ] || [ "$upstream_error" != 502 ]; then
            fail "$name: a bad body got $bad (want 400), an upstream 503 got $upstream_error (want 502)"
            ok=no
        fi
    fi
    if [ $ok = yes ]; then
        echo "ok   $name: $EVENTS data: events, same bytes as tokenpipe, ending with data: [DONE]; same upstream body"
        PASSED=$((PASSED + 1))
    fi
}

echo "building tokenpipe and the Rust baselines (release)..."
cargo build --release --quiet
cargo build --release --quiet -p tokio-hyper-relay -p axum-reqwest-relay -p floor-relay
BIN=$ROOT/target/release

# The mock at a quick pace (5 ms between events), so the whole smoke takes seconds.
start mock "$BIN/tokenpipe" mock-upstream --listen 127.0.0.1:0 --interval-ms 5
MOCK_PORT=$(port_of mock)
UPSTREAM=http://127.0.0.1:$MOCK_PORT

start tokenpipe "$BIN/tokenpipe" --listen 127.0.0.1:0 --workers 1 --upstream "$UPSTREAM" --provider openai
TP_PORT=$(port_of tokenpipe)
stream tokenpipe "http://127.0.0.1:$TP_PORT/api/v1/generate-stream" "$SIMPLE"
TOKENPIPE_UPSTREAM_BODY=$(last_upstream_body)
stream tokenpipe-full "http://127.0.0.1:$TP_PORT/api/v1/generate-stream" "$FULL"
TOKENPIPE_FULL_BODY=$(last_upstream_body)
EVENTS=$(grep -c '^data:' "$WORK/tokenpipe.events" || true)
if [ "$(grep '^data:' "$WORK/tokenpipe.events" | tail -n1)" != 'data: [DONE]' ] || [ "$EVENTS" -lt 3 ]; then
    echo "tokenpipe itself did not relay a whole stream; its events:" >&2
    cat "$WORK/tokenpipe.events" >&2
    exit 1
fi
echo "tokenpipe: $EVENTS data: events; it sent the mock $TOKENPIPE_UPSTREAM_BODY"
echo "  and for all fields: $TOKENPIPE_FULL_BODY"

for relay in tokio-hyper axum-reqwest floor; do
    start "$relay" "$BIN/$relay-relay" --listen 127.0.0.1:0 --upstream "$UPSTREAM"
    if port=$(port_of "$relay"); then
        translates=yes
        [ "$relay" = floor ] && translates=no
        check_relay "$relay" "$port" "$translates"
    else
        fail "$relay: did not start"
    fi
done

PYTHON=
for candidate in "$ROOT/target/baselines-venv/bin/python" python3; do
    if command -v "$candidate" >/dev/null &&
        "$candidate" -c 'import fastapi, uvicorn, uvloop, httpx, httptools' 2>/dev/null; then
        PYTHON=$candidate
        break
    fi
done
if [ -n "$PYTHON" ]; then
    port=$(free_port)
    start python-fastapi "$PYTHON" baselines/python-fastapi/relay.py --listen "127.0.0.1:$port" --upstream "$UPSTREAM"
    if wait_ready "http://127.0.0.1:$port/healthz"; then
        check_relay python-fastapi "$port" yes
    else
        fail "python-fastapi: not ready in 10 s; its log:"
        cat "$WORK/python-fastapi.log"
    fi
else
    SKIPPED+=("python-fastapi: fastapi, uvicorn, uvloop, httpx or httptools not importable (see baselines/README.md)")
fi

if command -v nginx >/dev/null; then
    port=$(free_port)
    mkdir -p "$WORK/nginx"
    sed -e "s|@PREFIX@|$WORK/nginx|g" -e "s|@LISTEN_PORT@|$port|g" -e "s|@UPSTREAM_PORT@|$MOCK_PORT|g" \
        baselines/nginx/nginx.conf.template >"$WORK/nginx/nginx.conf"
    start nginx nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e stderr
    if wait_ready "http://127.0.0.1:$port/healthz"; then
        check_relay nginx "$port" no
    else
        fail "nginx: not ready in 10 s; its log:"
        cat "$WORK/nginx.log"
    fi
else
    SKIPPED+=("nginx: not installed (Debian: apt-get install nginx-light)")
fi

for s in "${SKIPPED[@]}"; do
    echo "skip $s"
done
echo "$PASSED passed, $FAILED failed, ${#SKIPPED[@]} skipped"
[ "$FAILED" -eq 0 ]
