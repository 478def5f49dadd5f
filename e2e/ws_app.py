#!/usr/bin/env python3
"""A WebSocket app for the e2e tests, on Debian's python3-websockets.

Paths:
  /echo            every message back as it came (text or binary)
  /push?n=N&size=S N binary messages of S pattern bytes, then a close 1000
  /flood           binary 64 KiB messages until the peer stops taking them;
                   the bytes sent so far: GET /__flood (plain HTTP)
  /close           closes with the code and reason the first message names,
                   "CODE REASON"
  /headers         one text message: the request's fields as JSON

Plain HTTP on the same port: /__flood, /plain (200), /forbid (403): an app
that answers an upgrade with an ordinary response. Prints "listening PORT".
"""

import argparse
import asyncio
import http
import json
import sys

import websockets
import websockets.server

flood_sent = [0]


def pattern(n):
    return bytes(i & 0xFF for i in range(n))


async def handler(ws, path):
    route, _, query = path.partition("?")
    args = dict(kv.split("=", 1) for kv in query.split("&") if "=" in kv)
    if route == "/echo":
        async for msg in ws:
            await ws.send(msg)
    elif route == "/push":
        n, size = int(args.get("n", "10")), int(args.get("size", "100"))
        for i in range(n):
            await ws.send(bytes([i & 0xFF]) * size)
        await ws.close(1000, "pushed")
    elif route == "/flood":
        chunk = pattern(65536)
        while True:
            await ws.send(chunk)
            flood_sent[0] += len(chunk)
    elif route == "/close":
        msg = await ws.recv()
        code, _, reason = msg.partition(" ")
        await ws.close(int(code), reason)
    elif route == "/headers":
        await ws.send(json.dumps({k.lower(): v for k, v in ws.request_headers.raw_items()}))
        await ws.wait_closed()


async def process_request(path, headers):
    if path == "/__flood":
        return http.HTTPStatus.OK, [("Content-Type", "text/plain")], \
            str(flood_sent[0]).encode()
    if path.startswith("/plain"):
        return http.HTTPStatus.OK, [("Content-Type", "text/plain")], b"plain answer\n"
    if path.startswith("/forbid"):
        return http.HTTPStatus.FORBIDDEN, [("Content-Type", "text/plain")], b"app says no\n"
    return None


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    async with websockets.server.serve(handler, "127.0.0.1", a.port, max_size=None,
                                       process_request=process_request,
                                       ping_interval=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        print("listening %d" % port, flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
