#!/usr/bin/env bash
# Checks the deployment files with the tools made for them (run by .ci/run after the tests):
#
#   bash deploy/check.sh
#
# 1. deploy/systemd/tokenpipe.service: `systemd-analyze verify` (every key and value, the executable; a
#    warning counts as a failure) and `systemd-analyze security --offline` (exposure at most 2.0, so that
#    loosening the sandbox is noticed). verify insists that ExecStart's binary exists, so both run on a
#    temporary copy whose ExecStart is `true`. No running systemd is needed.
# 2. deploy/kubernetes/*.yaml (kustomization.yaml aside): `kubernetes-validate --strict` (unknown fields
#    are errors; an unknown kind or apiVersion, only a warning to the tool, fails here too), against
#    Kubernetes 1.30, the oldest the manifests support, and against the newest schema the tool ships.
# 3. deploy/kubernetes/tokenpipe.toml: `tokenpipe check-config`, with placeholder keys.
# 4. deploy/check_wiring.py: that the files agree with each other (references, mounts, stop timing).
#
# Installs what is missing, and nothing system-wide unless it must: kubernetes-validate
# (deploy/requirements.txt, ~3 s) into the virtualenv target/deploy-venv (kept between runs, rebuilt if
# broken; PyPI is needed for the install only: the schemas ship inside the package, the checks use no
# network), and, only if `systemd-analyze` is not on the PATH, Debian's `systemd` package with apt-get (as
# root or with passwordless sudo). Without systemd-analyze the script fails: the unit is not checked
# otherwise, and a check that quietly does nothing is worse than none. Builds target/debug/tokenpipe if it
# is missing or older than the sources. Exit status 0 if everything passed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
VENV=target/deploy-venv
BIN=target/debug/tokenpipe
UNIT=deploy/systemd/tokenpipe.service
K8S=deploy/kubernetes
# The oldest Kubernetes the manifests are for: the preStop `sleep` action is on by default from 1.30.
K8S_OLDEST=1.30.0
# Highest accepted `systemd-analyze security` exposure, in tenths (1.5 when this was written).
EXPOSURE_MAX=20

say() { echo "check.sh: $*"; }
fail() {
    echo "check.sh: FAILED: $*" >&2
    exit 1
}

