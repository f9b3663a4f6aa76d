#!/usr/bin/env bash
# The official Python SDKs (openai, anthropic, google-genai) against tokenpipe's mock and relays, on loopback.
#
#   bash tests/sdk/run.sh [check_sdks.py options, e.g. --bin target/release/tokenpipe]
#
# Sets up a virtualenv in target/sdk-venv (nothing is installed system-wide; it is kept between runs and
# rebuilt if broken), installs tests/sdk/requirements.txt into it, builds the binary if it is missing or
# older than the sources, and runs tests/sdk/check_sdks.py. Needs python3 (3.9+, with venv and pip) and,
# for the install only, PyPI; the checks themselves use 127.0.0.1 alone. Exit status: the checks'.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON=${PYTHON:-python3}
VENV=target/sdk-venv
BIN=target/debug/tokenpipe
for arg in "$@"; do
    case $arg in --bin=*) BIN=${arg#--bin=} ;; esac
done
prev=
for arg in "$@"; do
    [ "$prev" = --bin ] && BIN=$arg
    prev=$arg
done

t0=$(date +%s)
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
    echo "run.sh: creating the virtualenv $VENV with $("$PYTHON" --version 2>&1)"
    rm -rf "$VENV"
    mkdir -p target
    if ! "$PYTHON" -m venv "$VENV"; then
        echo "run.sh: '$PYTHON -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 2
    fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tests/sdk/requirements.txt
t1=$(date +%s)
echo "run.sh: SDKs ready in $VENV ($((t1 - t0))s)"

if [ "$BIN" = target/debug/tokenpipe ]; then
    if [ ! -x "$BIN" ] || [ -n "$(find src Cargo.toml Cargo.lock -newer "$BIN" -print -quit 2>/dev/null)" ]; then
        echo "run.sh: building $BIN (cargo build)"
        cargo build
    fi
elif [ ! -x "$BIN" ]; then
    echo "run.sh: no executable binary at $BIN" >&2
    exit 2
fi
t2=$(date +%s)

status=0
timeout -k 5 150 "$VENV/bin/python" tests/sdk/check_sdks.py "$@" || status=$?
t3=$(date +%s)
echo "run.sh: install $((t1 - t0))s, build $((t2 - t1))s, checks $((t3 - t2))s; exit status $status"
exit $status
