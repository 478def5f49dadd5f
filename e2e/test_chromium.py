#!/usr/bin/env python3
"""Headless Chromium through qrux over HTTP/3.

1. A static page from nginx: the DOM Chromium builds carries the exact text
   the page's script writes, including the navigation's nextHopProtocol
   (must be "h3").
2. A page from backend.py whose script, after load, uses fetch(): a chunked
   download hashed with WebCrypto, a streaming upload (ReadableStream body,
   no length: qrux must send it chunked upstream), a sized upload, a 204,
   and an echo of the request headers the application receives (cookies
   joined into one field). --virtual-time-budget makes --dump-dom wait for
   those fetches.
3. Uploads over max_request_body_bytes (sized, and streamed without length)
   from a page: the page must see the 413 (each in its own Chromium run, so
   a fetch that never settles fails only its own check).
"""

import base64
import hashlib
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Env, pattern, pattern_sha256  # noqa: E402

MARK = "qrux-e2e-ok-7f3a"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>qrux e2e</title></head>
<body><div id="out">pending</div>
<script>
var nav = performance.getEntriesByType('navigation')[0];
document.getElementById('out').textContent =
  'proto=' + (nav ? nav.nextHopProtocol : 'none') + ' marker=' + '%s';
</script></body></html>
""" % MARK

STREAM_SIZES = [1, 65536, 100000, 7]  # streaming upload pieces, pattern bytes

APP = """<!doctype html>
<html><head><meta charset="utf-8"><title>qrux app</title></head>
<body><pre id="result">pending</pre>
<script>
function pat(off, n) {  // e2e/backend.py pattern(): byte k is k %% 251
  var a = new Uint8Array(n);
  for (var i = 0; i < n; i++) a[i] = (off + i) %% 251;
  return a;
}
async function hex(buf) {
  var d = new Uint8Array(await crypto.subtle.digest('SHA-256', buf));
  return Array.from(d).map(function (x) { return x.toString(16).padStart(2, '0'); }).join('');
}
async function run() {
  var res = {};
  document.cookie = 'a=1; path=/';
  document.cookie = 'b=2; path=/';
  try {
    var r = await fetch('/echo?from=chromium',
                          {headers: {'X-Test': 'yes', 'X-Forwarded-For': '203.0.113.7'}});
    res.echo_status = r.status;
    res.echo = await r.json();
  } catch (e) { res.echo_error = String(e); }
  try {
    var r = await fetch('/chunked/1000000');
    var b = await r.arrayBuffer();
    res.chunked_status = r.status;
    res.chunked_len = b.byteLength;
    res.chunked_sha = await hex(b);
  } catch (e) { res.chunked_error = String(e); }
  try {
    var sizes = %s, off = 0;
    var rs = new ReadableStream({
      start: function (c) {
        sizes.forEach(function (n) { c.enqueue(pat(off, n)); off += n; });
        c.close();
      }
    });
    var r = await fetch('/upload', {method: 'POST', body: rs, duplex: 'half'});
    res.stream_status = r.status;
    res.stream = await r.json();
  } catch (e) { res.stream_error = String(e); }
  try {
    var r = await fetch('/upload', {method: 'POST', body: pat(0, 300000)});
    res.sized_status = r.status;
    res.sized = await r.json();
  } catch (e) { res.sized_error = String(e); }
  try {
    var r = await fetch('/status/204');
    res.s204 = r.status;
    res.s204_len = (await r.arrayBuffer()).byteLength;
  } catch (e) { res.s204_error = String(e); }
  res.protos = performance.getEntriesByType('resource').map(function (e) {
    return e.name.replace(/^https:\\/\\/[^/]+/, '') + '=' + e.nextHopProtocol;
  });
  var nav = performance.getEntriesByType('navigation')[0];
  res.nav_proto = nav ? nav.nextHopProtocol : 'none';
  document.getElementById('result').textContent = 'RESULT:' + btoa(unescape(encodeURIComponent(JSON.stringify(res)))) + ':END';
}
run();
</script></body></html>
""" % json.dumps(STREAM_SIZES)


TOO_BIG = """<!doctype html>
<html><head><meta charset="utf-8"><title>qrux 413</title></head>
<body><pre id="result">pending</pre>
<script>
function pat(off, n) {
  var a = new Uint8Array(n);
  for (var i = 0; i < n; i++) a[i] = (off + i) %% 251;
  return a;
}
async function run() {
  var out;
  try {
    var body;
    if (%s) {  // streamed: no length, qrux sees it only as it crosses the limit
      var left = 4 * 1024 * 1024, o = 0;
      body = new ReadableStream({
        pull: function (c) {
          if (left <= 0) { c.close(); return; }
          var n = Math.min(65536, left);
          c.enqueue(pat(o, n)); o += n; left -= n;
        }
      });
    } else {
      body = pat(0, 2 * 1024 * 1024);
    }
    var opts = {method: 'POST', body: body};
    if (%s) opts.duplex = 'half';
    var r = await fetch('/upload', opts);
    out = 'status=' + r.status;
  } catch (e) { out = 'error=' + e; }
  document.getElementById('result').textContent = 'OUT:' + out + ':END';
}
run();
</script></body></html>
"""


def too_big(env, q, kind):
    """A browser uploading more than max_request_body_bytes (1 MiB here)
    must get the 413, not a request that never ends."""
    url = "https://localhost:%d/big-%s.html" % (q.port, kind)
    rc, dom, err = env.chromium(url, "localhost:%d" % q.port,
                                extra=["--virtual-time-budget=10000"], timeout=20)
    m = re.search(r"OUT:(.*?):END", dom)
    env.eq("chromium %s upload over max_request_body_bytes: the page sees 413" % kind,
           m.group(1) if m else "(no result: fetch never settled; chromium exit %s)" % rc,
           "status=413")
    lines = env.wait_access(q, path="/upload", status=413)
    env.check("chromium %s upload over the limit: qrux answered 413 (access log)" % kind,
              len(lines) >= 1, q.log_tail())
    if kind == "streamed" and lines:
        got = int(lines[-1].get("bytes_in", "-1"))
        env.check("chromium streamed upload: 413 as soon as the limit was crossed (bytes_in %d "
                  "<= 1 MiB + 256 KiB)" % got, 0 <= got <= 1024 * 1024 + 256 * 1024)


def static_page(env, q):
    url = "https://localhost:%d/page.html" % q.port
    rc, dom, err = env.chromium(url, "localhost:%d" % q.port)
    env.eq("chromium (nginx page): exit code", rc, 0, err[-500:])
    want = '<div id="out">proto=h3 marker=%s</div>' % MARK
    env.check("chromium (nginx page): DOM has the exact text, loaded over h3", want in dom,
              "DOM: %r" % dom[:600])
    lines = env.wait_access(q, path="/page.html", status=200)
    env.check("chromium (nginx page): qrux logged the request", len(lines) >= 1, q.log_tail())


def app_page(env, q):
    url = "https://localhost:%d/app.html" % q.port
    rc, dom, err = env.chromium(url, "localhost:%d" % q.port,
                                extra=["--virtual-time-budget=20000"], timeout=90)
    env.eq("chromium (app): exit code", rc, 0, err[-500:])
    m = re.search(r"RESULT:([A-Za-z0-9+/=]+):END", dom)
    if not env.check("chromium (app): the page's script finished", m, "DOM: %r" % dom[:800]):
        return
    res = json.loads(base64.b64decode(m.group(1)))
    env.eq("chromium (app): navigation over h3", res.get("nav_proto"), "h3")
    env.check("chromium (app): every fetch over h3", res.get("protos") and all(
        p.endswith("=h3") for p in res["protos"]), res.get("protos"))

    env.eq("chromium fetch /echo: status", res.get("echo_status"), 200, res.get("echo_error"))
    echo = res.get("echo") or {}
    hdrs = echo.get("headers", [])

    def vals(n):
        return [v for k, v in hdrs if k.lower() == n]

    env.eq("chromium /echo: upstream Host", vals("host"), ["localhost:%d" % q.port])
    env.eq("chromium /echo: upstream X-Forwarded-Proto", vals("x-forwarded-proto"), ["https"])
    xff = vals("x-forwarded-for")
    env.check("chromium /echo: the client's address is appended to the X-Forwarded-For it "
              "sent, in one field (%r)" % xff,
              xff in (["203.0.113.7, ::1"], ["203.0.113.7, 127.0.0.1"]))
    env.eq("chromium /echo: custom request header forwarded", vals("x-test"), ["yes"])
    cookies = vals("cookie")
    env.check("chromium /echo: cookies arrive as one Cookie field with both (%r)" % cookies,
              len(cookies) == 1 and "a=1" in cookies[0] and "b=2" in cookies[0])
    names = [k.lower() for k, _ in hdrs]
    env.check("chromium /echo: no pseudo-headers or hop-by-hop headers upstream",
              not [n for n in names if n.startswith(":") or n in (
                  "te", "upgrade", "transfer-encoding", "proxy-connection", "keep-alive")], hdrs)

    env.eq("chromium chunked download: status", res.get("chunked_status"), 200,
           res.get("chunked_error"))
    env.eq("chromium chunked download: length", res.get("chunked_len"), 1000000)
    env.eq("chromium chunked download: sha256 (WebCrypto)", res.get("chunked_sha"),
           pattern_sha256(1000000))

    total = sum(STREAM_SIZES)
    st = res.get("stream") or {}
    env.eq("chromium streaming upload: status", res.get("stream_status"), 200,
           res.get("stream_error"))
    env.eq("chromium streaming upload: backend got the exact bytes", st.get("body_sha256"),
           pattern_sha256(total))
    env.eq("chromium streaming upload: length", st.get("body_len"), total)
    env.check("chromium streaming upload (no length): sent chunked upstream",
              st.get("chunked") is True, st.get("headers"))

    sz = res.get("sized") or {}
    env.eq("chromium sized upload: status", res.get("sized_status"), 200, res.get("sized_error"))
    env.eq("chromium sized upload: exact bytes", sz.get("body_sha256"), pattern_sha256(300000))
    env.eq("chromium sized upload: Content-Length upstream",
           [v for k, v in sz.get("headers", []) if k.lower() == "content-length"], ["300000"])

    env.eq("chromium 204: status", res.get("s204"), 204, res.get("s204_error"))
    env.eq("chromium 204: empty body", res.get("s204_len"), 0)


def main():
    with Env("chromium") as env:
        www = os.path.join(env.dir, "www")
        os.makedirs(www)
        with open(os.path.join(www, "page.html"), "w") as f:
            f.write(PAGE)
        app = os.path.join(env.dir, "app")
        os.makedirs(app)
        with open(os.path.join(app, "app.html"), "w") as f:
            f.write(APP)
        for kind, streamed in (("sized", "false"), ("streamed", "true")):
            with open(os.path.join(app, "big-%s.html" % kind), "w") as f:
                f.write(TOO_BIG % (streamed, streamed))
        ng = env.nginx(www)
        be = env.backend(root=app)
        qn = env.qrux(routes=[("*", ng.addr)])
        qb = env.qrux(routes=[("*", be.addr)],
                      limits={"max_request_body_bytes": 1024 * 1024})
        env.case("static page from nginx", static_page, env, qn)
        env.case("app page with fetch()", app_page, env, qb)
        env.case("413 to a browser, sized body", too_big, env, qb, "sized")
        env.case("413 to a browser, streamed body", too_big, env, qb, "streamed")
        env.check("qrux still running", qn.alive() and qb.alive())


if __name__ == "__main__":
    main()
