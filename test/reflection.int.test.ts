import { connect as http2Connect } from "node:http2";
import { toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Client, credentials, status } from "@grpc/grpc-js";
import { ReflectionV1Implementation } from "@grpc/reflection/build/src/implementations/reflection-v1.js";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { file_weft_v1_admin } from "../src/gen/weft/v1/admin_pb.js";
import { file_weft_v1_mesh } from "../src/gen/weft/v1/mesh_pb.js";
import { eventually, settle } from "./support/collect.js";
import { grpcFrame, grpcMessages, grpcRequest } from "./support/raw-http2.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";
import { ALL_EXTENSION_NUMBERS_OF_TYPE, FILE_BY_FILENAME, FILE_CONTAINING_SYMBOL, LIST_SERVICES, ReflectionStream, field, request, text } from "./support/reflection-client.js";

/**
 * Server reflection (grpc.reflection.v1 and v1alpha, served by @grpc/reflection) of a real
 * sidecar, over a real socket, with requests and responses encoded by hand
 * (support/reflection-client.ts). The Python client of test/e2e-lang/reflection.e2e.test.ts
 * reads the same service with Python's protobuf.
 *
 * Where @grpc/reflection answers its own way, the tests say so: full names without a leading
 * dot and enum values inside their enum; its own error messages, quoting names whole; NOT_FOUND
 * for the extension numbers of a message without extensions; UNIMPLEMENTED for a request
 * that asks nothing; original_request encoded again from what it decoded (an empty host
 * included). Requests are read by protobufjs, which takes a string cut short as the bytes
 * that are there and reads a string field whatever its wire type; bytes it cannot read at
 * all end the stream with INVALID_ARGUMENT.
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

  it("finds the file of a method, a message, a nested enum, an enum value, a field and a oneof by full name", async () => {
    const stream = new ReflectionStream(client);
    for (const symbol of [
      "weft.v1.Mesh.Subscribe",
      "weft.v1.PublishRequest",
      "weft.v1.StartPosition.Kind",
      "weft.v1.StartPosition.Kind.KIND_EARLIEST",
      "weft.v1.StartPosition.kind",
      "weft.v1.SubscribeRequest.request",
    ]) {
      const answer = await stream.ask(request(FILE_CONTAINING_SYMBOL, symbol));
      expect(answer.error, symbol).toBeUndefined();
      expect(answer.files![0]!.name, symbol).toBe("weft/v1/mesh.proto");
    }
    // @grpc/reflection's names: no leading dot, and an enum value inside its enum (not beside it, as C++ scopes it).
    for (const symbol of [".weft.v1.PublishRequest", "weft.v1.StartPosition.KIND_EARLIEST"]) {
      expect((await stream.ask(request(FILE_CONTAINING_SYMBOL, symbol))).error, symbol).toEqual({ code: status.NOT_FOUND, message: `Symbol not found: ${symbol}` });
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
    expect(symbol.error).toEqual({ code: status.NOT_FOUND, message: "Symbol not found: weft.v1.Nope" });
    const file = await stream.ask(request(FILE_BY_FILENAME, "weft/v1/peer.proto"));
    expect(file.error).toEqual({ code: status.NOT_FOUND, message: "Proto file not found: weft/v1/peer.proto" });
    const ext = new BinaryWriter().tag(5, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string("weft.v1.Event").tag(2, WireType.Varint).int32(1000).join();
    const extension = await stream.ask(Buffer.from(ext.finish()));
    expect(extension.error).toEqual({ code: status.NOT_FOUND, message: "Extension not found for symbol weft.v1.Event at field 1000" });
    const unknownType = await stream.ask(request(ALL_EXTENSION_NUMBERS_OF_TYPE, "weft.v1.Mesh"));
    expect(unknownType.error?.code).toBe(status.NOT_FOUND);
    // Still answering after the errors.
    expect((await stream.ask(request(LIST_SERVICES, ""))).services).toContain("weft.v1.Mesh");
    stream.end();
    expect(await stream.ended).toBeUndefined();
  });

  it("answers the extension numbers of a message without extensions with NOT_FOUND, as @grpc/reflection does", async () => {
    const stream = new ReflectionStream(client);
    const answer = await stream.ask(request(ALL_EXTENSION_NUMBERS_OF_TYPE, "weft.v1.Event"));
    expect(answer.error).toEqual({ code: status.NOT_FOUND, message: "Extensions not found for symbol weft.v1.Event" });
    expect(answer.extensionNumbers).toBeUndefined();
    stream.end();
  });

  it("answers a huge name it cannot find with NOT_FOUND in the stream, which stays open", async () => {
    const stream = new ReflectionStream(client);
    const name = "x".repeat(200_000);
    const answer = await stream.ask(request(FILE_CONTAINING_SYMBOL, name));
    // In the response's message, not in a status: @grpc/reflection quotes the name whole.
    expect(answer.error).toEqual({ code: status.NOT_FOUND, message: `Symbol not found: ${name}` });
    expect((await stream.ask(request(LIST_SERVICES, "*"))).services).toHaveLength(2);
    stream.end();
    expect(await stream.ended).toBeUndefined();
  });

  it("answers a request that asks nothing with UNIMPLEMENTED and keeps the stream open", async () => {
    const stream = new ReflectionStream(client);
    const hostOnly = Buffer.from(new BinaryWriter().tag(1, WireType.LengthDelimited).string("h").tag(99, WireType.Varint).int32(5).finish());
    const answer = await stream.ask(hostOnly);
    expect(answer.error?.code).toBe(status.UNIMPLEMENTED);
    expect(answer.error?.message).toContain("Unimplemented method for request");
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
      expect(text(field(answer.original, FILE_CONTAINING_SYMBOL))).toBe(s);
      if (s.startsWith("missing")) expect(answer.error?.code).toBe(status.NOT_FOUND);
      else expect(answer.files![0]!.name).toBe(s === "weft.v1.Event" ? "weft/v1/event.proto" : "weft/v1/mesh.proto");
    }
    stream.end();
  });

  for (const version of ["v1", "v1alpha"]) {
    it(`ends the stream with INVALID_ARGUMENT (MALFORMED_MESSAGE) on bytes that are not a request (${version})`, async () => {
      for (const bad of [
        Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), // not a tag: wire type 7
        Buffer.from([0x22]), // field 4 with no length
        Buffer.from([0x2a, 0x02, 0x08, 0x80]), // file_containing_extension whose number is cut off
      ]) {
        const stream = new ReflectionStream(client, version);
        stream.send(bad);
        const ended = await stream.ended;
        expect(ended?.code, bad.toString("hex")).toBe(status.INVALID_ARGUMENT);
        expect(ended?.metadata.get("weft-reason")).toEqual(["MALFORMED_MESSAGE"]);
        expect(ended?.details).toContain(`the request is not a grpc.reflection.${version}.ServerReflectionRequest`);
      }
      // The server still answers.
      const stream = new ReflectionStream(client, version);
      expect((await stream.ask(request(LIST_SERVICES, "*"))).services).toContain("weft.v1.Mesh");
      stream.end();
    });
  }

  it("answers what protobufjs reads of a field cut short or sent in the wrong wire type", async () => {
    const stream = new ReflectionStream(client);
    // Field 4 says 16 bytes follow and one does: the symbol is that one.
    expect((await stream.ask(Buffer.from([0x22, 0x10, 0x61]))).error).toEqual({ code: status.NOT_FOUND, message: "Symbol not found: a" });
    // Field 4 as a varint 7: read as a string of 7 bytes, of which none follow.
    const number = Buffer.from(new BinaryWriter().tag(4, WireType.Varint).int32(7).finish());
    expect((await stream.ask(number)).error).toEqual({ code: status.NOT_FOUND, message: "Symbol not found: " });
    stream.end();
    expect(await stream.ended).toBeUndefined();
  });

  it("stops reading a stream whose client does not read the answers, and answers everything in order once it does", async () => {
    // How many requests @grpc/reflection has answered (both versions share the method).
    const answering = vi.spyOn(ReflectionV1Implementation.prototype, "handleServerReflectionRequest");
    // Raw HTTP/2, so that nothing reads the answers until the test does.
    const session = http2Connect(`http://${t.address}`);
    session.on("error", () => {});
    try {
      const call = grpcRequest(session, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
      const symbols = ["weft.v1.Admin", "weft.v1.Mesh", "weft.v1.Event"];
      const asks = 2000; // each answer 2-5 KB: megabytes, were they all made at once
      for (let i = 0; i < asks; i++) call.write(grpcFrame(request(FILE_CONTAINING_SYMBOL, symbols[i % 3]!)));
      call.end();
      const trailers = new Promise<unknown>((resolve) => call.on("trailers", (headers) => resolve(headers["grpc-status"])));
      await eventually(() => answering.mock.calls.length > 0, 10_000, "the first answer");
      await settle(500);
      // Only what the HTTP/2 windows and the call's buffer hold is answered ahead of the client.
      expect(answering.mock.calls.length).toBeLessThan(100);
      // Another stream is served meanwhile.
      const other = new ReflectionStream(client);
      expect((await other.ask(request(LIST_SERVICES, "*"))).services).toHaveLength(2);
      other.end();
      // Reading now: every request is answered, in order, and the stream ends OK.
      let answered = 0;
      for await (const answer of grpcMessages(call, (b) => b)) {
        const asked = field(answer, 2) as Uint8Array;
        expect(text(field(asked, FILE_CONTAINING_SYMBOL)), `answer ${answered}`).toBe(symbols[answered % 3]);
        expect(field(answer, 4), `answer ${answered}`).toBeDefined();
        answered++;
      }
      expect(answered).toBe(asks);
      expect(await trailers).toBe("0");
    } finally {
      answering.mockRestore();
      session.destroy();
    }
  });

  it("refuses a request larger than the sidecar's message limit with RESOURCE_EXHAUSTED", async () => {
    const stream = new ReflectionStream(client);
    stream.send(request(FILE_CONTAINING_SYMBOL, "y".repeat(t.sidecar.config.maxMessageBytes + 1)));
    expect((await stream.ended)?.code).toBe(status.RESOURCE_EXHAUSTED);
  });
});
