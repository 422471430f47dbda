#!/usr/bin/env bash
# Cluster drill (SPEC §7, several daemons on one PostgreSQL database): two
# daemons share the load; kill -9 either of them at random moments and check
# that no event answered 2xx is lost or stored twice, and that the survivor
# (then the restarted one) finishes every delivery the kill cut off.
#
# Creates a fresh database on the local PostgreSQL server (ADMIN_URL, default
# $STEERHOOK_TEST_DATABASE_URL or postgres://postgres@127.0.0.1:5432/postgres;
# the user must be allowed to create databases) and starts daemons `a` and
# `b` on it, each with its own port and payload directory, `queue.lease_secs
# = 5`. Two shell hooks on both: `fast` appends "$STEERHOOK_EVENT_ID
# $STEERHOOK_ATTEMPT" to fast.log; `slow` does the same to slow.log after
# sleeping 0.5 s for one event in ten, so kills land mid-hook.
#
# Each of CYCLES cycles (default 10): two examples/loadgen processes, one per
# daemon, at RATE/2 req/s each (RATE default 400) for a random 1-4 s, each
# writing its 2xx ids to a file; kill -9 daemon a or b (chosen at random) at
# a random moment inside the load; restart it; then check with psql that
# every 2xx id of the cycle is stored exactly once.
# Then drain with both daemons up (deadline DRAIN_SECS, default 300), stop
# both with SIGTERM (exit 0) and check: every event done, every job in a final
# state (succeeded), exactly one 'ok' attempt per job, every acknowledged id
# in each hook's log at least once, `lost=0`; and print how many deliveries
# ran more than once (allowed: at least once, SPEC §7).
#
# Environment: CYCLES, RATE, DRAIN_SECS, ADMIN_URL, STEERHOOK_BIN (skip the
# build), KEEP_TMP=1 (keep the temp dir and the database). Needs psql, curl
# and python3. Exit 0 when every check passed.
set -euo pipefail
DRILL=cluster-drill
source "$(dirname "$0")/drill-lib.sh"

