#!/usr/bin/env bash
# Crash drill (SPEC §7): kill -9 the daemon at random moments under load and
# check that no event answered 2xx is ever lost and that interrupted hooks
# run again.
#
# Each of CYCLES cycles (default 20): start `steerhook serve`, wait for
# /healthz, run examples/loadgen at RATE req/s (default 500) for a random
# 1-4 s writing every 2xx id to a file, kill -9 the daemon at a random moment
# during the load, then check with python3's sqlite3 that every id of the
# cycle is in `events` and `PRAGMA integrity_check` is ok.
# Then start once more, drain the queue (deadline DRAIN_SECS, default 900)
# and check: every event done, every job succeeded, every job that has an
# 'interrupted' attempt has a later 'ok' one, and each hook's log holds every
# acknowledged id. Prints `lost=0` (or the lost ids).
#
# Two shell hooks: `fast` appends "$STEERHOOK_EVENT_ID $STEERHOOK_ATTEMPT"
# to fast.log; `slow` does the same to slow.log but sleeps 0.2 s first for
# one event in ten, so kills land mid-hook.
#
# Environment: CYCLES, RATE, DRAIN_SECS, STEERHOOK_BIN (skip the build),
# KEEP_TMP=1. Needs python3 and curl. Exit 0 when every check passed.
set -euo pipefail
DRILL=crash-drill
source "$(dirname "$0")/drill-lib.sh"

CYCLES=${CYCLES:-20}
RATE=${RATE:-500}
DRAIN_SECS=${DRAIN_SECS:-900}
SECRET=whsec_crash_drill
build_release
make_tmp
PORT=$(free_port)
CFG=$TMP/steerhook.toml
LOG=$TMP/steerhook.log
cat >"$CFG" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[webhook]
secrets = ["$SECRET"]
[storage]
path = "$TMP/steerhook.db"
[queue]
concurrency = 8
backoff_base_secs = 1
backoff_max_secs = 2
shutdown_grace_secs = 2
[log]
level = "warn"

$(kill_drill_hooks 0.2)
TOML
"$BIN" check-config --config "$CFG" >/dev/null || die "the drill's configuration is refused"
note "temp dir $TMP, port $PORT, $CYCLES cycles at $RATE req/s"

# check_cycle IDS_FILE: every id in the file is stored; integrity ok.
check_cycle() {
    python3 - "$TMP/steerhook.db" "$1" <<'PY'
import sqlite3, sys
db, ids_file = sys.argv[1], sys.argv[2]
ids = [l.strip() for l in open(ids_file) if l.strip()]
c = sqlite3.connect(db, timeout=10)
integrity = c.execute("PRAGMA integrity_check").fetchone()[0]
stored = {r[0] for r in c.execute("SELECT id FROM events")}
lost = [i for i in ids if i not in stored]
print(f"acked={len(ids)} stored_total={len(stored)} lost={len(lost)} integrity={integrity}")
if lost:
    print("lost ids: " + " ".join(lost[:50]))
sys.exit(0 if not lost and integrity == "ok" else 1)
PY
}

for cycle in $(seq 1 "$CYCLES"); do
    start_daemon "$CFG" "$LOG"
    load_ms=$(( (RANDOM % 3001) + 1000 ))          # 1-4 s of load
    kill_ms=$(( (RANDOM % (load_ms - 300)) + 150 ))  # strictly inside it
    ids=$TMP/ids.$cycle
    timeout 60 "$LOADGEN" --url "http://127.0.0.1:$PORT/webhooks/opensteer" --secret "$SECRET" \
        --rate "$RATE" --duration "${load_ms}ms" --ids-out "$ids" --json >"$TMP/load.$cycle.json" 2>&1 &
    lg=$!
    PIDS+=("$lg")
    sleep "$(printf '%d.%03d' $((kill_ms / 1000)) $((kill_ms % 1000)))"
    kill -KILL "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null || true
    lg_rc=0
    wait "$lg" || lg_rc=$?
    [ "$lg_rc" = 0 ] || fail "cycle $cycle: loadgen exited $lg_rc: $(tail -n 3 "$TMP/load.$cycle.json")"
    if out=$(check_cycle "$ids"); then
        note "cycle $cycle/$CYCLES: load ${load_ms} ms, kill -9 at ${kill_ms} ms: $out"
    else
        fail "cycle $cycle/$CYCLES: load ${load_ms} ms, kill -9 at ${kill_ms} ms: $out"
    fi