t0=$(date +%s)
# --- Tools ---------------------------------------------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null; then
    say "systemd-analyze is missing: installing Debian's package 'systemd' (it is in no other package)"
    if [ "$(id -u)" = 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        fail "systemd-analyze is not installed and this user can neither apt-get nor sudo: install the package 'systemd' (Debian/Ubuntu) or run as root. The systemd unit is NOT checked."
    fi
    command -v apt-get >/dev/null ||
        fail "systemd-analyze is not installed and there is no apt-get: install systemd-analyze (package 'systemd'). The systemd unit is NOT checked."
    export DEBIAN_FRONTEND=noninteractive
    # A clean CI image has no package lists yet; update only then, or if the install fails without one.
    if ! timeout 300 "${sudo[@]}" apt-get install -y -qq --no-install-recommends systemd >/dev/null; then
        timeout 300 "${sudo[@]}" apt-get update -qq
        timeout 300 "${sudo[@]}" apt-get install -y -qq --no-install-recommends systemd >/dev/null
    fi
    command -v systemd-analyze >/dev/null ||
        fail "the package 'systemd' is installed but there is no systemd-analyze on the PATH. The systemd unit is NOT checked."
fi

if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
    say "creating the virtualenv $VENV with $("$PYTHON" --version 2>&1)"
    rm -rf "$VENV"
    mkdir -p target
    if ! "$PYTHON" -m venv "$VENV"; then
        fail "'$PYTHON -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
fi
timeout 300 "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r deploy/requirements.txt

if [ ! -x "$BIN" ] || [ -n "$(find src Cargo.toml Cargo.lock -newer "$BIN" -print -quit 2>/dev/null)" ]; then
    say "building $BIN (cargo build)"
    cargo build --locked --bin tokenpipe
fi
t1=$(date +%s)
say "tools ready ($((t1 - t0))s): $(systemd-analyze --version | head -n1), kubernetes-validate $("$VENV/bin/kubernetes-validate" --version)"

# --- 1. The systemd unit -------------------------------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
true_bin=$(command -v true)
case $true_bin in /*) ;; *) true_bin=/bin/true ;; esac
sed "s#^ExecStart=/usr/local/bin/tokenpipe #ExecStart=$true_bin #" "$UNIT" >"$tmp/tokenpipe.service"
grep -q "^ExecStart=$true_bin " "$tmp/tokenpipe.service" ||
    fail "$UNIT: no 'ExecStart=/usr/local/bin/tokenpipe ...' line to check (update deploy/check.sh with the unit)"

verify=(systemd-analyze verify --man=no)
# systemd >= 250: judge this unit alone, not the units it is ordered after (those are the machine's).
systemd-analyze --help 2>&1 | grep -q -- --recursive-errors && verify+=(--recursive-errors=no)
status=0
out=$("${verify[@]}" "$tmp/tokenpipe.service" 2>&1) || status=$?
# verify exits 0 after "Unknown key ..., ignoring" and bad values: any line about our unit is a failure.
# Lines about other units come from this machine's own unit files and are shown, not counted.
ours=$(grep -F 'tokenpipe.service' <<<"$out" || true)
if [ -n "$out" ]; then
    sed "s#$tmp/#$(dirname "$UNIT")/#; s#^#    #" <<<"$out"
fi
if [ "$status" != 0 ] || [ -n "$ours" ]; then
    fail "systemd-analyze verify $UNIT (exit status $status; line numbers are the unit's own)"
fi
say "ok: systemd-analyze verify $UNIT"

if systemd-analyze --help 2>&1 | grep -q -- --offline; then
    status=0
    out=$(systemd-analyze security --offline=true --threshold="$EXPOSURE_MAX" --no-pager "$tmp/tokenpipe.service" 2>&1) || status=$?
    if [ "$status" != 0 ]; then
        echo "$out"
        fail "systemd-analyze security $UNIT: exposure above $((EXPOSURE_MAX / 10)).$((EXPOSURE_MAX % 10)) (the sandbox was loosened?)"
    fi
    say "ok: systemd-analyze security $UNIT: $(grep -o 'exposure level.*' <<<"$out" | tail -n1)"
else
    # Not the check the script exists for (verify is); say it loudly all the same.
    say "WARNING: NOT CHECKED: the unit's exposure (systemd-analyze security --offline needs systemd >= 250)"
fi

# --- 2. The Kubernetes manifests -----------------------------------------------------------------------------
manifests=()
for f in "$K8S"/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
[ ${#manifests[@]} -gt 0 ] || fail "no manifests in $K8S"
for version in "$K8S_OLDEST" latest; do
    args=(--strict)
    [ "$version" = latest ] || args+=(--kubernetes-version "$version")
    status=0
    out=$("$VENV/bin/kubernetes-validate" "${args[@]}" "${manifests[@]}" 2>&1) || status=$?
    sed 's#^#    #' <<<"$out"
    # A kind or apiVersion the schemas do not know is only a warning to kubernetes-validate (exit 0).
    if [ "$status" != 0 ] || grep -qE '^(WARN|ERROR)' <<<"$out"; then
        fail "kubernetes-validate --strict ($version) $K8S (exit status $status)"
    fi
done
say "ok: kubernetes-validate --strict, Kubernetes $K8S_OLDEST and latest: ${#manifests[@]} manifests"

# --- 3. The config file in the ConfigMap ---------------------------------------------------------------------
# check-config also wants each key_env set: placeholders, since only the names matter here.
keys=()
for var in $(sed -n 's/^[[:space:]]*key_env[[:space:]]*=[[:space:]]*"\([A-Za-z0-9_]*\)".*/\1/p' "$K8S/tokenpipe.toml"); do
    keys+=("$var=placeholder-for-check-config")
done
env ${keys[@]+"${keys[@]}"} "$BIN" check-config "$K8S/tokenpipe.toml" ||
    fail "tokenpipe check-config $K8S/tokenpipe.toml"

# --- 4. The files agree with each other ----------------------------------------------------------------------
"$VENV/bin/python" deploy/check_wiring.py || fail "deploy/check_wiring.py"

t2=$(date +%s)
say "all deployment checks passed (tools $((t1 - t0))s, checks $((t2 - t1))s)"