CYCLES=${CYCLES:-10}
RATE=${RATE:-400}
DRAIN_SECS=${DRAIN_SECS:-300}
LEASE_SECS=5
ADMIN_URL=${ADMIN_URL:-${STEERHOOK_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
SECRET=whsec_cluster_drill
command -v psql >/dev/null || die "psql is required (apt-get install postgresql-client)"
psql "$ADMIN_URL" -qAtc "SELECT 1" >/dev/null 2>&1 \
    || die "no PostgreSQL server answers at $ADMIN_URL (set ADMIN_URL, or start one: see tests/support/db.rs)"
build_release
make_tmp

DB_NAME=steerhook_cluster_drill_$$_$RANDOM
DB_URL=$(python3 -c 'import sys, urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$ADMIN_URL" "$DB_NAME")
psql "$ADMIN_URL" -qc "CREATE DATABASE \"$DB_NAME\"" || die "cannot create the database $DB_NAME"

# The lib's cleanup (daemons, loadgens, temp dir), then the database: kept
# like the temp dir, with KEEP_TMP=1 or when a check failed.
cleanup_all() {
    cleanup
    if [ "${KEEP_TMP:-}" = 1 ] || [ "$FAILED" != 0 ]; then
        echo "$DRILL: kept the database $DB_NAME (drop it: psql '$ADMIN_URL' -c 'DROP DATABASE \"$DB_NAME\" WITH (FORCE)')"
    else
        psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null \
            || echo "$DRILL: warning: could not drop the database $DB_NAME"
    fi
}
trap cleanup_all EXIT

sql() { psql "$DB_URL" -qAt -v ON_ERROR_STOP=1 "$@"; }

# forget PID: a reaped process leaves the list cleanup() kills from, so that
# its PID, once reused by another process, is never signalled.
forget() {
    local kept=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

declare -A PORT_OF PID_OF CFG_OF
write_config() { # NAME
    local name=$1 port
    port=$(free_port)
    PORT_OF[$name]=$port
    CFG_OF[$name]=$TMP/$name.toml
    mkdir -p "$TMP/$name/payloads"
    cat >"${CFG_OF[$name]}" <<TOML
[server]
listen = "127.0.0.1:$port"
[webhook]
secrets = ["$SECRET"]
[storage]
backend = "postgres"
url = "$DB_URL"
payload_dir = "$TMP/$name/payloads"
[queue]
concurrency = 8
backoff_base_secs = 1
backoff_max_secs = 2
shutdown_grace_secs = 2
lease_secs = $LEASE_SECS
[log]
level = "warn"

$(kill_drill_hooks 0.5)
TOML
    "$BIN" check-config --config "${CFG_OF[$name]}" >/dev/null || die "the configuration of $name is refused"
}

start() { # NAME: starts it, waits (bounded) for /healthz
    local name=$1
    PORT=${PORT_OF[$name]}
    "$BIN" serve --config "${CFG_OF[$name]}" >>"$TMP/$name.log" 2>&1 &
    PID_OF[$name]=$!
    PIDS+=("$!")
    if ! poll 30 healthy; then
        tail -n 20 "$TMP/$name.log"
        die "daemon $name did not answer /healthz within 30 s"
    fi
}

stop() { # NAME: SIGTERM; fails the drill unless it exits 0
    DAEMON_PID=${PID_OF[$1]}
    local rc=0
    stop_daemon || rc=$?
    [ "$rc" = 0 ] || fail "daemon $1 exited $rc on SIGTERM"
}

# check_cycle IDS_FILE: every id in the file is stored exactly once.
check_cycle() {
    sql -F ' ' <<SQL
CREATE TEMP TABLE acked (id TEXT);
\copy acked FROM '$1'
SELECT 'acked=' || (SELECT count(*) FROM acked),
       'stored_total=' || (SELECT count(*) FROM events),
       'lost=' || count(*) FILTER (WHERE n = 0),
       'stored_twice=' || count(*) FILTER (WHERE n > 1)
FROM (SELECT a.id, (SELECT count(*) FROM events e WHERE e.id = a.id) AS n FROM acked a) t;
SQL
}

write_config a
write_config b
note "temp dir $TMP, database $DB_NAME, daemons a :${PORT_OF[a]} and b :${PORT_OF[b]}, $CYCLES cycles at $RATE req/s, lease ${LEASE_SECS} s"
start a
start b

for cycle in $(seq 1 "$CYCLES"); do
    load_ms=$(( (RANDOM % 3001) + 1000 ))          # 1-4 s of load
    kill_ms=$(( (RANDOM % (load_ms - 300)) + 150 ))  # strictly inside it
    victim=$([ $((RANDOM % 2)) = 0 ] && echo a || echo b)
    lgs=()
    for name in a b; do
        timeout 60 "$LOADGEN" --url "http://127.0.0.1:${PORT_OF[$name]}/webhooks/opensteer" --secret "$SECRET" \
            --rate $((RATE / 2)) --duration "${load_ms}ms" --ids-out "$TMP/ids.$cycle.$name" --json \
            >"$TMP/load.$cycle.$name.json" 2>&1 &
        lgs+=("$!")
        PIDS+=("$!")
    done
    sleep "$(printf '%d.%03d' $((kill_ms / 1000)) $((kill_ms % 1000)))"
    kill -KILL "${PID_OF[$victim]}"
    wait "${PID_OF[$victim]}" 2>/dev/null || true
    forget "${PID_OF[$victim]}"
    for lg in "${lgs[@]}"; do
        lg_rc=0
        wait "$lg" || lg_rc=$?
        forget "$lg"
        [ "$lg_rc" = 0 ] || fail "cycle $cycle: a loadgen exited $lg_rc: $(tail -n 3 "$TMP"/load."$cycle".*.json)"
    done
    start "$victim"
    cat "$TMP/ids.$cycle.a" "$TMP/ids.$cycle.b" >"$TMP/ids.$cycle"
    out=$(check_cycle "$TMP/ids.$cycle" | tr '\n' ' ' | sed 's/ *$//')
    case "$out" in
        *" lost=0 stored_twice=0") note "cycle $cycle/$CYCLES: load ${load_ms} ms, kill -9 of $victim at ${kill_ms} ms: $out" ;;
        *) fail "cycle $cycle/$CYCLES: load ${load_ms} ms, kill -9 of $victim at ${kill_ms} ms: $out" ;;
    esac
done

note "draining with both daemons (deadline ${DRAIN_SECS} s)"
drain_started=$SECONDS
last_report=0
while :; do
    left=$(sql -c "SELECT count(*) FROM jobs WHERE state IN ('blocked', 'pending', 'running')")
    [ "$left" = 0 ] && break
    if [ $((SECONDS - drain_started)) -ge "$DRAIN_SECS" ]; then
        fail "the queue did not drain within ${DRAIN_SECS} s ($left jobs unfinished)"
        break
    fi
    if [ $((SECONDS - last_report)) -ge 15 ]; then note "draining: $left jobs unfinished"; last_report=$SECONDS; fi
    sleep 0.5
done
note "drained in $((SECONDS - drain_started)) s"
stop a
stop b

cat "$TMP"/ids.*.a "$TMP"/ids.*.b >"$TMP/ids.all" 2>/dev/null || true
sql -F ' ' -c "SELECT id, status FROM events" >"$TMP/events.txt"
sql -F ' ' -c "SELECT id, state FROM jobs" >"$TMP/jobs.txt"
sql -F ' ' -c "SELECT job_id, outcome FROM attempts ORDER BY id" >"$TMP/attempts.txt"
python3 - "$TMP" <<'PY' || FAILED=1
import collections, sys
tmp = sys.argv[1]
def rows(name):
    return [l.split() for l in open(f"{tmp}/{name}") if l.strip()]
ok = True
def check(cond, what):
    global ok
    print(("PASS: cluster-drill: " if cond else "FAIL: cluster-drill: ") + what)
    ok = ok and cond

ids = [l.strip() for l in open(f"{tmp}/ids.all") if l.strip()]
events = rows("events.txt")
stored = collections.Counter(i for i, _ in events)
lost = sorted(set(ids) - set(stored))
print(f"lost={len(lost)}" + ("" if not lost else " " + " ".join(lost[:50])))
check(not lost, f"{len(ids)} acknowledged events, {len(stored)} stored "
      f"({len(set(stored) - set(ids))} stored but their answer was cut by a kill), none lost")
check(len(ids) == len(set(ids)), "no id acknowledged twice")
twice = [i for i, n in stored.items() if n > 1]
check(not twice, "no event stored twice" + ("" if not twice else f": {twice[:20]}"))
states = collections.Counter(s for _, s in events)
check(set(states) <= {"done"}, f"every event done: {dict(states)}")
jobs = collections.Counter(s for _, s in rows("jobs.txt"))
check(set(jobs) <= {"succeeded"}, f"every delivery in a final state, succeeded: {dict(jobs)}")
n_jobs = sum(jobs.values())
check(n_jobs == 2 * len(stored), f"two delivery jobs per event ({n_jobs})")
attempts = collections.defaultdict(list)
for job_id, outcome in rows("attempts.txt"):
    attempts[job_id].append(outcome)
interrupted = [j for j, a in attempts.items() if "interrupted" in a]
bad = [j for j, a in attempts.items()
       if "interrupted" in a and "ok" not in a[max(i for i, o in enumerate(a) if o == "interrupted"):]]
check(not bad, f"{len(interrupted)} deliveries cut by a kill, each taken over and followed by an 'ok' attempt"
      + ("" if not bad else f"; not: {bad[:20]}"))
oks = collections.Counter(a.count("ok") for a in attempts.values())
check(set(oks) == {1} and sum(oks.values()) == n_jobs, f"exactly one 'ok' attempt per job: {dict(oks)}")
other = collections.Counter(o for a in attempts.values() for o in a if o not in ("ok", "interrupted"))
check(not other, f"no failed or retried attempt: {dict(other)}")
again_total = 0
for hook in ("fast", "slow"):
    runs = collections.Counter(l.split()[0] for l in open(f"{tmp}/{hook}.log") if l.strip())
    missing = set(ids) - set(runs)
    again = sum(1 for n in runs.values() if n > 1)
    again_total += again
    check(not missing, f"hook {hook}: ran for every acknowledged event ({len(runs)} ids, {again} ran more than once)"
          + ("" if not missing else "; never: " + " ".join(sorted(missing)[:20])))
print(f"deliveries run more than once: {again_total} (at least once, SPEC §7: a hook outlives a kill -9 of its daemon and another daemon runs it again)")
sys.exit(0 if ok else 1)
PY
finish
