#!/usr/bin/env python3
"""A WebSocket app for the e2e tests, on Debian's python3-websockets.

Paths:
  /echo            every message back as it came (text or binary)
  /echo1           the first message back, then a close 4001 "h3 bye"
  /push?n=N&size=S N binary messages of S pattern bytes, then a close 1000
  /flood           binary 64 KiB messages until the peer stops taking them;
                   the bytes sent so far: GET /__flood (plain HTTP)
  /close           closes with the code and reason the first message names,
                   "CODE REASON"
  /headers         one text message: the request's fields as JSON

Plain HTTP on the same port: /__flood, /plain (200), /forbid (403): an app
that answers an upgrade with an ordinary response; /badaccept, /noaccept: a
101 whose Sec-WebSocket-Accept answers another key, or is missing; /page: an HTML page whose
script opens a WebSocket to /echo (Chromium's own client). Prints "listening PORT".
"""

import argparse
import asyncio
import http
import json
import sys

import websockets
import websockets.server

flood_sent = [0]
chromium_done = None  # set when the page's WebSocket (/echo?chromium) has closed


def pattern(n):
    return bytes(i & 0xFF for i in range(n))


async def handler(ws, path):
    route, _, query = path.partition("?")
    args = dict(kv.split("=", 1) for kv in query.split("&") if "=" in kv)
    if route == "/echo":
        async for msg in ws:
            await ws.send(msg)
        if "chromium" in query:
            chromium_done.set()
    elif route == "/echo1":
        await ws.send(await ws.recv())
        await ws.close(4001, "h3 bye")
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


# Chromium's own WebSocket: one echo round trip, then a close with a code.
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>ws</title></head>
<body><div id="out">pending</div>
<script>
var out = document.getElementById('out');
var ws = new WebSocket('wss://' + location.host + '/echo?chromium');
ws.onopen = function () { ws.send('chromium says hi'); };
ws.onmessage = function (e) { out.textContent = 'echo=' + e.data; ws.close(4005, 'page done'); };
ws.onclose = function (e) { out.textContent += ' closed=' + e.code; };
ws.onerror = function () { out.textContent += ' error'; };
</script><img src="/hold" alt=""></body></html>
"""
GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f904010000000"
                    "02c00000000010001000002024401003b")


async def process_request(path, headers):
    if path == "/__flood":
        return http.HTTPStatus.OK, [("Content-Type", "text/plain")], \
            str(flood_sent[0]).encode()
    if path.startswith("/hold"):
        # The page's load (and so Chromium's --dump-dom) waits for this
        # image, which waits for the page's WebSocket to close.
        try:
            await asyncio.wait_for(chromium_done.wait(), 30)
        except asyncio.TimeoutError:
            pass
        chromium_done.clear()
        return http.HTTPStatus.OK, [("Content-Type", "image/gif")], GIF
    if path.startswith("/page"):
        return http.HTTPStatus.OK, [("Content-Type", "text/html; charset=utf-8")], PAGE
    if path.startswith("/plain"):
        return http.HTTPStatus.OK, [("Content-Type", "text/plain")], b"plain answer\n"
    if path.startswith("/forbid"):
        return http.HTTPStatus.FORBIDDEN, [("Content-Type", "text/plain")], b"app says no\n"
    if path.startswith("/badaccept") or path.startswith("/noaccept"):
        # A 101 that does not answer the request's key: another key's
        # accept (RFC 6455 1.3's example), or none at all.
        hdrs = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
        if path.startswith("/badaccept"):
            hdrs.append(("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
        return http.HTTPStatus.SWITCHING_PROTOCOLS, hdrs, b""
    return None


async def main():
    global chromium_done
    chromium_done = asyncio.Event()
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    async with websockets.server.serve(handler, "127.0.0.1", a.port, max_size=None,
                                       process_request=process_request,
                                       ping_interval=None, close_timeout=2) as srv:
        port = srv.sockets[0].getsockname()[1]
        print("listening %d" % port, flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
