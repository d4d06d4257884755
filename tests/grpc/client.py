"""Calls the test service (tests/grpc/server.py) with grpcio and prints what
the client saw as one JSON object: the status code and its details, the
initial and trailing metadata, the responses. Also the README's example of
a gRPC call through the demo, without grpcurl.

usage: client.py HOST:PORT METHOD [REQUEST] [--timeout SECONDS]
                 [--metadata name=value]... [--messages a,b,c] [--authority HOST]
  METHOD: Unary | ServerStream | Bidi | Slow | Fail (service meshware.test.Echo)
"""

import argparse
import json
import queue
import time

import grpc

SERVICE = "meshware.test.Echo"
STREAMING_RESPONSE = {"ServerStream", "Bidi"}


def metadata_dict(pairs):
    return {k: (v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in (pairs or ())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("method")
    parser.add_argument("request", nargs="?", default="hello")
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--metadata", action="append", default=[])
    parser.add_argument("--messages", default="a,b,c")
    parser.add_argument("--authority", default=None)
    parser.add_argument(
        "--pingpong",
        action="store_true",
        help="Bidi: send each message only after the answer to the previous one",
    )
    args = parser.parse_args()
    metadata = [tuple(m.split("=", 1)) for m in args.metadata]
    path = f"/{SERVICE}/{args.method}"
    out = {"responses": []}
    started = time.monotonic()
    options = [("grpc.default_authority", args.authority)] if args.authority else []
    with grpc.insecure_channel(args.target, options=options) as channel:
        messages = args.messages.split(",")
        turns = queue.Queue()
        if args.method == "Bidi" and args.pingpong:
            turns.put(messages[0])

            def one_at_a_time():
                while (message := turns.get()) is not None:
                    yield message.encode()

            call = channel.stream_stream(path)(
                one_at_a_time(), timeout=args.timeout, metadata=metadata
            )
        elif args.method == "Bidi":
            call = channel.stream_stream(path)(
                (m.encode() for m in messages),
                timeout=args.timeout,
                metadata=metadata,
            )
        elif args.method in STREAMING_RESPONSE:
            call = channel.unary_stream(path)(
                args.request.encode(), timeout=args.timeout, metadata=metadata
            )
        else:
            call = None
        try:
            if call is None:
                response, call = channel.unary_unary(path).with_call(
                    args.request.encode(), timeout=args.timeout, metadata=metadata
                )
                out["responses"].append(response.decode("latin-1"))
            else:
                for response in call:
                    out["responses"].append(response.decode("latin-1"))
                    if args.pingpong:
                        done = len(out["responses"])
                        turns.put(messages[done] if done < len(messages) else None)
        except grpc.RpcError as error:
            call = error
        out["elapsed_ms"] = int((time.monotonic() - started) * 1000)
        out["code"] = call.code().name
        out["details"] = call.details()
        out["initial_metadata"] = metadata_dict(call.initial_metadata())
        out["trailing_metadata"] = metadata_dict(call.trailing_metadata())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
