"""A gRPC server on grpcio (PyPI), the real stack the e2e tests put behind
Envoy. Service `meshware.test.Echo`, messages are raw bytes (no protobuf
needed on either side):

  Unary         echoes the request
  ServerStream  request b"N": N messages b"0".."N-1"
  Bidi          echoes every message of the stream
  Slow          request b"S": answers after S seconds (float)
  Fail          request b"CODE_NAME": fails with that status

Every call's trailing metadata tells what the server saw: `x-seen-headers`
(the request metadata names, comma-separated) and `x-time-remaining-ms`
(the deadline the server got, -1 without one) and `x-call` (the call's
number since the server started: a call that ran twice shows).

usage: server.py PORT
"""

import itertools
import sys
import time
from concurrent import futures

import grpc

SERVICE = "meshware.test.Echo"


CALLS = itertools.count(1)


def seen(context):
    names = sorted({k for k, _ in context.invocation_metadata()})
    remaining = context.time_remaining()
    ms = -1 if remaining is None else int(remaining * 1000)
    context.set_trailing_metadata(
        (
            ("x-seen-headers", ",".join(names)),
            ("x-time-remaining-ms", str(ms)),
            ("x-call", str(next(CALLS))),
        )
    )


def unary(request, context):
    seen(context)
    return request


def server_stream(request, context):
    seen(context)
    for i in range(int(request.decode() or "0")):
        yield str(i).encode()


def bidi(requests, context):
    seen(context)
    for message in requests:
        yield message


def slow(request, context):
    seen(context)
    time.sleep(float(request.decode() or "0"))
    return b"done"


def fail(request, context):
    seen(context)
    code = getattr(grpc.StatusCode, request.decode(), grpc.StatusCode.UNKNOWN)
    context.abort(code, "failed on purpose")


def main():
    port = int(sys.argv[1])
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"serving on {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
