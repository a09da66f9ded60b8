#!/usr/bin/env python3
"""A small Weft service in Python, using only the generated stubs and grpcio.

It talks to its own sidecar over weft.v1.Mesh (proto/weft/v1/mesh.proto):

  * publishes a batch of events (one PublishRequest on a Publish stream) and prints the
    sequences the sidecar stored them at;
  * subscribes as a group (start EARLIEST, max_attempts 2, the default dead-letter channel),
    acks every event but one, nacks that one, sees it redelivered with attempt 2, nacks it
    again so that it is dead-lettered;
  * subscribes to the group's dead-letter channel and prints the dead letter with its
    weft.dead_letter.* attributes.

With --publish-only N it only publishes N events (a publisher for a mixed-language mesh).

Generate the stubs first (npm run gen:python), then:

  /usr/bin/python3 examples/python/weft_service.py [--address 127.0.0.1:7420]

Every line it prints starts with what happened; a gRPC error ends it with exit status 1
and the status code, the "weft-reason" trailer and the message on stderr.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import sys
import uuid
from typing import Iterable, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
# The generated code imports itself as weft.v1.*: its root folder goes on the path.
sys.path.insert(0, os.path.join(HERE, "weft_gen"))

try:
    import grpc
    from google.protobuf.timestamp_pb2 import Timestamp
    from weft.v1 import event_pb2, mesh_pb2, mesh_pb2_grpc
except ImportError as e:  # pragma: no cover - a setup problem, said plainly
    sys.exit(
        f"cannot import grpcio, protobuf or the generated stubs ({e}).\n"
        "Install python3-grpcio python3-protobuf (or pip install grpcio protobuf) and run "
        "`npm run gen:python` first."
    )

DEFAULT_ADDRESS = "127.0.0.1:7420"
SOURCE = "//examples/python"
Kind = mesh_pb2.StartPosition.Kind


class WeftFailure(Exception):
    """Something the service cannot go on from; main() prints it and exits 1."""


def say(line: str) -> None:
    print(line, flush=True)


def trailer(error: grpc.RpcError, key: str) -> str:
    """A trailing metadata value of a failed call ("" when absent)."""
    for k, v in error.trailing_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return ""


def describe(error: grpc.RpcError) -> str:
    """"CODE: details", with the "weft-reason" trailer when the details do not start with it."""
    reason, details = trailer(error, "weft-reason"), error.details() or ""
    extra = f" (weft-reason {reason})" if reason and not details.startswith(reason) else ""
    return f"{error.code().name}: {details}{extra}"


# --- publishing -----------------------------------------------------------------------------


def make_event(channel: str, n: int, key: str = "") -> event_pb2.Event:
    """One order event: JSON data, a time, a subject, a traceparent attribute."""
    time = Timestamp()
    time.GetCurrentTime()
    return event_pb2.Event(
        id=str(uuid.uuid4()),
        source=SOURCE,
        type="com.example.order.created",
        subject=f"order-{n}",
        time=time,
        datacontenttype="application/json",
        data=json.dumps({"order": n, "note": "crème brûlée ✓"}, ensure_ascii=False).encode(),
        attributes={"traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01", "lang": "python"},
        channel=channel,
        key=key,
    )


def publish(stub: mesh_pb2_grpc.MeshStub, events: list[event_pb2.Event], timeout: float) -> list[int]:
    """Publishes `events` on one Publish stream, in batches of at most 1000 (the sidecar's
    limit), and returns their sequences. Every batch is sent, then the answers are read:
    one PublishResponse per request, in request order."""
    batches = [events[i : i + 1000] for i in range(0, len(events), 1000)]
    requests = (mesh_pb2.PublishRequest(batch_id=b + 1, events=batch) for b, batch in enumerate(batches))
    sequences: list[int] = []
    refused: list[str] = []
    answered = 0
    for response in stub.Publish(requests, timeout=timeout):
        answered += 1
        batch = batches[response.batch_id - 1]
        for event, result in zip(batch, response.results):
            if result.HasField("error"):
                err = result.error
                refused.append(f"event {event.id} refused: code {err.code} {err.reason} ({err.field}): {err.message}")
            else:
                sequences.append(result.sequence)
    if answered != len(batches):
        raise WeftFailure(f"the sidecar answered {answered} of {len(batches)} publish requests")
    if refused:
        raise WeftFailure("\n".join(refused))
    return sequences


def span(sequences: list[int]) -> str:
    """1..5 for a run without gaps, else the list."""
    if sequences == list(range(sequences[0], sequences[0] + len(sequences))):
        return f"{sequences[0]}..{sequences[-1]}"
    return ",".join(str(s) for s in sequences)


# --- subscribing ----------------------------------------------------------------------------


class Subscription:
    """One Subscribe stream. The first request is `open`; send() queues acks and nacks on the
    same stream; iterating yields the sidecar's responses. close() half-closes the stream:
    the sidecar hands unacked deliveries back to the group without counting an attempt and
    ends the call with OK."""

    def __init__(self, stub: mesh_pb2_grpc.MeshStub, open_: mesh_pb2.SubscribeOpen, timeout: float):
        self._requests: queue.Queue[mesh_pb2.SubscribeRequest | None] = queue.Queue()
        self._requests.put(mesh_pb2.SubscribeRequest(open=open_))
        self.call = stub.Subscribe(self._outgoing(), timeout=timeout)

    def _outgoing(self) -> Iterator[mesh_pb2.SubscribeRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def __iter__(self) -> Iterator[mesh_pb2.SubscribeResponse]:
        return iter(self.call)

    def ack(self, *delivery_ids: int) -> None:
        self._requests.put(mesh_pb2.SubscribeRequest(ack=mesh_pb2.Ack(delivery_ids=delivery_ids)))

    def nack(self, *delivery_ids: int, delay_ms: int = 0) -> None:
        self._requests.put(mesh_pb2.SubscribeRequest(nack=mesh_pb2.Nack(delivery_ids=delivery_ids, delay_ms=delay_ms)))

    def close(self) -> None:
        """Half-closes, then waits for the sidecar to end the call."""
        self._requests.put(None)
        for _ in self.call:
            pass  # nothing more is expected; a delivery here goes back to the group


def subscribed_line(s: mesh_pb2.Subscribed) -> str:
    how = "created" if s.created else "joined"
    return (
        f"subscribed to {s.channel} as group {s.group} ({how}; max_attempts {s.max_attempts}; "
        f"dead letters to {s.dead_letter_channel})"
    )


def handle_group(stub, channel: str, group: str, events: list[event_pb2.Event], timeout: float) -> tuple[str, str]:
    """Acks every event of `events` but one, which it nacks until it is dead-lettered.
    Returns the refused event's id and the group's dead-letter channel."""
    ours = {e.id for e in events}
    refused = events[len(events) // 2].id
    open_ = mesh_pb2.SubscribeOpen(
        channel=channel,
        group=group,
        start=mesh_pb2.StartPosition(kind=Kind.KIND_EARLIEST),
        max_attempts=2,
        # dead_letter_channel left empty: the default, "<channel>.dlq.<group>".
    )
    sub = Subscription(stub, open_, timeout)
    settings: mesh_pb2.Subscribed | None = None
    acked: set[str] = set()
    last_attempt = 0
    for response in sub:
        if response.HasField("subscribed"):
            settings = response.subscribed
            say(subscribed_line(settings))
            continue
        for d in response.deliveries.deliveries:
            e = d.event
            if e.id not in ours:
                # From an earlier run against the same sidecar: handled, not ours to count.
                sub.ack(d.delivery_id)
                say(f"acked {e.id} sequence {d.sequence} attempt {d.attempt} (from an earlier run)")
            elif e.id != refused:
                sub.ack(d.delivery_id)
                acked.add(e.id)
                say(f"acked {e.id} sequence {d.sequence} attempt {d.attempt}")
            else:
                if d.attempt > 1:
                    say(f"redelivered {e.id} sequence {d.sequence} attempt {d.attempt}")
                last_attempt = d.attempt
                sub.nack(d.delivery_id)
                last = " (the last attempt: it goes to the dead letters)" if d.attempt >= settings.max_attempts else ""
                say(f"nacked {e.id} sequence {d.sequence} attempt {d.attempt}{last}")
        if settings and len(acked) == len(ours) - 1 and last_attempt >= settings.max_attempts:
            break
    else:
        raise WeftFailure("the sidecar ended the subscription before every event was handled")
    sub.close()
    return refused, settings.dead_letter_channel


def read_dead_letter(stub, dead_letter_channel: str, group: str, event_id: str, timeout: float) -> None:
    """Reads the group's dead-letter channel until the dead letter of `event_id` arrives."""
    open_ = mesh_pb2.SubscribeOpen(
        channel=dead_letter_channel,
        group=group,
        start=mesh_pb2.StartPosition(kind=Kind.KIND_EARLIEST),
    )
    sub = Subscription(stub, open_, timeout)
    for response in sub:
        if response.HasField("subscribed"):
            say(subscribed_line(response.subscribed))
            continue
        found = False
        for d in response.deliveries.deliveries:
            e = d.event
            sub.ack(d.delivery_id)
            if e.id != event_id:
                say(f"acked dead letter {e.id} (from an earlier run)")
                continue
            a = e.attributes
            say(
                f"dead letter {e.id} reason {a['weft.dead_letter.reason']} attempts {a['weft.dead_letter.attempts']} "
                f"from {a['weft.dead_letter.channel']} sequence {a['weft.dead_letter.sequence']}"
            )
            for name in sorted(a):
                if name.startswith("weft.dead_letter."):
                    say(f"  {name} = {a[name]}")
            found = True
        if found:
            break
    else:
        raise WeftFailure("the sidecar ended the dead-letter subscription before the dead letter arrived")
    sub.close()


