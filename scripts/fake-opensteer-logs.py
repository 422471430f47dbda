#!/usr/bin/env python3
"""A fake Opensteer API serving large logs, for scripts/memory-drill.sh.

    python3 scripts/fake-opensteer-logs.py PORT PAGES ENTRIES_PER_PAGE ENTRY_BYTES

GET /runs/{id}       -> a succeeded run object
GET /runs/{id}/logs  -> PAGES pages, newest first, of ENTRIES_PER_PAGE entries
                        of about ENTRY_BYTES bytes each (with an RFC 3339
                        "ts"); each page names the next with nextCursor

Each page is built once and kept, so the fake answers quickly; it needs
about PAGES * ENTRIES_PER_PAGE * ENTRY_BYTES bytes of memory itself.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PAGES, PER_PAGE, ENTRY_BYTES = (int(a) for a in sys.argv[2:5])
BODIES = {}


def page(n):
    """Page n (0 = the newest) as JSON bytes."""
    if n not in BODIES:
        first = (PAGES - 1 - n) * PER_PAGE
        entries = []
        for i in range(first, first + PER_PAGE):
            head = {"ts": "2026-01-01T%02d:%02d:%02d.%03dZ" % (
                i // 3_600_000 % 24, i // 60_000 % 60, i // 1000 % 60, i % 1000),
                "level": "info", "seq": i}
            # ,"message":"..." adds 13 bytes and the padding.
            compact = len(json.dumps(head, separators=(",", ":")))
            head["message"] = "m" * max(0, ENTRY_BYTES - compact - 13)
            entries.append(head)
        doc = {"logs": entries}
        if n + 1 < PAGES:
            doc["nextCursor"] = "page-%d" % (n + 1)
        BODIES[n] = json.dumps(doc, separators=(",", ":")).encode()
    return BODIES[n]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "runs":
            body = json.dumps({"id": parts[1], "status": "succeeded"}).encode()
        elif len(parts) == 3 and parts[0] == "runs" and parts[2] == "logs":
            cursor = parse_qs(url.query).get("beforeLogCursor", ["page-0"])[0]
            body = page(int(cursor.split("-")[1]))
        else:
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
