"""Calls one gRPC method with the Python grpcio client (a stock client) and raw request bytes.

Usage: raw_call.py HOST:PORT /package.Service/Method FILE
Sends FILE's bytes as the request message, unserialized, and prints one line:
"<CODE> <bytes of the status message>" (OK when the call succeeded). Exits 0 when an answer,
any answer, was read.
"""

import sys

import grpc


def main() -> int:
    target, method, path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(path, "rb") as f:
        body = f.read()
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        try:
            call(body, timeout=30)
        except grpc.RpcError as error:
            print(f"{error.code().name} {len((error.details() or '').encode())}")
            return 0
        print("OK 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