# --- main -----------------------------------------------------------------------------------


def run_service(stub, args) -> None:
    events = [make_event(args.channel, n) for n in range(1, args.events + 1)]
    sequences = publish(stub, events, args.timeout)
    say(f"published {len(events)} events to {args.channel}: sequences {span(sequences)}")
    refused, dlq = handle_group(stub, args.channel, args.group, events, args.timeout)
    read_dead_letter(stub, dlq, f"{args.group}-dlq-reader", refused, args.timeout)
    say(f"done: {len(events) - 1} acked, 1 redelivered, 1 dead-lettered")


def run_publisher(stub, args) -> None:
    events = [make_event(args.channel, n, key=f"customer-{n % 4}") for n in range(1, args.publish_only + 1)]
    sequences = publish(stub, events, args.timeout)
    for e, s in zip(events, sequences):
        line = f"published {e.id} to {e.channel} sequence {s}"
        if args.dump_events:
            line += f" event {base64.b64encode(e.SerializeToString()).decode()}"
        say(line)
    say(f"published {len(events)} events to {args.channel}: sequences {span(sequences)}")


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="A Weft service in Python: publish, subscribe, ack, nack, read a dead letter.")
    p.add_argument("--address", default=os.environ.get("WEFT_ADDRESS", DEFAULT_ADDRESS),
                   help=f"the sidecar's service API (env WEFT_ADDRESS; default {DEFAULT_ADDRESS})")
    p.add_argument("--channel", default="orders.python", help="channel to publish to and subscribe (default orders.python)")
    p.add_argument("--group", default="python-billing", help="the subscribing group (default python-billing)")
    p.add_argument("--events", type=int, default=5, help="events in the batch (at least 2; default 5)")
    p.add_argument("--publish-only", type=int, metavar="N", help="only publish N events, print each, and exit")
    p.add_argument("--dump-events", action="store_true", help="with --publish-only: print each event's bytes (base64)")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each call, seconds (default 30)")
    args = p.parse_args(argv)
    if args.events < 2:
        p.error("--events must be at least 2")

    # Deliveries come in messages of up to 3 MiB, more than grpcio's default receive limit
    # for a large event plus its dead-letter attributes: take whatever the sidecar sends.
    options = [("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(args.address, options=options) as channel:
        stub = mesh_pb2_grpc.MeshStub(channel)
        try:
            if args.publish_only is not None:
                run_publisher(stub, args)
            else:
                run_service(stub, args)
        except grpc.RpcError as e:
            print(f"error: a call to the sidecar at {args.address} failed: {describe(e)}", file=sys.stderr, flush=True)
            return 1
        except WeftFailure as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
