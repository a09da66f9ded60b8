#!/usr/bin/env python3
"""A Python service calling a sidecar with TLS and a policy, through the generated stubs.

Used by test/e2e-lang/python-security.e2e.test.ts. Prints one JSON line per case:

  {"case": NAME, "results": [...], "status": {"code": "OK", "reason": <weft-reason>}}

  secure_client.py --address HOST:PORT --ca CA.crt --cert SERVICE.crt --key SERVICE.key
                   --token TOKEN --prefix PREFIX
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "examples", "python", "weft_gen"))

import grpc  # noqa: E402
from weft.v1 import admin_pb2, admin_pb2_grpc, event_pb2, mesh_pb2, mesh_pb2_grpc  # noqa: E402


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def channel(address: str, ca: bytes, cert: bytes | None = None, key: bytes | None = None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    # The sidecar's certificate names localhost; the address may be an IP.
    return grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", "localhost")])


def status_of(error: grpc.RpcError | None) -> dict:
    if error is None:
        return {"code": "OK", "reason": ""}
    trailers = dict(error.trailing_metadata() or ())
    return {"code": error.code().name, "reason": trailers.get("weft-reason", "")}


def publish(ch: grpc.Channel, channel_name: str, metadata=()) -> dict:
    stub = mesh_pb2_grpc.MeshStub(ch)
    event = event_pb2.Event(id=str(uuid.uuid4()), source="//weft-test/python-secure", type="test.secure", channel=channel_name, data=b"x")
    results: list = []
    try:
        for response in stub.Publish(iter([mesh_pb2.PublishRequest(batch_id=1, events=[event])]), metadata=metadata, timeout=20):
            for r in response.results:
                if r.HasField("error"):
                    results.append({"error": {"code": r.error.code, "reason": r.error.reason}})
                else:
                    results.append({"sequence": str(r.sequence)})
        return {"results": results, "status": status_of(None)}
    except grpc.RpcError as e:  # the stream ended with a status
        return {"results": results, "status": status_of(e)}


def main() -> int:
    p = argparse.ArgumentParser()
    for flag in ("--address", "--ca", "--cert", "--key", "--token", "--prefix"):
        p.add_argument(flag, required=True)
    a = p.parse_args()
    ca = read(a.ca)
    mutual = channel(a.address, ca, read(a.cert), read(a.key))
    server_only = channel(a.address, ca)
    cases = {
        "certificate, granted channel": lambda: publish(mutual, f"{a.prefix}.granted"),
        "certificate, other channel": lambda: publish(mutual, f"other.{a.prefix}"),
        "no credentials": lambda: publish(server_only, f"{a.prefix}.anonymous"),
        "unknown token": lambda: publish(server_only, f"{a.prefix}.badtoken", (("authorization", "Bearer nope"),)),
    }
    for name, run in cases.items():
        print(json.dumps({"case": name, **run()}))
    admin = admin_pb2_grpc.AdminStub(server_only)
    try:
        listed = admin.ListChannels(admin_pb2.ListChannelsRequest(), metadata=(("authorization", f"Bearer {a.token}"),), timeout=20)
        print(json.dumps({"case": "token, admin", "results": [c.channel for c in listed.channels], "status": status_of(None)}))
    except grpc.RpcError as e:
        print(json.dumps({"case": "token, admin", "results": [], "status": status_of(e)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
