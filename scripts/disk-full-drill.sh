#!/usr/bin/env bash
# Disk-full drill (SPEC §4 step 10, §7): the database on a small tmpfs.
#
# 8 MiB rather than 2: SQLite's WAL grows to ~4 MiB (1000 pages) before it is
# checkpointed and reused, so with 2 MiB the WAL alone fills the disk again
# right after the filler is deleted (seen in the first run: 60 events
# accepted, then 503 again). The drill is about the filler, not about that.
#
# 1. Mount an 8 MiB tmpfs (needs root: without it, prints SKIP and exits 0),
#    start `steerhook serve` with its database there, and fill the tmpfs
#    with a filler file down to FREE_KIB (default 256) KiB free.
# 2. Send distinct signed events (4 KiB bodies) one after another until the
#    first 503, then EXTRA (default 30) more. Every 503 must carry a
#    positive Retry-After.
# 3. Delete the filler. WITHOUT restarting the daemon, resend every refused
#    event (as a sender honouring Retry-After would) plus 50 new ones: 2xx
#    must resume (deadline 30 s; if it does not, the tmpfs is remounted at
#    16 MiB and that is reported) and every one of them must get a 2xx.
# 4. SIGTERM (exit 0), then every id answered 2xx in steps 2 and 3 must be
#    in `events`, and PRAGMA integrity_check must be ok.
#
# Environment: TMPFS_SIZE (default 8m), FREE_KIB, EXTRA, STEERHOOK_BIN (skip the build), KEEP_TMP=1.
set -euo pipefail
DRILL=disk-full-drill
source "$(dirname "$0")/drill-lib.sh"

FREE_KIB=${FREE_KIB:-256}
EXTRA=${EXTRA:-30}
SECRET=whsec_disk_full_drill
SENDER="python3 $(dirname "$0")/webhook_sender.py"
build_release
make_tmp
MNT=$TMP/mnt
mkdir -p "$MNT"
if ! mount -t tmpfs -o size=${TMPFS_SIZE:-8m} steerhook-drill "$MNT" 2>/dev/null; then
    echo "SKIP: $DRILL: cannot mount a tmpfs (needs root)"
    exit 0
fi
MOUNTS+=("$MNT")
PORT=$(free_port)
URL=http://127.0.0.1:$PORT/webhooks/opensteer
CFG=$TMP/steerhook.toml
LOG=$TMP/steerhook.log
cat >"$CFG" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[webhook]
secrets = ["$SECRET"]
[storage]
path = "$MNT/steerhook.db"
[log]
level = "warn"
TOML
start_daemon "$CFG" "$LOG"
PID0=$DAEMON_PID
python3 - "$MNT" "$FREE_KIB" <<'PY'
import os, sys
mnt, keep = sys.argv[1], int(sys.argv[2]) * 1024
st = os.statvfs(mnt)
free = st.f_bavail * st.f_frsize
with open(os.path.join(mnt, "filler"), "wb") as f:
    f.write(b"\0" * max(0, free - keep))
    f.flush(); os.fsync(f.fileno())
PY
note "tmpfs: $(df -k --output=used,avail "$MNT" | tail -n 1 | awk '{print $1 " KiB used, " $2 " KiB free"}') after the filler"

fill=$($SENDER "$URL" "$SECRET" fill "$TMP/fill" 5000 "$EXTRA" 4096)
note "filling: $fill"
read -r refused no_ra first < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["refused_503"], d["503_without_retry_after"], d["first_503_at"])' "$fill")
if [ "$refused" -gt 0 ]; then pass "503 STORAGE_UNAVAILABLE once the disk was full (first at event #$first, $refused refused)"; else fail "no 503 after 5000 events on a full disk"; fi
if [ "$no_ra" = 0 ]; then pass "every 503 carried Retry-After"; else fail "$no_ra answers 503 without a positive Retry-After"; fi
if healthy; then note "/healthz while full: 200 (reads still work)"; else note "/healthz while full: not 200"; fi

rm -f "$MNT/filler"
note "filler deleted: $(df -k --output=avail "$MNT" | tail -n 1) KiB free"
retry=$($SENDER "$URL" "$SECRET" retry "$TMP/retry" "$TMP/fill.refused" 50 4096 30)
note "after freeing space: $retry"
read -r first_ok acked to_send dups < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["first_2xx_after_secs"], d["acked"], d["to_send"], d["duplicates"])' "$retry")
if [ "$first_ok" = None ]; then
    note "no 2xx within 30 s of deleting the filler: remounting the tmpfs at 16 MiB"
    mount -o remount,size=16m "$MNT" || fail "remount failed"
    retry=$($SENDER "$URL" "$SECRET" retry "$TMP/retry" "$TMP/fill.refused" 50 4096 30)
    note "after remounting: $retry"
    read -r first_ok acked to_send dups < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["first_2xx_after_secs"], d["acked"], d["to_send"], d["duplicates"])' "$retry")
fi
[ "$first_ok" != None ] && pass "2xx resumed ${first_ok} s after space was freed" || fail "2xx never resumed"
[ "$acked" = "$to_send" ] && pass "all $to_send resent and new events answered 2xx" || fail "only $acked of $to_send answered 2xx after recovery"
[ "$dups" = 0 ] && pass "no refused (503) event turned out to be stored (no 'duplicate' on resend)" \
    || fail "$dups events answered 503 were stored anyway (the resend got 'duplicate')"
if kill -0 "$PID0" 2>/dev/null && [ "$DAEMON_PID" = "$PID0" ]; then pass "same daemon process throughout (no restart)"; else fail "the daemon died"; tail -n 20 "$LOG"; fi
errors=$(grep -c 'commit failed' "$LOG" || true)
note "daemon log: $errors 'commit failed' lines"
rc=0
stop_daemon || rc=$?
[ "$rc" = 0 ] && pass "exit 0 on SIGTERM" || fail "exit $rc on SIGTERM"

cat "$TMP/fill.acked" "$TMP/retry.acked" >"$TMP/acked.all"
python3 - "$MNT/steerhook.db" "$TMP/acked.all" <<'PY' || FAILED=1
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=10)
ids = [l.strip() for l in open(sys.argv[2]) if l.strip()]
stored = {r[0] for r in c.execute("SELECT id FROM events")}
lost = [i for i in ids if i not in stored]
integrity = c.execute("PRAGMA integrity_check").fetchone()[0]
print(f"lost={len(lost)}" + ("" if not lost else " " + " ".join(lost[:50])))
print(("PASS" if not lost else "FAIL") + f": disk-full-drill: {len(ids)} acknowledged, {len(stored)} stored, {len(lost)} lost")
print(("PASS" if integrity == "ok" else "FAIL") + f": disk-full-drill: integrity_check = {integrity}")
sys.exit(0 if not lost and integrity == "ok" else 1)
PY
finish
