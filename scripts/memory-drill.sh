#!/usr/bin/env bash
# Memory drill: logs stay out of memory (docs/DRILLS.md §6, docs/PERFORMANCE.md
# "Memory while delivering large logs").
#
# A fake API (scripts/fake-opensteer-logs.py) serves each run's logs: PAGES
# pages (default 10) of ENTRIES entries (default 10,000) of about ENTRY_BYTES
# bytes (default 1,000): 100 MB. The release daemon, with
# opensteer.max_log_bytes raised to 256 MiB, fetches them and delivers each
# event to a shell hook that reads all of stdin (`wc -c`). EVENTS events
# (default 10), each for its own run, are sent one after the other.
#
# Checks: every hook read the whole document (more than the log's bytes);
# the daemon's peak resident memory (VmHWM) stays at or under TARGET_KIB
# (default 65536, 64 MiB); and there is no growth once the first events are
# through: the peak after the last event is at most GROWTH_SLACK_KIB (default
# 4096) above the peak after the first half of them. Prints the peak and
# VmRSS at start, after each event, and 5 s after the last.
#
# The daemon runs with MALLOC_MMAP_THRESHOLD_=131072, as
# systemd/steerhook.service starts it; BARE_MALLOC=1 leaves glibc's default
# (its figures are in docs/PERFORMANCE.md too).
#
# Environment: PAGES, ENTRIES, ENTRY_BYTES, EVENTS, TARGET_KIB, BARE_MALLOC,
# GROWTH_SLACK_KIB, MAX_LOG_BYTES (default 268435456; empty leaves the key
# out, for a binary older than it), STEERHOOK_BIN, KEEP_TMP=1.
set -euo pipefail
DRILL=memory-drill
source "$(dirname "$0")/drill-lib.sh"

PAGES=${PAGES:-10}
ENTRIES=${ENTRIES:-10000}
ENTRY_BYTES=${ENTRY_BYTES:-1000}
EVENTS=${EVENTS:-10}
TARGET_KIB=${TARGET_KIB:-65536}
GROWTH_SLACK_KIB=${GROWTH_SLACK_KIB:-4096}
MAX_LOG_BYTES=${MAX_LOG_BYTES-268435456}
LOG_BYTES=$((PAGES * ENTRIES * ENTRY_BYTES))
build_release
make_tmp
mkdir -p "$TMP/out"

API_PORT=$(free_port)
python3 "$ROOT/scripts/fake-opensteer-logs.py" "$API_PORT" "$PAGES" "$ENTRIES" "$ENTRY_BYTES" \
    2>"$TMP/api.err" &
PIDS+=("$!")
api_up() { curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$API_PORT/runs/warmup" 2>/dev/null; }
poll 10 api_up || die "the fake API did not start"
note "building the fake's $PAGES pages ($LOG_BYTES bytes of logs per run)"
for n in $(seq 0 $((PAGES - 1))); do
    curl -fsS -m 120 -o /dev/null "http://127.0.0.1:$API_PORT/runs/warmup/logs?beforeLogCursor=page-$n" \
        || die "the fake API did not serve page $n"
done

PORT=$(free_port)
CFG=$TMP/steerhook.toml
LOG=$TMP/steerhook.log
cat >"$CFG" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[webhook]
secrets = ["whsec_memory_drill"]
[storage]
path = "$TMP/steerhook.db"
[log]
level = "warn"
[opensteer]
base_url = "http://127.0.0.1:$API_PORT"
api_key = "osk_memory_drill"
log_page_size = $ENTRIES
${MAX_LOG_BYTES:+max_log_bytes = $MAX_LOG_BYTES}
request_timeout_secs = 120
[[hook]]
name = "etl"
kind = "shell"
events = ["run.succeeded"]
command = ["/bin/sh", "-c", "wc -c > \"\$OUT/\$STEERHOOK_RUN_ID.bytes\""]
env = { OUT = "$TMP/out" }
timeout_secs = 600
TOML
if [ "${BARE_MALLOC:-}" = 1 ]; then
    note "glibc malloc with its defaults (BARE_MALLOC=1)"
else
    export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-131072}
    note "MALLOC_MMAP_THRESHOLD_=$MALLOC_MMAP_THRESHOLD_, as systemd/steerhook.service sets it"
fi
start_daemon "$CFG" "$LOG"
note "pid $DAEMON_PID: VmHWM $(hwm_kib "$DAEMON_PID") KiB, VmRSS $(rss_kib "$DAEMON_PID") KiB at start"

HALF_PEAK=""
for i in $(seq 1 "$EVENTS"); do
    run=run_memory_$i
    started=$SECONDS
    "$BIN" send-test --config "$CFG" --run-id "$run" >"$TMP/send-$i.txt" 2>&1 \
        || die "send-test failed: $(cat "$TMP/send-$i.txt")"
    grep -q '^202' "$TMP/send-$i.txt" || die "event $i was not accepted: $(cat "$TMP/send-$i.txt")"
    delivered() { test -s "$TMP/out/$run.bytes"; }
    if ! poll 600 delivered; then
        tail -n 20 "$LOG"
        die "event $i was not delivered within 600 s"
    fi
    bytes=$(tr -d ' \n' <"$TMP/out/$run.bytes")
    peak=$(hwm_kib "$DAEMON_PID")
    rss=$(rss_kib "$DAEMON_PID")
    note "event $i: the hook read $bytes bytes in $((SECONDS - started)) s; VmHWM $peak KiB, VmRSS $rss KiB"
    if [ "$bytes" -gt "$LOG_BYTES" ]; then
        pass "event $i: the hook got the whole document ($bytes bytes for $LOG_BYTES bytes of logs)"
    else
        fail "event $i: the hook got $bytes bytes, less than the $LOG_BYTES bytes of logs"
    fi
    [ "$i" -ne $(((EVENTS + 1) / 2)) ] || HALF_PEAK=$peak
done
sleep 5
PEAK=$(hwm_kib "$DAEMON_PID")
RSS=$(rss_kib "$DAEMON_PID")
echo "peak RSS: $PEAK KiB ($((PEAK / 1024)) MiB); RSS after: $RSS KiB ($((RSS / 1024)) MiB)"
if [ "$PEAK" -le "$TARGET_KIB" ]; then
    pass "peak RSS $PEAK KiB <= $TARGET_KIB KiB while delivering $EVENTS events of $LOG_BYTES bytes of logs"
else
    fail "peak RSS $PEAK KiB > $TARGET_KIB KiB"
fi
HALF=$(((EVENTS + 1) / 2))
if [ "$PEAK" -le $((HALF_PEAK + GROWTH_SLACK_KIB)) ]; then
    pass "no growth: peak $HALF_PEAK KiB after event $HALF, $PEAK KiB after event $EVENTS"
else
    fail "the peak grew from $HALF_PEAK KiB (event $HALF) to $PEAK KiB (event $EVENTS)"
fi
stop_daemon || fail "the daemon did not exit 0 on SIGTERM"
finish
