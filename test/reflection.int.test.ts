import { toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Client, credentials, status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { file_weft_v1_admin } from "../src/gen/weft/v1/admin_pb.js";
import { file_weft_v1_mesh } from "../src/gen/weft/v1/mesh_pb.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";
import { ALL_EXTENSION_NUMBERS_OF_TYPE, FILE_BY_FILENAME, FILE_CONTAINING_SYMBOL, LIST_SERVICES, ReflectionStream, request, text } from "./support/reflection-client.js";
import { wireFields } from "./support/wire-fields.js";

/**
 * Server reflection (grpc.reflection.v1 and v1alpha) of a real sidecar, over a real socket,
 * with requests and responses encoded by hand (support/reflection-client.ts). The
 * Python client of test/e2e-lang/reflection.e2e.test.ts reads the same service with Python's
 * protobuf.
 */

describe("server reflection", () => {
  let t: TestSidecar;
  let client: Client;
  beforeAll(async () => {
    t = await startSidecar();
    client = new Client(t.address, credentials.createInsecure());
  });
  afterAll(async () => {
    client.close();
    await t.dispose();
  });

  for (const version of ["v1", "v1alpha"]) {
    it(`lists weft.v1.Mesh and weft.v1.Admin (${version}), echoing the host and the request`, async () => {
      const stream = new ReflectionStream(client, version);
      const asked = request(LIST_SERVICES, "*", "localhost:7420");
      const answer = await stream.ask(asked);
      expect(answer.services).toEqual(["weft.v1.Mesh", "weft.v1.Admin"]);
      expect(answer.host).toBe("localhost:7420");
      expect(Buffer.from(answer.original).equals(asked)).toBe(true);
      stream.end();
      expect(await stream.ended).toBeUndefined();
    });
  }

  it("serves a service's file with every file it imports, byte for byte as generated", async () => {
    const stream = new ReflectionStream(client);
    const answer = await stream.ask(request(FILE_CONTAINING_SYMBOL, "weft.v1.Mesh"));
    const names = answer.files!.map((f) => f.name);
    expect(names.sort()).toEqual(["google/protobuf/timestamp.proto", "weft/v1/event.proto", "weft/v1/mesh.proto"]);
    const mesh = answer.files!.find((f) => f.name === "weft/v1/mesh.proto")!;
    expect(toBinary(FileDescriptorProtoSchema, mesh)).toEqual(toBinary(FileDescriptorProtoSchema, file_weft_v1_mesh.proto));
    expect(mesh.service.map((s) => s.method.map((m) => m.name))).toEqual([["Publish", "Subscribe"]]);
    const admin = await stream.ask(request(FILE_CONTAINING_SYMBOL, "weft.v1.Admin"));
    expect(admin.files!.map((f) => f.name)).toContain("weft/v1/admin.proto");
    expect(toBinary(FileDescriptorProtoSchema, admin.files!.find((f) => f.name === "weft/v1/admin.proto")!)).toEqual(
      toBinary(FileDescriptorProtoSchema, file_weft_v1_admin.proto),
    );
    stream.end();
  });

  it("finds the file of a method, a message, a nested enum, an enum value, a field and a oneof, with or without a leading dot", async () => {
    const stream = new ReflectionStream(client);
    for (const symbol of [
      "weft.v1.Mesh.Subscribe",
      "weft.v1.PublishRequest",
      ".weft.v1.PublishRequest",
      "weft.v1.StartPosition.Kind",
      "weft.v1.StartPosition.KIND_EARLIEST",
      "weft.v1.StartPosition.kind",
      "weft.v1.SubscribeRequest.request",
    ]) {
      const answer = await stream.ask(request(FILE_CONTAINING_SYMBOL, symbol));
      expect(answer.error, symbol).toBeUndefined();
      expect(answer.files![0]!.name, symbol).toBe("weft/v1/mesh.proto");
    }
    const event = await stream.ask(request(FILE_CONTAINING_SYMBOL, "weft.v1.Event"));
    expect(event.files!.map((f) => f.name)).toEqual(["weft/v1/event.proto", "google/protobuf/timestamp.proto"]);
    const timestamp = await stream.ask(request(FILE_BY_FILENAME, "google/protobuf/timestamp.proto"));
    expect(timestamp.files!.map((f) => f.name)).toEqual(["google/protobuf/timestamp.proto"]);
    stream.end();
  });

  it("answers what it does not have with NOT_FOUND and keeps the stream open", async () => {
    const stream = new ReflectionStream(client);
    const symbol = await stream.ask(request(FILE_CONTAINING_SYMBOL, "weft.v1.Nope"));
    expect(symbol.error).toEqual({ code: status.NOT_FOUND, message: 'no symbol "weft.v1.Nope"' });
    const file = await stream.ask(request(FILE_BY_FILENAME, "weft/v1/peer.proto"));
    expect(file.error?.code).toBe(status.NOT_FOUND);
    expect(file.error?.message).toContain("weft/v1/peer.proto");
    const ext = new BinaryWriter().tag(5, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string("weft.v1.Event").tag(2, WireType.Varint).int32(1000).join();
    const extension = await stream.ask(Buffer.from(ext.finish()));
    expect(extension.error).toEqual({ code: status.NOT_FOUND, message: 'no extension 1000 of "weft.v1.Event"' });
    const unknownType = await stream.ask(request(ALL_EXTENSION_NUMBERS_OF_TYPE, "weft.v1.Mesh"));
    expect(unknownType.error?.code).toBe(status.NOT_FOUND);
    // Still answering after the errors.
    expect((await stream.ask(request(LIST_SERVICES, ""))).services).toContain("weft.v1.Mesh");
    stream.end();
    expect(await stream.ended).toBeUndefined();
  });

  it("lists no extension numbers of a message that has none", async () => {
    const stream = new ReflectionStream(client);
    const answer = await stream.ask(request(ALL_EXTENSION_NUMBERS_OF_TYPE, "weft.v1.Event"));
    expect(answer.extensionNumbers).toEqual({ baseType: "weft.v1.Event", numbers: [] });
    stream.end();
  });

  it("quotes at most 64 characters of a huge name it cannot find", async () => {
    const stream = new ReflectionStream(client);
    const answer = await stream.ask(request(FILE_CONTAINING_SYMBOL, "x".repeat(200_000)));
    expect(answer.error?.code).toBe(status.NOT_FOUND);
    expect(answer.error!.message).toBe(`no symbol "${"x".repeat(64)}"… (200000 characters)`);
    stream.end();
  });

  it("answers a request that asks nothing with INVALID_ARGUMENT and keeps the stream open", async () => {
    const stream = new ReflectionStream(client);
    const hostOnly = Buffer.from(new BinaryWriter().tag(1, WireType.LengthDelimited).string("h").tag(99, WireType.Varint).int32(5).finish());
    const answer = await stream.ask(hostOnly);
    expect(answer.error?.code).toBe(status.INVALID_ARGUMENT);
    expect(answer.error?.message).toContain("asks nothing");
    expect(answer.host).toBe("h");
    expect((await stream.ask(request(LIST_SERVICES, "*"))).services).toHaveLength(2);
    stream.end();
  });

  it("answers many pipelined requests in order", async () => {
    const stream = new ReflectionStream(client);
    const symbols = Array.from({ length: 300 }, (_, i) => (i % 3 === 0 ? "weft.v1.Event" : i % 3 === 1 ? "weft.v1.Mesh" : `missing.${i}`));
    for (const s of symbols) stream.send(request(FILE_CONTAINING_SYMBOL, s));
    for (const s of symbols) {
      const answer = await stream.next();
      expect(text(wireFields(answer.original)[0]![1])).toBe(s);
      if (s.startsWith("missing")) expect(answer.error?.code).toBe(status.NOT_FOUND);
      else expect(answer.files![0]!.name).toBe(s === "weft.v1.Event" ? "weft/v1/event.proto" : "weft/v1/mesh.proto");
    }
    stream.end();
  });

  it("ends the stream with INVALID_ARGUMENT (MALFORMED_MESSAGE) on bytes that are not a request", async () => {
    for (const bad of [
      Buffer.from([0x22, 0x10, 0x61]), // field 4 says 16 bytes follow; one does
      Buffer.from(new BinaryWriter().tag(4, WireType.Varint).int32(7).finish()), // a symbol that is a number
      Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), // not a tag
    ]) {
      const stream = new ReflectionStream(client);
      stream.send(bad);
      const ended = await stream.ended;
      expect(ended?.code, bad.toString("hex")).toBe(status.INVALID_ARGUMENT);
      expect(ended?.metadata.get("weft-reason")).toEqual(["MALFORMED_MESSAGE"]);
      expect(ended?.details).toContain("not a grpc.reflection ServerReflectionRequest");
    }
    // The server still answers.
    const stream = new ReflectionStream(client);
    expect((await stream.ask(request(LIST_SERVICES, "*"))).services).toContain("weft.v1.Mesh");
    stream.end();
  });

  it("refuses a request larger than the sidecar's message limit with RESOURCE_EXHAUSTED", async () => {
    const stream = new ReflectionStream(client);
    stream.send(request(FILE_CONTAINING_SYMBOL, "y".repeat(t.sidecar.config.maxMessageBytes + 1)));
    expect((await stream.ended)?.code).toBe(status.RESOURCE_EXHAUSTED);
  });
});
