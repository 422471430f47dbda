"""Hostile clients for scripts/slow-clients-drill.sh (stdlib only).

    python3 slow_clients.py trickle PORT N_HEADER N_BODY MAX_SECS READY_FILE
        Opens N_HEADER connections that send a request head one byte per
        second (never finishing it) and N_BODY that send a full head, then
        the body one byte per second. Touches READY_FILE once all are
        connected. Each stops when the server answers or closes, or at
        MAX_SECS. Prints a JSON summary: per kind, how many were cut, when,
        and with what (the status line, or "closed").
    python3 slow_clients.py oversize PORT N PARALLEL MIB
        N requests with a chunked body of MIB MiB (no Content-Length),
        PARALLEL at a time, sent as fast as the server reads; prints the
        statuses and how long each took.
"""
import asyncio, json, statistics, sys, time

PATH = "/webhooks/opensteer"


async def trickler(port, kind, max_secs, connected, results):
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        results.append({"kind": kind, "cut": False, "how": f"connect failed: {e}"})
        connected.append(False)
        return
    connected.append(True)
    if kind == "header":
        to_trickle = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\nX-Padding: " + "a" * 200).encode()
    else:
        head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "x-opensteer-signature: t=1,v1=00\r\nContent-Length: 2000\r\n\r\n").encode()
        writer.write(head)
        await writer.drain()
        to_trickle = b"{" + b" " * 1998 + b"}"
    start = time.monotonic()
    how, i = None, 0
    while time.monotonic() - t0 < max_secs:
        try:
            if i < len(to_trickle):
                writer.write(to_trickle[i:i + 1]); i += 1
                await writer.drain()
            data = await asyncio.wait_for(reader.read(4096), timeout=1.0)
            how = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"
            break
        except asyncio.TimeoutError:
            continue
        except (ConnectionError, OSError) as e:
            how = f"reset ({type(e).__name__})"
            break
    results.append({"kind": kind, "cut": how is not None, "how": how or "still open",
                    "after": round(time.monotonic() - start, 2)})
    writer.close()


async def trickle(port, n_header, n_body, max_secs, ready_file):
    connected, results = [], []
    tasks = [asyncio.create_task(trickler(port, "header", max_secs, connected, results)) for _ in range(n_header)]
    tasks += [asyncio.create_task(trickler(port, "body", max_secs, connected, results)) for _ in range(n_body)]
    deadline = time.monotonic() + 10
    while len(connected) < n_header + n_body and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    open(ready_file, "w").write(f"{sum(connected)}\n")
    await asyncio.gather(*tasks)
    out = {}
    for kind in ("header", "body"):
        rs = [r for r in results if r["kind"] == kind]
        after = [r["after"] for r in rs if r["cut"] and "after" in r]
        hows = {}
        for r in rs:
            hows[r["how"]] = hows.get(r["how"], 0) + 1
        out[kind] = {"connections": len(rs), "cut": sum(r["cut"] for r in rs), "how": hows,
                     "cut_after_min": min(after, default=None),
                     "cut_after_median": statistics.median(after) if after else None,
                     "cut_after_max": max(after, default=None)}
    print(json.dumps(out))


async def oversize_one(port, mib):
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  "x-opensteer-signature: t=1,v1=00\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    chunk = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
    sent = 0
    status = None
    try:
        for _ in range(mib * 16):
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), timeout=10)
            sent += 65536
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    except (ConnectionError, OSError, asyncio.TimeoutError):
        pass  # the server stopped reading: expected after the limit
    try:
        data = await asyncio.wait_for(reader.read(4096), timeout=10)
        status = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"
    except (ConnectionError, OSError) as e:
        status = f"reset ({type(e).__name__})"
    except asyncio.TimeoutError:
        status = "no answer in 10 s"
    writer.close()
    return {"status": status, "sent_mib": round(sent / 1048576, 2), "secs": round(time.monotonic() - t0, 2)}


async def oversize(port, n, parallel, mib):
    sem = asyncio.Semaphore(parallel)
    async def one():
        async with sem:
            return await oversize_one(port, mib)
    rs = await asyncio.gather(*[one() for _ in range(n)])
    statuses = {}
    for r in rs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    print(json.dumps({"requests": n, "statuses": statuses,
                      "max_sent_mib": max(r["sent_mib"] for r in rs),
                      "max_secs": max(r["secs"] for r in rs)}))


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "trickle":
        asyncio.run(trickle(port, int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]))
    else:
        asyncio.run(oversize(port, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
