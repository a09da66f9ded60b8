#!/usr/bin/env python3
"""A Weft client with no generated Weft code: everything it knows comes from server reflection.

It compiles only gRPC's own reflection.proto (shipped with @grpc/reflection), at run time, into
a temporary directory. Then it asks the sidecar which services it has, fetches the descriptors
of weft.v1.Mesh, builds the message classes from them, publishes one event, subscribes with a
group from the earliest event, receives that event, acks it, and rejoins the group to see the
ack recorded. It prints one line per step; test/e2e-lang/reflection.e2e.test.ts checks them.

    python3 test/e2e-lang/reflection_client.py --address 127.0.0.1:7420

Needs grpcio, protobuf and grpcio-tools (Debian: python3-grpcio python3-protobuf
python3-grpc-tools). Exits 0 when every step worked, 1 (with the reason on stderr) otherwise.
"""

import argparse
import importlib.util
import os
import queue
import shutil
import sys
import tempfile
import uuid

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REFLECTION_PROTOS = os.path.join(REPO, "node_modules", "@grpc", "reflection", "build", "proto")
TIMEOUT_S = 15


class Failure(Exception):
    """A step did not do what it should; the message says which and why."""


def compile_reflection(version, proto_root, workdir):
    """Compiles grpc/reflection/<version>/reflection.proto and imports the module it makes."""
    source = os.path.join(proto_root, "grpc", "reflection", version, "reflection.proto")
    if not os.path.exists(source):
        raise Failure(f"no reflection proto at {source} (run npm ci, or pass --reflection-protos)")
    # Copied under a name of its own: compiled in place it would be the module
    # grpc.reflection.<version>.reflection_pb2, which the installed grpc package would shadow.
    name = f"reflection_{version}"
    shutil.copy(source, os.path.join(workdir, f"{name}.proto"))
    if protoc.main(["protoc", f"-I{workdir}", f"--python_out={workdir}", os.path.join(workdir, f"{name}.proto")]) != 0:
        raise Failure(f"protoc could not compile {source}")
    spec = importlib.util.spec_from_file_location(f"{name}_pb2", os.path.join(workdir, f"{name}_pb2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Reflection:
    """One grpc.reflection.<version>.ServerReflection service of a server."""

    def __init__(self, channel, version, pb2):
        self.version = version
        self.pb2 = pb2
        self.method = f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
        self.call = channel.stream_stream(
            self.method,
            request_serializer=pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=pb2.ServerReflectionResponse.FromString,
        )

    def ask(self, **request):
        """Sends one request on a stream of its own and returns the one answer."""
        answers = list(self.call(iter([self.pb2.ServerReflectionRequest(**request)]), timeout=TIMEOUT_S))
        if len(answers) != 1:
            raise Failure(f"{self.method} answered {request} with {len(answers)} messages, not 1")
        answer = answers[0]
        if answer.WhichOneof("message_response") == "error_response":
            e = answer.error_response
            code = next((c.name for c in grpc.StatusCode if c.value[0] == e.error_code), e.error_code)
            raise Failure(f"{self.method} refused {request}: {code} {e.error_message}")
        return answer

    def services(self):
        return [s.name for s in self.ask(list_services="*").list_services_response.service]

    def files_for(self, symbol):
        """The file defining `symbol` and every file it imports, as FileDescriptorProtos by name."""
        files = {}

        def take(answer):
            for raw in answer.file_descriptor_response.file_descriptor_proto:
                fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
                files.setdefault(fdp.name, fdp)

        take(self.ask(file_containing_symbol=symbol))
        # A server may leave out imports it already sent; ask for any that are missing.
        while True:
            missing = sorted({d for f in files.values() for d in f.dependency} - files.keys())
            if not missing:
                return files
            for name in missing:
                take(self.ask(file_by_filename=name))
                if name not in files:
                    raise Failure(f"reflection has no file {name}, which another file imports")


def connect_reflection(channel, wanted, proto_root, workdir):
    """The first reflection version the server speaks: v1, then v1alpha (or just `wanted`)."""
    versions = ["v1", "v1alpha"] if wanted == "auto" else [wanted]
    for version in versions:
        reflection = Reflection(channel, version, compile_reflection(version, proto_root, workdir))
        try:
            return reflection, reflection.services()
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED and version != versions[-1]:
                continue
            raise Failure(f"{reflection.method} failed: {e.code().name} {e.details()}") from e
    raise AssertionError("unreachable")


def build_pool(files):
    """A descriptor pool with `files`, each added after the files it imports."""
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added:
            return
        for dep in files[name].dependency:
            add(dep)
        pool.AddSerializedFile(files[name].SerializeToString())
        added.add(name)

    for name in sorted(files):
        add(name)
    return pool


def message_class(descriptor):
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


class Method:
    """A bidi-streaming method found by reflection, callable with its dynamic message classes."""

    def __init__(self, channel, pool, files, service, name):
        proto = next(
            m
            for f in files.values()
            for s in f.service
            if f"{f.package}.{s.name}" == service
            for m in s.method
            if m.name == name
        )
        described = pool.FindServiceByName(service).methods_by_name[name]
        self.path = f"/{service}/{name}"
        self.request = message_class(described.input_type)
        self.response = message_class(described.output_type)
        stream_in = "stream " if proto.client_streaming else ""
        stream_out = "stream " if proto.server_streaming else ""
        self.signature = (
            f"{self.path} {stream_in}{described.input_type.full_name}"
            f" -> {stream_out}{described.output_type.full_name}"
        )
        if not (proto.client_streaming and proto.server_streaming):
            raise Failure(f"{self.signature}: expected a bidi-streaming method")
        self.call = channel.stream_stream(
            self.path,
            request_serializer=self.request.SerializeToString,
            response_deserializer=self.response.FromString,
        )


def enum_number(message, field, value):
    """The number of enum `value` of `message.field`, looked up in the reflected descriptors."""
    return message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_name[value].number


class Subscription:
    """A Subscribe stream whose requests go in through a queue, so it can ack what it reads."""

    def __init__(self, method, channel_name, group):
        self.method = method
        self.requests = queue.Queue()
        self.responses = method.call(iter(self.requests.get, None), timeout=TIMEOUT_S)
        request = method.request()
        request.open.channel = channel_name
        request.open.group = group
        request.open.start.kind = enum_number(request.open.start, "kind", "KIND_EARLIEST")
        self.requests.put(request)

    def next(self, what):
        try:
            response = next(self.responses)
        except StopIteration:
            raise Failure(f"the Subscribe stream ended before {what}") from None
        kind = response.WhichOneof("response")
        if kind != what:
            raise Failure(f"expected {what} on the Subscribe stream, got {kind}")
        return getattr(response, kind)

    def ack(self, delivery_id):
        request = self.method.request()
        request.ack.delivery_ids.append(delivery_id)
        self.requests.put(request)

    def close(self):
        """Ends our side of the stream and reads the sidecar's end of it (status OK)."""
        self.requests.put(None)
        for response in self.responses:
            raise Failure(f"unexpected {response.WhichOneof('response')} after closing the Subscribe stream")


def run(args, workdir):
    channel = grpc.insecure_channel(args.address)
    try:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)
    except grpc.FutureTimeoutError:
        raise Failure(f"nothing answers at {args.address} within {TIMEOUT_S} s") from None

    reflection, services = connect_reflection(channel, args.reflection, args.reflection_protos, workdir)
    print(f"reflection: grpc.reflection.{reflection.version}.ServerReflection")
    print(f"services: {' '.join(sorted(services))}")
    if "weft.v1.Mesh" not in services:
        raise Failure("the server does not list weft.v1.Mesh")

    files = reflection.files_for("weft.v1.Mesh")
    mesh_file = next(f.name for f in files.values() if any(f"{f.package}.{s.name}" == "weft.v1.Mesh" for s in f.service))
    print(f"file: {mesh_file} (with {' '.join(sorted(n for n in files if n != mesh_file))})")
    pool = build_pool(files)
    publish = Method(channel, pool, files, "weft.v1.Mesh", "Publish")
    subscribe = Method(channel, pool, files, "weft.v1.Mesh", "Subscribe")
    print(f"method: {publish.signature}")
    print(f"method: {subscribe.signature}")

    # Publish: one batch of one event; the answer says where it was stored.
    event_id = str(uuid.uuid4())
    text = "hello from a client with no stubs"
    batch = publish.request(batch_id=1)
    batch.events.add(
        id=event_id,
        source="//weft/test/reflection-client",
        type="com.example.reflection.greeted",
        channel=args.channel,
        datacontenttype="text/plain",
        data=text.encode(),
    )
    answers = list(publish.call(iter([batch]), timeout=TIMEOUT_S))
    if len(answers) != 1 or answers[0].batch_id != 1 or len(answers[0].results) != 1:
        raise Failure(f"expected one answer for batch 1 with one result, got {answers}")
    result = answers[0].results[0]
    if result.HasField("error"):
        raise Failure(f"the event was refused: {result.error.reason} {result.error.message}")
    print(f"published: channel={args.channel} id={event_id} sequence={result.sequence}")

    # Subscribe as a new group from the earliest event: the event comes; ack it.
    sub = Subscription(subscribe, args.channel, args.group)
    subscribed = sub.next("subscribed")
    print(f"subscribed: group={subscribed.group} created={str(subscribed.created).lower()} acked_through={subscribed.acked_through}")
    deliveries = sub.next("deliveries").deliveries
    delivery = deliveries[0]
    got = delivery.event
    print(f"received: sequence={delivery.sequence} attempt={delivery.attempt} id={got.id} data={got.data.decode()}")
    if got.id != event_id or delivery.sequence != result.sequence:
        raise Failure(f"received event {got.id} (sequence {delivery.sequence}), not the one published")
    sub.ack(delivery.delivery_id)
    print(f"acked: delivery_id={delivery.delivery_id}")
    sub.close()

    # Rejoin the group: it resumes after the acked event.
    again = Subscription(subscribe, args.channel, args.group)
    resumed = again.next("subscribed")
    print(f"resumed: group={resumed.group} created={str(resumed.created).lower()} acked_through={resumed.acked_through}")
    again.close()
    channel.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--address", required=True, help="the sidecar's service address, host:port")
    parser.add_argument("--channel", default="reflection.demo", help="the channel to publish to and subscribe on")
    parser.add_argument("--group", default="python-reflection", help="the subscriber group")
    parser.add_argument("--reflection", choices=["auto", "v1", "v1alpha"], default="auto",
                        help="the reflection API to use; auto tries v1, then v1alpha")
    parser.add_argument("--reflection-protos", default=REFLECTION_PROTOS,
                        help="the directory holding grpc/reflection/<version>/reflection.proto")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="weft-reflection-")
    try:
        run(args, workdir)
    except (Failure, grpc.RpcError) as e:
        detail = f"{e.code().name} {e.details()}" if isinstance(e, grpc.RpcError) else str(e)
        print(f"reflection client failed: {detail}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
