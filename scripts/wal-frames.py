#!/usr/bin/env python3
"""How many WAL frames (pages) one group commit writes, and to which b-tree.

Builds steerhook's schema from src/store/schema.rs in a scratch database,
commits batches of BATCH events the way ingest does (the event row, a fetch
job and two delivery jobs, as with [opensteer] and two hooks), then reads the
frames of NB commits back from the WAL and names each page's table or index
(dbstat). Every frame costs two pwrite()s at commit and is written again at
the next checkpoint, so frames per event is what the commit costs on disk.

    python3 scripts/wal-frames.py            # BATCH=7, ids as loadgen makes them
    BATCH=16 python3 scripts/wal-frames.py
    RANDOM_IDS=1 python3 scripts/wal-frames.py   # random event and run ids

Needs python3's sqlite3 module with dbstat (Debian's has it).
"""
import collections
import os
import random
import re
import sqlite3
import struct
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BATCH = int(os.environ.get("BATCH", 7))
WARM_COMMITS = 2000
NB = 300
RANDOM_IDS = bool(os.environ.get("RANDOM_IDS"))

schema = open(os.path.join(ROOT, "src/store/schema.rs")).read()
migrations = re.findall(r'M::up\(\s*r?#?"(.*?)"#?,?\s*\)', schema, re.S)

tmp = tempfile.mkdtemp()
path = os.path.join(tmp, "t.db")
c = sqlite3.connect(path, isolation_level=None)
c.execute("pragma journal_mode=wal")
c.execute("pragma wal_autocheckpoint=0")
for m in migrations:
    c.executescript(m)
c.execute("pragma wal_checkpoint(truncate)")

n = 0
body = b'{"x":"' + b"a" * 1000 + b'"}'
prefix = "12345_987654321"


def commit_one_batch():
    global n
    c.execute("begin immediate")
    for _ in range(BATCH):
        n += 1
        if RANDOM_IDS:
            eid, rid = "evt_%032x" % random.getrandbits(128), "run_%032x" % random.getrandbits(128)
        else:  # as examples/loadgen.rs makes them
            eid, rid = "evt_%s_%d" % (prefix, n), "run_%s_%d" % (prefix, n)
        c.execute(
            "insert into events (id, event_type, run_id, signed_at, received_at, client_addr, body)"
            " values (?, 'run.succeeded', ?, 1767225600, ?, '127.0.0.1', ?)",
            (eid, rid, 1767225600000 + n, body),
        )
        seq = c.execute("select last_insert_rowid()").fetchone()[0]
        c.execute(
            "insert into jobs (event_seq, kind, hook, state, due_at, created_at, updated_at)"
            " values (?, 'fetch', '', 'pending', ?, ?, ?)", (seq, n, n, n))
        for hook in ("true-1", "true-2"):
            c.execute(
                "insert into jobs (event_seq, kind, hook, state, due_at, created_at, updated_at)"
                " values (?, 'deliver', ?, 'blocked', ?, ?, ?)", (seq, hook, n, n, n))
    c.execute("commit")


for _ in range(WARM_COMMITS):
    commit_one_batch()
c.execute("pragma wal_checkpoint(truncate)")
for _ in range(NB):
    commit_one_batch()

wal = open(path + "-wal", "rb").read()
page_size = struct.unpack(">I", wal[8:12])[0]
frames = []
off = 32
while off + 24 <= len(wal):
    frames.append(struct.unpack(">I", wal[off:off + 4])[0])
    off += 24 + page_size
c.execute("pragma wal_checkpoint(truncate)")
owner = dict(c.execute("select pageno, name from dbstat").fetchall())
by_btree = collections.Counter(owner.get(p, "?") for p in frames)
print(f"batch {BATCH} events, {'random' if RANDOM_IDS else 'loadgen'} ids: "
      f"{len(frames) / NB:.1f} frames per commit, {len(frames) / NB / BATCH:.2f} per event")
for name, count in by_btree.most_common():
    print(f"  {name:28} {count / NB:5.2f}")
