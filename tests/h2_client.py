#!/usr/bin/env python3
"""A minimal HTTP/2 (prior knowledge, cleartext) client for the e2e tests:
one request with optional body and request trailers. Prints a JSON object
{"status": int, "headers": [[k, v]...], "body": str, "trailers": [[k, v]...]}.

usage: h2_client.py PORT METHOD PATH HOST [--header k:v]... [--body TEXT | --grpc-message TEXT]
                    [--trailer k:v]... [--timeout SECONDS] [--reset-after SECONDS]
  --reset-after: cancel the stream (RST_STREAM CANCEL) that long after sending
  the request, as a gRPC client cancelling or a browser navigating away.
"""
import argparse
import json
import socket
import sys

import h2.config
import h2.connection
import h2.errors
import h2.events


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("method")
    p.add_argument("path")
    p.add_argument("host")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--body", default=None)
    p.add_argument("--grpc-message", default=None, help="the body: one gRPC message framing TEXT")
    p.add_argument("--trailer", action="append", default=[])
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--reset-after", type=float, default=None)
    a = p.parse_args()

    sock = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [(":method", a.method), (":path", a.path), (":scheme", "http"), (":authority", a.host)]
    headers += [tuple(h.split(":", 1)) for h in a.header]
    trailers = [tuple(t.split(":", 1)) for t in a.trailer]
    body = a.body.encode() if a.body is not None else None
    if a.grpc_message is not None:
        message = a.grpc_message.encode()
        body = b"\0" + len(message).to_bytes(4, "big") + message
    conn.send_headers(1, headers, end_stream=body is None and not trailers)
    if body is not None:
        conn.send_data(1, body, end_stream=not trailers)
    if trailers:
        conn.send_headers(1, trailers, end_stream=True)
    sock.sendall(conn.data_to_send())

    out = {"status": 0, "headers": [], "body": "", "trailers": []}
    if a.reset_after is not None:
        import time
        time.sleep(a.reset_after)
        conn.reset_stream(1, error_code=h2.errors.ErrorCodes.CANCEL)
        sock.sendall(conn.data_to_send())
        time.sleep(0.1)  # let the reset reach Envoy before the connection goes
        print(json.dumps(dict(out, reset=True)))
        return 0
    data = b""
    done = False
    while not done:
        chunk = sock.recv(65536)
        if not chunk:
            break
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived):
                hs = [(k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v) for k, v in ev.headers]
                out["headers"] = hs
                out["status"] = int(dict(hs)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                out["trailers"] = [(k.decode(), v.decode()) for k, v in ev.headers]
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        sock.sendall(conn.data_to_send())
    out["body"] = data.decode("utf-8", "replace")
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
