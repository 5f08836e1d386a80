"""Checks streamgate's health with the Python grpcio health client (an independent client).

Usage: health_check.py HOST:PORT SERVICE [SERVICE...]
Prints one line per service, "<service or (overall)> <STATUS>", and exits 0 when every service
answered (whatever the status), 1 on an RPC error.
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    target, services = sys.argv[1], sys.argv[2:]
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in services:
            name = "" if service == "-" else service
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            except grpc.RpcError as error:
                print(f"{service} ERROR {error.code().name}")
                return 1
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            print(f"{service} {status}")
        # An unknown service must be NOT_FOUND, not SERVING.
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
            print("no.such.Service SERVING")
        except grpc.RpcError as error:
            print(f"no.such.Service {error.code().name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
