"""Signed webhook sender for the drills (stdlib only).

    python3 webhook_sender.py URL SECRET fill  OUT_PREFIX MAX_EVENTS EXTRA_AFTER_503 BODY_BYTES
    python3 webhook_sender.py URL SECRET retry OUT_PREFIX IDS_FILE NEW_EVENTS BODY_BYTES DEADLINE_SECS

`fill` sends distinct events one after another until the first 503, then
EXTRA_AFTER_503 more, and writes OUT_PREFIX.acked (ids answered 2xx),
OUT_PREFIX.refused (ids answered 503) and a JSON summary on stdout.
`retry` resends the ids of IDS_FILE (as a sender retrying after 503 would),
waiting up to DEADLINE_SECS for the first 2xx, then every remaining one
and NEW_EVENTS new ones; writes OUT_PREFIX.acked and a JSON summary.
"""
import hashlib, hmac, http.client, json, sys, time, urllib.parse


def body_for(event_id, size):
    run_id = event_id.replace("evt_", "run_", 1)
    doc = {"id": event_id, "type": "run.succeeded",
           "data": {"run": {"id": run_id, "status": "succeeded"}}, "padding": ""}
    raw = json.dumps(doc)
    doc["padding"] = "x" * max(0, size - len(raw))
    return json.dumps(doc).encode()


class Sender:
    def __init__(self, url, secret):
        self.u = urllib.parse.urlparse(url)
        self.secret = secret.encode()
        self.conn = None

    def post(self, body):
        t = int(time.time())
        sig = hmac.new(self.secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        headers = {"content-type": "application/json", "x-opensteer-signature": f"t={t},v1={sig}"}
        for _ in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.u.hostname, self.u.port, timeout=30)
                self.conn.request("POST", self.u.path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close(); self.conn = None
                return r.status, r.getheader("retry-after"), data
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                if self.conn:
                    self.conn.close()
                self.conn = None
                last = e
        return None, None, str(last).encode()


def fill(s, prefix, max_events, extra, size):
    acked, refused, other = [], [], {}
    no_retry_after, ok_after_503 = [], 0
    first_503_at = None
    for n in range(max_events):
        eid = f"evt_df_{n:05d}"
        status, retry_after, data = s.post(body_for(eid, size))
        if status is not None and 200 <= status < 300:
            acked.append(eid)
            if first_503_at is not None:
                ok_after_503 += 1
        elif status == 503:
            refused.append(eid)
            if not (retry_after and retry_after.strip().isdigit() and int(retry_after) > 0):
                no_retry_after.append(eid)
            if first_503_at is None:
                first_503_at = n
        else:
            other[str(status)] = other.get(str(status), 0) + 1
        if first_503_at is not None and n - first_503_at >= extra:
            break
    open(prefix + ".acked", "w").write("".join(i + "\n" for i in acked))
    open(prefix + ".refused", "w").write("".join(i + "\n" for i in refused))
    print(json.dumps({"sent": n + 1, "acked": len(acked), "refused_503": len(refused),
                      "first_503_at": first_503_at, "acked_after_first_503": ok_after_503,
                      "503_without_retry_after": len(no_retry_after), "other": other}))


def retry(s, prefix, ids_file, new, size, deadline):
    ids = [l.strip() for l in open(ids_file) if l.strip()]
    ids += [f"evt_df_new_{n:05d}" for n in range(new)]
    acked, dup, not_ok = [], [], {}
    started = time.time()
    first_ok_after = None
    i = 0
    attempts = 0
    while i < len(ids) and time.time() - started < deadline:
        attempts += 1
        status, _, data = s.post(body_for(ids[i], size))
        if status is not None and 200 <= status < 300:
            if first_ok_after is None:
                first_ok_after = round(time.time() - started, 2)
            acked.append(ids[i])
            if b"duplicate" in data:
                dup.append(ids[i])
            i += 1
        elif first_ok_after is None:
            time.sleep(0.2)  # space not back yet: retry the same event
        else:
            not_ok[str(status)] = not_ok.get(str(status), 0) + 1
            i += 1
    open(prefix + ".acked", "w").write("".join(x + "\n" for x in acked))
    print(json.dumps({"to_send": len(ids), "acked": len(acked), "duplicates": len(dup),
                      "duplicate_ids": dup[:20], "first_2xx_after_secs": first_ok_after,
                      "requests": attempts, "not_2xx_after_recovery": not_ok}))


if __name__ == "__main__":
    url, secret, mode, prefix = sys.argv[1:5]
    s = Sender(url, secret)
    if mode == "fill":
        fill(s, prefix, int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]))
    else:
        retry(s, prefix, sys.argv[5], int(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8]))