done

note "starting once more to drain the queue (deadline ${DRAIN_SECS} s)"
start_daemon "$CFG" "$LOG"
drain_started=$SECONDS
unfinished() {
    python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=10); print(c.execute("SELECT count(*) FROM jobs WHERE state IN (\"blocked\",\"pending\",\"running\")").fetchone()[0])' "$TMP/steerhook.db"
}
last_report=0
while :; do
    left=$(unfinished)
    [ "$left" = 0 ] && break
    if [ $((SECONDS - drain_started)) -ge "$DRAIN_SECS" ]; then
        fail "the queue did not drain within ${DRAIN_SECS} s ($left jobs unfinished)"
        break
    fi
    if [ $((SECONDS - last_report)) -ge 15 ]; then note "draining: $left jobs unfinished"; last_report=$SECONDS; fi
    sleep 0.5
done
note "drained in $((SECONDS - drain_started)) s"
rc=0
stop_daemon || rc=$?
[ "$rc" = 0 ] || fail "the daemon exited $rc on SIGTERM"

cat "$TMP"/ids.* >"$TMP/ids.all" 2>/dev/null || true
python3 - "$TMP" <<'PY' || FAILED=1
import collections, sqlite3, sys
tmp = sys.argv[1]
ids = [l.strip() for l in open(f"{tmp}/ids.all") if l.strip()]
c = sqlite3.connect(f"{tmp}/steerhook.db", timeout=10)
ok = True
def check(cond, what):
    global ok
    print(("PASS: crash-drill: " if cond else "FAIL: crash-drill: ") + what)
    ok = ok and cond

integrity = c.execute("PRAGMA integrity_check").fetchone()[0]
check(integrity == "ok", f"integrity_check = {integrity}")
stored = {r[0] for r in c.execute("SELECT id FROM events")}
lost = sorted(set(ids) - stored)
print(f"lost={len(lost)}" + ("" if not lost else " " + " ".join(lost)))
check(not lost, f"{len(ids)} acknowledged events, {len(stored)} stored "
      f"({len(stored - set(ids))} stored but their answer was cut by a kill), none lost")
check(len(ids) == len(set(ids)), "no id acknowledged twice")
states = dict(c.execute("SELECT status, count(*) FROM events GROUP BY status").fetchall())
check(set(states) <= {"done"}, f"every event done: {states}")
jobs = dict(c.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
check(set(jobs) <= {"succeeded"}, f"every delivery succeeded: {jobs}")
n_jobs = c.execute("SELECT count(*) FROM jobs").fetchone()[0]
check(n_jobs == 2 * len(stored), f"two delivery jobs per event ({n_jobs})")
# Per job: its attempts in order; an 'interrupted' one must be followed by an 'ok'.
attempts = collections.defaultdict(list)
for job_id, outcome in c.execute("SELECT job_id, outcome FROM attempts ORDER BY id"):
    attempts[job_id].append(outcome)
interrupted = [j for j, a in attempts.items() if "interrupted" in a]
bad = [j for j, a in attempts.items()
       if "interrupted" in a and "ok" not in a[max(i for i, o in enumerate(a) if o == "interrupted"):]]
check(not bad, f"{len(interrupted)} interrupted deliveries, each followed by a later 'ok' attempt"
      + ("" if not bad else f"; not: {bad[:20]}"))
oks = collections.Counter()
for job_id, a in attempts.items():
    oks[a.count("ok")] += 1
check(set(oks) == {1} and sum(oks.values()) == n_jobs, f"exactly one 'ok' attempt per job: {dict(oks)}")
other = collections.Counter(o for a in attempts.values() for o in a if o not in ("ok", "interrupted"))
check(not other, f"no failed or retried attempt: {dict(other)}")
for hook in ("fast", "slow"):
    runs = collections.Counter(l.split()[0] for l in open(f"{tmp}/{hook}.log") if l.strip())
    missing = stored - set(runs)
    again = sum(1 for n in runs.values() if n > 1)
    check(not missing, f"hook {hook}: ran for every stored event ({len(runs)} ids, "
          f"{again} ran more than once: at-least-once after kill -9){'' if not missing else '; never: ' + ' '.join(sorted(missing)[:20])}")
sys.exit(0 if ok else 1)
PY
finish
