#!/usr/bin/env bash
# Slow and hostile clients drill (SPEC §4; server.header_timeout_ms,
# body_timeout_ms, max_body_bytes).
#
# 1. 200 raw TCP connections (100 trickling a request head, 100 trickling a
#    body, one byte per second) are opened and kept trickling.
# 2. Meanwhile examples/loadgen sends 100 signed events at 50 req/s: every
#    one must be answered 202 and the p99 latency must stay under 1 s.
# 3. Every trickling connection must be cut: heads after header_timeout_ms
#    (HEADER_MS, default 2000; 408 or a close), bodies after body_timeout_ms
#    (BODY_MS, default 4000; 408 REQUEST_TIMEOUT), each within SLACK_MS
#    (default 2500) of its timeout.
# 4. 20 requests with a 10 MiB chunked body (4 at a time) are each answered
#    413 after at most max_body_bytes (1 MiB) plus socket buffers, and the
#    daemon's VmRSS grows by less than RSS_MAX_GROWTH_KIB (default 65536).
#
# Environment: HEADER_MS, BODY_MS, SLACK_MS, STEERHOOK_BIN, KEEP_TMP=1.
set -euo pipefail
DRILL=slow-clients-drill
source "$(dirname "$0")/drill-lib.sh"

HEADER_MS=${HEADER_MS:-2000}
BODY_MS=${BODY_MS:-4000}
SLACK_MS=${SLACK_MS:-2500}
RSS_MAX_GROWTH_KIB=${RSS_MAX_GROWTH_KIB:-65536}
SECRET=whsec_slow_clients_drill
PY="python3 $(dirname "$0")/slow_clients.py"
build_release
make_tmp
PORT=$(free_port)
CFG=$TMP/steerhook.toml
LOG=$TMP/steerhook.log
cat >"$CFG" <<TOML
[server]
listen = "127.0.0.1:$PORT"
workers = 2
header_timeout_ms = $HEADER_MS
body_timeout_ms = $BODY_MS
max_body_bytes = 1048576
[webhook]
secrets = ["$SECRET"]
[storage]
path = "$TMP/steerhook.db"
[log]
level = "warn"
TOML
start_daemon "$CFG" "$LOG"
note "header_timeout_ms=$HEADER_MS body_timeout_ms=$BODY_MS max_body_bytes=1048576, pid $DAEMON_PID"

timeout 60 $PY trickle "$PORT" 100 100 30 "$TMP/ready" >"$TMP/trickle.json" 2>"$TMP/trickle.err" &
TR=$!
PIDS+=("$TR")
poll 15 test -s "$TMP/ready" || die "the tricklers did not connect"
note "$(cat "$TMP/ready" | tr -d '\n') trickling connections open"
timeout 60 "$LOADGEN" --url "http://127.0.0.1:$PORT/webhooks/opensteer" --secret "$SECRET" \
    --rate 50 --count 100 --duration 10s --json >"$TMP/signed.json" || fail "loadgen failed"
note "signed traffic: $(cat "$TMP/signed.json")"
python3 - "$TMP/signed.json" <<'PY' || FAILED=1
import json, sys
d = json.load(open(sys.argv[1]))
ok = d["by_status"].get("202 accepted", 0)
good = ok == 100 and d["requests"] == 100
print(("PASS" if good else "FAIL") + f": slow-clients-drill: {ok}/100 signed requests answered 202 while 200 connections trickled ({d['by_status']})")
fast = d["p99_ms"] < 1000
print(("PASS" if fast else "FAIL") + f": slow-clients-drill: p99 {d['p99_ms']:.1f} ms (max {d['max_ms']:.1f} ms) < 1000 ms")
sys.exit(0 if good and fast else 1)
PY
tr_rc=0
wait "$TR" || tr_rc=$?
[ "$tr_rc" = 0 ] || fail "the trickler exited $tr_rc: $(cat "$TMP/trickle.err")"
note "tricklers: $(cat "$TMP/trickle.json")"
python3 - "$TMP/trickle.json" "$HEADER_MS" "$BODY_MS" "$SLACK_MS" <<'PY' || FAILED=1
import json, sys
d = json.load(open(sys.argv[1]))
limits = {"header": int(sys.argv[2]) / 1000, "body": int(sys.argv[3]) / 1000}
slack = int(sys.argv[4]) / 1000
ok = True
for kind, k in d.items():
    cut_all = k["cut"] == k["connections"] == 100
    in_time = k["cut_after_max"] is not None and k["cut_after_max"] <= limits[kind] + slack \
        and k["cut_after_min"] >= limits[kind] - 0.5
    allowed = {"header": ("HTTP/1.1 408", "closed", "reset"), "body": ("HTTP/1.1 408",)}[kind]
    hows_ok = all(h.startswith(allowed) for h in k["how"])
    good = cut_all and in_time and hows_ok
    ok &= good
    print(("PASS" if good else "FAIL") + f": slow-clients-drill: {k['cut']}/{k['connections']} {kind}-tricklers cut "
          f"after {k['cut_after_min']}-{k['cut_after_max']} s (timeout {limits[kind]} s): {k['how']}")
sys.exit(0 if ok else 1)
PY
if healthy; then pass "/healthz answers after the tricklers"; else fail "/healthz does not answer"; fi

rss0=$(rss_kib "$DAEMON_PID")
over=$(timeout 120 $PY oversize "$PORT" 20 4 10) || fail "the oversize sender failed"
rss1=$(rss_kib "$DAEMON_PID")
hwm=$(hwm_kib "$DAEMON_PID")
note "10 MiB chunked bodies: $over"
note "VmRSS before ${rss0} KiB, after ${rss1} KiB, peak (VmHWM) ${hwm} KiB"
python3 - "$over" <<'PY' || FAILED=1
import json, sys
d = json.loads(sys.argv[1])
good = d["statuses"] == {"HTTP/1.1 413 Payload Too Large": 20}
print(("PASS" if good else "FAIL") + f": slow-clients-drill: 20 chunked 10 MiB bodies answered 413: {d['statuses']} (each sent at most {d['max_sent_mib']} MiB before the answer)")
sys.exit(0 if good else 1)
PY
growth=$((rss1 - rss0))
[ "$growth" -lt "$RSS_MAX_GROWTH_KIB" ] && pass "RSS grew by ${growth} KiB (< ${RSS_MAX_GROWTH_KIB}); peak ${hwm} KiB" \
    || fail "RSS grew by ${growth} KiB (limit ${RSS_MAX_GROWTH_KIB})"
n=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM events").fetchone()[0])' "$TMP/steerhook.db")
[ "$n" = 100 ] && pass "100 events stored (the signed ones only)" || fail "$n events stored, expected 100"
rc=0
stop_daemon || rc=$?
[ "$rc" = 0 ] && pass "exit 0 on SIGTERM" || fail "exit $rc on SIGTERM"
finish
