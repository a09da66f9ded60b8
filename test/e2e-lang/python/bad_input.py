#!/usr/bin/env python3
"""Bad input from a Python client: what a sidecar answers, as JSON lines.

Used by test/e2e-lang/python-bad-input.e2e.test.ts, which asserts the codes and reasons
documented in docs/errors.md. Each case prints one line:

  {"case": NAME, "channel": CHANNEL, "responses": [PublishResponse as a dict, ...],
   "status": {"code": "OK", "details": "...", "reason": <weft-reason>, "field": <weft-field>}}

Typed cases go through the generated stubs; cases whose bytes no protobuf library would
write (an attribute value with the wrong wire type) go through a raw method with identity
serializers, with the bytes crafted here.

  bad_input.py --address HOST:PORT --channel PREFIX
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import uuid
from typing import Callable, Iterable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "examples", "python", "weft_gen"))

import grpc  # noqa: E402
from google.protobuf.json_format import MessageToDict  # noqa: E402
from weft.v1 import event_pb2, mesh_pb2, mesh_pb2_grpc  # noqa: E402

MiB = 1024 * 1024
Kind = mesh_pb2.StartPosition.Kind


def event(channel: str, **fields) -> event_pb2.Event:
    base = dict(id=str(uuid.uuid4()), source="//weft-test/python-bad-input", type="test.bad_input", channel=channel, data=b"payload")
    base.update(fields)
    return event_pb2.Event(**base)


# --- protobuf wire format, by hand ---------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def length_delimited(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


def publish_request(batch_id: int, events: list[bytes]) -> bytes:
    """A weft.v1.PublishRequest with each event given as its encoded bytes."""
    return tag(1, 0) + varint(batch_id) + b"".join(length_delimited(2, e) for e in events)


# --- calls ---------------------------------------------------------------------------------


def status_of(call_or_error) -> dict:
    metadata = dict(call_or_error.trailing_metadata() or ())
    return {
        "code": call_or_error.code().name,
        "details": call_or_error.details() or "",
        "reason": metadata.get("weft-reason", ""),
        "field": metadata.get("weft-field", ""),
    }


def run_stream(method: Callable, requests: Iterable, decode: Callable[[bytes], object] | None = None) -> tuple[list, dict]:
    """Runs one bidi call to its end: the responses it got and how it ended."""
    responses = []
    call = method(iter(requests), timeout=60)
    try:
        for r in call:
            responses.append(decode(r) if decode else r)
        return responses, status_of(call)
    except grpc.RpcError as e:
        return responses, status_of(e)


def as_dict(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--address", required=True)
    p.add_argument("--channel", required=True, help="prefix of the channels used, one per case")
    args = p.parse_args()

    # The client sends anything (grpcio's default send limit is none); replies are small.
    channel = grpc.insecure_channel(args.address, options=[("grpc.max_send_message_length", -1)])
    stub = mesh_pb2_grpc.MeshStub(channel)
    raw_publish = channel.stream_stream("/weft.v1.Mesh/Publish")  # bytes in, bytes out

    def report(case: str, ch: str, responses: list, status: dict, **extra) -> None:
        print(json.dumps({"case": case, "channel": ch, "responses": responses, "status": status, **extra}), flush=True)

    def typed(case: str, events_of: Callable[[str], list[event_pb2.Event]]) -> None:
        ch = f"{args.channel}.{case}"
        request = mesh_pb2.PublishRequest(batch_id=7, events=events_of(ch))
        responses, status = run_stream(stub.Publish, [request])
        report(case, ch, [as_dict(r) for r in responses], status, events=len(request.events))

    def raw(case: str, events_of: Callable[[str], list[bytes]]) -> None:
        ch = f"{args.channel}.{case}"
        responses, status = run_stream(raw_publish, [publish_request(7, events_of(ch))], mesh_pb2.PublishResponse.FromString)
        report(case, ch, [as_dict(r) for r in responses], status)

    # Missing required fields: each refused on its own, the valid events around them stored.
    typed("missing-fields", lambda ch: [event(ch), event(ch, id=""), event(ch, source=""), event(ch, type=""), event(ch)])

    # Attribute names outside the grammar, and the reserved "weft." prefix.
    typed(
        "attribute-names",
        lambda ch: [
            event(ch, attributes={"Trace": "x"}),
            event(ch, attributes={"a b": "x"}),
            event(ch, attributes={"weft.dead_letter.reason": "forged"}),
            event(ch, attributes={"traceparent": "00-ok-01"}),
        ],
    )

    # Attributes in the wrong wire types: bytes the generated code never writes (Python's
    # own parser refuses them). Each request carries a valid event first, then the spoiled one.
    def spoiled(entry_or_field: bytes) -> Callable[[str], list[bytes]]:
        return lambda ch: [event(ch).SerializeToString(), event(ch).SerializeToString() + entry_or_field]

    raw("attribute-value-varint", spoiled(length_delimited(8, length_delimited(1, b"traceparent") + tag(2, 0) + varint(42))))
    raw("attribute-key-varint", spoiled(length_delimited(8, tag(1, 0) + varint(42) + length_delimited(2, b"x"))))
    raw("attributes-varint", spoiled(tag(8, 0) + varint(1)))
    raw("attribute-value-fixed32", spoiled(length_delimited(8, length_delimited(1, b"n") + tag(2, 5) + b"\x01\x00\x00\x00")))

    # Lengths are in characters (event.proto): 200 characters outside the Basic Multilingual
    # Plane are 200 characters in Python and in the proto, and 400 UTF-16 code units.
    typed("id-astral-characters", lambda ch: [event(ch, id="\U0001F600" * 200), event(ch, id="\U0001F600" * 257)])

    # Size limits: an event over the max event size (1 MiB), one exactly at it.
    def sized(ch: str) -> list[event_pb2.Event]:
        at_limit = event(ch, data=b"")
        at_limit.data = b"x" * (MiB - at_limit.ByteSize() - 4)  # 1 tag byte, 3 length bytes
        assert at_limit.ByteSize() == MiB, at_limit.ByteSize()
        return [event(ch), event(ch, data=b"x" * (MiB + 1)), at_limit]

    typed("event-too-large", sized)

    # More than 1000 events in one request.
    typed("batch-too-large", lambda ch: [event(ch, data=b"") for _ in range(1001)])

    # A request message over the max message size (16 MiB): refused by gRPC itself.
    ch = f"{args.channel}.message-too-large"
    big = mesh_pb2.PublishRequest(batch_id=1, events=[event(ch, data=b"x" * (16 * MiB + 1))])
    responses, status = run_stream(stub.Publish, [big])
    report("message-too-large", ch, [as_dict(r) for r in responses], status)

    # Subscribe: a start position that is not set, and an ack before open.
    ch = f"{args.channel}.subscribe"
    open_unspecified = mesh_pb2.SubscribeRequest(open=mesh_pb2.SubscribeOpen(channel=ch, group="g", start=mesh_pb2.StartPosition(kind=Kind.KIND_UNSPECIFIED)))
    responses, status = run_stream(stub.Subscribe, [open_unspecified])
    report("subscribe-start-unspecified", ch, [as_dict(r) for r in responses], status)
    responses, status = run_stream(stub.Subscribe, [mesh_pb2.SubscribeRequest(ack=mesh_pb2.Ack(delivery_ids=[1]))])
    report("subscribe-ack-before-open", ch, [as_dict(r) for r in responses], status)

    # After all that, the sidecar still serves: publish one event and read it back.
    ch = f"{args.channel}.after"
    good = event(ch)
    pub, pub_status = run_stream(stub.Publish, [mesh_pb2.PublishRequest(batch_id=7, events=[good])])
    done = threading.Event()

    def requests():
        yield mesh_pb2.SubscribeRequest(open=mesh_pb2.SubscribeOpen(channel=ch, group="checker", start=mesh_pb2.StartPosition(kind=Kind.KIND_EARLIEST)))
        done.wait()  # a Subscribe stream half-closed by the client ends the subscription

    sub = stub.Subscribe(requests(), timeout=30)
    got = None
    for r in sub:
        if r.HasField("deliveries"):
            got = r.deliveries.deliveries[0].event
            break
    done.set()
    sub.cancel()
    report("after", ch, [as_dict(r) for r in pub], pub_status, read_back=got is not None and got == good)
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
