#!/usr/bin/env python3
"""The standard gRPC health check against a Weft sidecar, from Python, with no Weft code at all.

It compiles grpc.health.v1's health.proto (shipped with the grpc-health-check package) at run
time into a temporary directory and calls grpc.health.v1.Health by its method paths.

    python3 test/e2e-lang/health_check.py --address 127.0.0.1:7420 check
        Checks "" (the sidecar), "weft.v1.Mesh", "weft.v1.Peer" and an unknown name, then
        lists every status. Exits 0 when the sidecar is SERVING, 1 otherwise: a probe.
    python3 test/e2e-lang/health_check.py --address 127.0.0.1:7420 watch
        Watches "" and prints every status until the sidecar ends the stream (it does when it
        stops: NOT_SERVING first, then UNAVAILABLE).

test/e2e-lang/health.e2e.test.ts runs both. Needs grpcio, protobuf and grpcio-tools (Debian:
python3-grpcio python3-protobuf python3-grpc-tools).
"""

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile

import grpc
from grpc_tools import protoc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HEALTH_PROTO = os.path.join(REPO, "node_modules", "grpc-health-check", "proto", "health", "v1", "health.proto")
TIMEOUT_S = 5
NAMES = ["", "weft.v1.Mesh", "weft.v1.Peer"]
UNKNOWN = "weft.v1.NoSuchService"


def compile_health(source, workdir):
    """Compiles health.proto and imports the module it makes."""
    if not os.path.exists(source):
        raise SystemExit(f"no health proto at {source} (run npm ci, or pass --health-proto)")
    shutil.copy(source, os.path.join(workdir, "health_v1.proto"))
    if protoc.main(["protoc", f"-I{workdir}", f"--python_out={workdir}", os.path.join(workdir, "health_v1.proto")]) != 0:
        raise SystemExit(f"protoc could not compile {source}")
    spec = importlib.util.spec_from_file_location("health_v1_pb2", os.path.join(workdir, "health_v1_pb2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def status_name(pb2, response):
    return pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def reason(error):
    """The "weft-reason" trailer of a failed call, "" when there is none."""
    return next((v for k, v in (error.trailing_metadata() or ()) if k == "weft-reason"), "")


def check(channel, pb2):
    call = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=pb2.HealthCheckResponse.FromString,
    )
    overall = None
    for name in NAMES + [UNKNOWN]:
        try:
            status = status_name(pb2, call(pb2.HealthCheckRequest(service=name), timeout=TIMEOUT_S))
        except grpc.RpcError as e:
            status = e.code().name
        print(f'check "{name}": {status}')
        if name == "":
            overall = status
    try:
        listed = channel.unary_unary(
            "/grpc.health.v1.Health/List",
            request_serializer=pb2.HealthListRequest.SerializeToString,
            response_deserializer=pb2.HealthListResponse.FromString,
        )(pb2.HealthListRequest(), timeout=TIMEOUT_S)
        print("list: " + " ".join(f'"{n}"={status_name(pb2, r)}' for n, r in sorted(listed.statuses.items())))
    except grpc.RpcError as e:
        print(f"list: {e.code().name}")
    return 0 if overall == "SERVING" else 1


def watch(channel, pb2):
    call = channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=pb2.HealthCheckResponse.FromString,
    )
    # No deadline: a watch lasts as long as the server keeps it.
    responses = call(pb2.HealthCheckRequest(service=""), wait_for_ready=True)
    try:
        for response in responses:
            print(f"watch: {status_name(pb2, response)}", flush=True)
        print("watch ended: OK")
    except grpc.RpcError as e:
        print(f"watch ended: {e.code().name} {reason(e)}".rstrip())
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--address", required=True, help="the sidecar's service address, host:port")
    parser.add_argument("--health-proto", default=HEALTH_PROTO, help="grpc.health.v1's health.proto")
    parser.add_argument("mode", choices=["check", "watch"])
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="weft-health-")
    try:
        pb2 = compile_health(args.health_proto, workdir)
        with grpc.insecure_channel(args.address) as channel:
            return check(channel, pb2) if args.mode == "check" else watch(channel, pb2)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
