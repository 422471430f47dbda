#!/usr/bin/env python3
"""A fake Opensteer API for scripts/bench.sh: answers every run and one page
of logs at once, over HTTP/1.1 keep-alive.

    python3 scripts/fake-opensteer-api.py PORT

GET /runs/{id}       -> a succeeded run object
GET /runs/{id}/logs  -> one page of three entries and no next cursor
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY the second
    # waits for the client's delayed ACK (40 ms on Linux) on every request.
    disable_nagle_algorithm = True

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "runs":
            doc = {"id": parts[1], "status": "succeeded", "scraperId": "scr_bench",
                   "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}
            status = 200
        elif len(parts) == 3 and parts[0] == "runs" and parts[2] == "logs":
            doc = {"logs": [{"ts": "2026-01-01T00:00:00.%03dZ" % i, "level": "info",
                             "message": "line %d" % i} for i in range(3)],
                   "nextCursor": None}
            status = 200
        else:
            doc = {"error": "not found", "code": "NOT_FOUND"}
            status = 404
        body = json.dumps(doc).encode()
        self.send_response(status)
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
