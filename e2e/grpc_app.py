#!/usr/bin/env python3
"""The gRPC app of e2e/test_grpc.py: Debian's python3-grpcio serving
qxtest.Echo (e2e/grpc_echo.proto) over cleartext HTTP/2 on 127.0.0.1.

Usage: grpc_app.py STUB_DIR PORT. Prints "ready PORT" once serving.
"""

import os
import sys
import time
from concurrent import futures

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
import grpc_echo_pb2 as pb  # noqa: E402
import grpc_echo_pb2_grpc as pbg  # noqa: E402

MAX = 64 * 1024 * 1024


class Echo(pbg.EchoServicer):
    def Unary(self, req, ctx):
        if req.n == -1:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad n: %s" % req.text)
        if req.n == -2:
            time.sleep(5)
        md = dict(ctx.invocation_metadata())
        ctx.set_trailing_metadata((("x-app-trailer", "t-" + req.text),))
        return pb.Msg(data=req.data, n=len(req.data),
                      text=md.get("x-req", "") + "|" + md.get("x-forwarded-for", ""))

    def ServerStream(self, req, ctx):
        for i in range(req.n):
            yield pb.Msg(data=req.data, n=i)

    def ClientStream(self, it, ctx):
        count = total = 0
        for m in it:
            count += 1
            total += len(m.data)
        return pb.Msg(n=count, text=str(total))

    def Bidi(self, it, ctx):
        for m in it:
            yield pb.Msg(data=m.data, n=m.n + 1)


def main():
    port = int(sys.argv[2])
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                      options=[("grpc.max_receive_message_length", MAX),
                               ("grpc.max_send_message_length", MAX)])
    pbg.add_EchoServicer_to_server(Echo(), srv)
    srv.add_insecure_port("127.0.0.1:%d" % port)
    srv.start()
    print("ready %d" % port, flush=True)
    srv.wait_for_termination()


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    main()
