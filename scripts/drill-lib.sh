# Shared by scripts/*-drill.sh; sourced, not run.
#
# Every script: builds release binaries (unless STEERHOOK_BIN is set), works
# in its own temp dir, talks only to 127.0.0.1, bounds every loop in count
# and time, stops the processes it started by PID, prints PASS:/FAIL: lines
# and exits non-zero when any check failed.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FAILED=0
PIDS=()
TMP=""
MOUNTS=()

note() { echo "$DRILL: $*"; }
pass() { echo "PASS: $DRILL: $*"; }
fail() { echo "FAIL: $DRILL: $*"; FAILED=1; }
die() { echo "FAIL: $DRILL: $*"; exit 1; }

# Build the daemon and the load generator once, in release mode.
build_release() {
    if [ -n "${STEERHOOK_BIN:-}" ]; then
        BIN=$STEERHOOK_BIN
        LOADGEN=${LOADGEN_BIN:-$(dirname "$BIN")/examples/loadgen}
    else
        note "building release binaries (cargo build --release --locked)"
        (cd "$ROOT" && cargo build --release --locked --quiet --bin steerhook --example loadgen) \
            || die "cargo build failed"
        BIN=$TARGET_DIR/release/steerhook
        LOADGEN=$TARGET_DIR/release/examples/loadgen
    fi
    [ -x "$BIN" ] || die "no steerhook binary at $BIN"
    [ -x "$LOADGEN" ] || die "no loadgen binary at $LOADGEN"
    command -v python3 >/dev/null || die "python3 is required (it reads the SQLite file)"
    command -v curl >/dev/null || die "curl is required"
}

make_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/steerhook-$DRILL.XXXXXX")
    trap cleanup EXIT
}

# Stops what this script started, by PID only; unmounts its own mounts.
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    local m
    for m in "${MOUNTS[@]}"; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    if [ -n "$TMP" ]; then
        if [ "${KEEP_TMP:-}" = 1 ] || [ "$FAILED" != 0 ]; then echo "$DRILL: kept $TMP"; else rm -rf "$TMP"; fi
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# shellcheck source=scripts/poll.sh
source "$ROOT/scripts/poll.sh"

healthy() { curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null; }

# start_daemon CONFIG LOG: starts `steerhook serve` in the background, sets
# DAEMON_PID, waits (bounded) for /healthz.
start_daemon() {
    "$BIN" serve --config "$1" >>"$2" 2>&1 &
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
    if ! poll 30 healthy; then
        tail -n 20 "$2"
        die "the daemon did not answer /healthz within 30 s"
    fi
}

# stop_daemon: SIGTERM, wait (bounded), returns its exit status.
stop_daemon() {
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 300); do
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
        fail "the daemon did not exit within 30 s of SIGTERM"
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    local rc=0
    wait "$DAEMON_PID" || rc=$?
    return $rc
}

# kill_drill_hooks SLOW_SECS: the two hooks of the kill -9 drills, as TOML.
# "fast" logs "<event id> <attempt>" to $TMP/fast.log; "slow" does the same
# to $TMP/slow.log after sleeping SLOW_SECS for one event in ten, so a kill
# often lands while it runs.
kill_drill_hooks() {
    cat <<TOML
[[hook]]
name = "fast"
kind = "shell"
events = ["run.succeeded", "run.failed"]
command = ["/bin/sh", "-c", "echo \"\$STEERHOOK_EVENT_ID \$STEERHOOK_ATTEMPT\" >> \"\$HOOK_LOG\""]
env = { HOOK_LOG = "$TMP/fast.log" }
concurrency = 4
timeout_secs = 30
kill_grace_secs = 1

[[hook]]
name = "slow"
kind = "shell"
events = ["run.succeeded", "run.failed"]
command = ["/bin/sh", "-c", "case \"\$STEERHOOK_EVENT_ID\" in *0) sleep $1 ;; esac; echo \"\$STEERHOOK_EVENT_ID \$STEERHOOK_ATTEMPT\" >> \"\$HOOK_LOG\""]
env = { HOOK_LOG = "$TMP/slow.log" }
concurrency = 4
timeout_secs = 30
kill_grace_secs = 1
TOML
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

finish() {
    if [ "$FAILED" = 0 ]; then
        echo "PASS: $DRILL: all checks passed"
        exit 0
    fi
    echo "FAIL: $DRILL: at least one check failed (see FAIL lines above)"
    exit 1
}
