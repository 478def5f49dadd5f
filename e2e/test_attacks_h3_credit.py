#!/usr/bin/env python3
"""test_attacks_h3_credit.py - the HTTP/3 front never credits connection
flow control (MAX_DATA) for bytes it did not receive.

When qrux answers a request early (here 421: no route for the authority)
it reads the rest of the body and drops it, crediting each byte as it
comes. A request whose DATA then runs past its content-length is malformed
(RFC 9114 4.1.2): its stream is reset and the bytes of that read are
credited, but only those nobody credited yet: crediting the DATA the
exchange already took a second time lets the client send past the
connection window, a little more with every such stream.

h3probe (raw mode) sends on one connection a control stream, PROBES
requests of HEADERS(content-length L) + DATA(L) + DATA(1 byte), each small
enough to arrive in one read, then one request with a 2.5 MiB body that is
read and dropped, so that the credit passes the point where qrux sends
MAX_DATA (half its 4 MiB initial_max_data) once. h3probe prints the most
credit it ever held unused after any packet (--print-max-data): the
server's MAX_DATA less what the client had sent by then. A server that
credits only bytes it received never lets that exceed initial_max_data;
over-crediting L per malformed stream (PROBES x L, well over the 64 KiB a
single stream may have in flight) does.

  malformed after an early answer   every probe stream reset
                                    (H3_MESSAGE_ERROR), the large request
                                    answered 421 and read to its end, a
                                    MAX_DATA received, peak unused credit
                                    <= 4 MiB, qrux serves on
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attacklib import Proxy  # noqa: E402
from harness import Env, run  # noqa: E402
from test_h3_conformance import CONTROL, POST, fields, frame, headers, lit_name_ref  # noqa: E402

INITIAL_MAX_DATA = 4 * 1024 * 1024  # proxy/front/quic/quic.c
H3_MESSAGE_ERROR = 0x10E
PROBES, L = 400, 900
FILLER = 2560 * 1024
CONTENT_LENGTH = 4  # QPACK static table index of content-length


def probe_bin():
    b = os.environ.get("H3PROBE_BIN") or os.path.join(
        os.path.dirname(os.environ.get("QRUX_BIN", "")), "h3probe")
    if not os.access(b, os.X_OK):
        raise RuntimeError("h3probe not found (H3PROBE_BIN=%r): build the h3probe target" % b)
    return b


def request(body_len, data):
    block = fields(method=POST, path="/upload",
                   extra=lit_name_ref(CONTENT_LENGTH, str(body_len)))
    return headers(block) + data


def malformed_after_early_answer(env, p):
    probe = request(L, frame(0x00, b"a" * L) + frame(0x00, b"b"))  # one byte past L
    filler = request(FILLER, frame(0x00, b"f" * FILLER))
    with tempfile.NamedTemporaryFile(dir=env.dir, delete=False) as f:
        f.write(filler)
    cmd = [probe_bin(), "127.0.0.1", str(p.uport), "--timeout", "60", "--print-max-data",
           "--uni", CONTROL.hex()]
    for _ in range(PROBES):
        cmd += ["--bidi", probe.hex()]
    cmd += ["--bidi-file", f.name]
    rc, out, err = run(cmd, timeout=90)
    with open(os.path.join(env.dir, "h3probe.out"), "wb") as o:
        o.write(out)
    lines = out.decode("utf-8", "replace").splitlines()
    kv = dict(ln.split(" ", 1) for ln in lines if ln.startswith(("max-data", "stream-sent")))
    resets = [ln for ln in lines if ln.startswith("bidi-close ") and
              int(ln.split()[2], 16) == H3_MESSAGE_ERROR]
    env.eq("h3probe ran to the end", rc, 0, err.decode("utf-8", "replace")[-500:])
    closes = [ln for ln in lines if ln.startswith("bidi-close ")]
    env.eq("every request stream closed", len(closes), PROBES + 1, closes[:5])
    # A probe whose last bytes come after qrux has asked it to stop is
    # closed without reaching the malformed path: most do reach it.
    env.check("malformed requests reset with H3_MESSAGE_ERROR (%d of %d)" % (len(resets), PROBES),
              len(resets) >= PROBES // 2, closes[:5])
    filler_data = "".join(ln.split()[2] for ln in lines if ln.startswith("bidi-data "))
    env.check("the large request answered 421 (its body read and dropped)",
              bytes.fromhex(filler_data).find(b"421") >= 0, lines[-10:])
    sent = int(kv.get("stream-sent", 0))
    env.check("the client sent the whole large body (%d stream bytes)" % sent,
              sent >= FILLER + PROBES * L, kv)
    max_data = int(kv.get("max-data", 0))
    env.check("a MAX_DATA reached the client (max-data %d > %d)" % (max_data, INITIAL_MAX_DATA),
              max_data > INITIAL_MAX_DATA, kv)
    peak = int(kv.get("max-data-left-peak", -1))
    env.check("credit never above what the client sent: peak unused %d <= %d" %
              (peak, INITIAL_MAX_DATA), 0 <= peak <= INITIAL_MAX_DATA, kv)


def main():
    with Env("attacks_h3_credit") as env:
        be = env.backend()
        # Only app.example is routed: "localhost" gets 421 at its head.
        p = Proxy(env, [("app.example", be.addr)], workers=1,
                  limits={"max_streams_per_connection": 1000})
        env.case("malformed requests after an early answer", malformed_after_early_answer, env, p)
        env.check("qrux alive", p.q.alive(), p.q.log_tail())


if __name__ == "__main__":
    main()
