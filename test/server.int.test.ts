import { rm } from "node:fs/promises";
import { type ClientHttp2Stream, connect as http2Connect } from "node:http2";
import { join } from "node:path";
import { create, fromBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import {
  Client,
  type ClientReadableStream,
  type ServiceDefinition,
  type ServiceError,
  type StatusObject,
  credentials,
  makeGenericClientConstructor,
  status,
} from "@grpc/grpc-js";
import { service as healthDefinition } from "grpc-health-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import { holdNextAppend } from "./support/hold-append.js";
import { ClientError, type Published } from "../src/client/index.js";
import { DEFAULT_LIMITS } from "../src/contract/validate.js";
import { DeliveryEngine } from "../src/delivery/delivery-engine.js";
import { EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { type PublishResponse, PublishResponseSchema, StartPosition_Kind, SubscribeResponseSchema } from "../src/gen/weft/v1/mesh_pb.js";
import { ServiceServer } from "../src/grpc/server.js";
import { EventLog } from "../src/log/event-log.js";
import { eventually, take, within } from "./support/collect.js";
import { RawMeshConnection, encodePublishRequest } from "./support/raw-client.js";
import { grpcFrame, grpcMessages, grpcRequest } from "./support/raw-http2.js";
import { type TestSidecar, startSidecar, tempDir } from "./support/sidecar.js";
import { wireFields } from "./support/wire-fields.js";

const raw = (b: Buffer) => b;

/** Calls a unary method with hand-encoded bytes. */
function unary(client: Client, path: string, request: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(path, raw, raw, Buffer.from(request), (err, res) => (err ? reject(err) : resolve(res!))),
  );
}

/** grpc.health.v1.Health, with grpc-health-check's definition (messages as plain objects). */
const HealthClient = makeGenericClientConstructor(healthDefinition as unknown as ServiceDefinition, "Health");
type HealthStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";
type Health = Client & {
  Check(request: { service: string }, callback: (err: ServiceError | null, res?: { status: HealthStatus }) => void): void;
  Watch(request: { service: string }): ClientReadableStream<{ status: HealthStatus }>;
  List(request: object, callback: (err: ServiceError | null, res?: { statuses: Record<string, { status: HealthStatus }> }) => void): void;
};

function healthClient(address: string): Health {
  return new HealthClient(address, credentials.createInsecure()) as unknown as Health;
}

function check(health: Health, service: string): Promise<HealthStatus> {
  return new Promise((resolve, reject) => health.Check({ service }, (err, res) => (err ? reject(err) : resolve(res!.status))));
}

/** A Watch stream: every status it received, a way to wait for the next, and how it ended. */
function watchHealth(health: Health, service: string) {
  const call = health.Watch({ service });
  const seen: HealthStatus[] = [];
  let waiter: (() => void) | undefined;
  call.on("data", (m: { status: HealthStatus }) => {
    seen.push(m.status);
    waiter?.();
  });
  call.on("error", () => {});
  const ended = new Promise<{ code: status; reason: string }>((resolve) =>
    call.on("status", (s: StatusObject) => resolve({ code: s.code, reason: String(s.metadata.get("weft-reason")[0] ?? "") })),
  );
  let read = 0;
  return {
    seen,
    ended,
    /** Waits for the next status the stream sends, and checks that it is `expected`. */
    async next(expected: HealthStatus): Promise<void> {
      while (seen.length <= read) {
        await within(new Promise<void>((resolve) => (waiter = resolve)), 10_000, `health status ${expected}`);
      }
      expect(seen[read++]).toBe(expected);
    },
  };
}

describe("service server", () => {
  let t: TestSidecar | undefined;
  afterEach(async () => {
    await t?.dispose();
    t = undefined;
  });

  it("reports SERVING for the sidecar, weft.v1.Mesh and weft.v1.Peer once started, and NOT_FOUND for other names", async () => {
    t = await startSidecar();
    const health = healthClient(t.address);
    for (const service of ["", "weft.v1.Mesh", "weft.v1.Peer"]) expect(await check(health, service)).toBe("SERVING");
    await expect(check(health, "weft.v1.Admin")).rejects.toMatchObject({ code: status.NOT_FOUND });
    const listed = await new Promise<Record<string, { status: string }>>((resolve, reject) =>
      health.List({}, (err: ServiceError | null, res?: { statuses: Record<string, { status: string }> }) => (err ? reject(err) : resolve(res!.statuses))),
    );
    expect(listed).toEqual({ "": { status: "SERVING" }, "weft.v1.Mesh": { status: "SERVING" }, "weft.v1.Peer": { status: "SERVING" } });
    // A raw Check, as a client with no health stubs sends it: HealthCheckResponse{status: SERVING}.
    const client = new Client(t.address, credentials.createInsecure());
    const mesh = await unary(client, "/grpc.health.v1.Health/Check", new BinaryWriter().tag(1, WireType.LengthDelimited).string("weft.v1.Mesh").finish());
    expect(wireFields(mesh)).toEqual([[1, 1]]);
    client.close();
    health.close();
  });

  it("refuses a malformed health request with INVALID_ARGUMENT, skips unknown fields and keeps a hostile name out of the status", async () => {
    t = await startSidecar();
    const client = new Client(t.address, credentials.createInsecure());
    const name = (s: string): Uint8Array => new BinaryWriter().tag(1, WireType.LengthDelimited).string(s).finish();
    const refusal = { code: status.INVALID_ARGUMENT, details: expect.stringContaining("the request is not a grpc.health.v1.HealthCheckRequest") };
    // Field 1 with no length, an unknown field of wire type 7 (there is none), a tag of 11 bytes.
    for (const bad of [Uint8Array.of(0x0a), Uint8Array.of(0x3f), Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)]) {
      const err = await unary(client, "/grpc.health.v1.Health/Check", bad).then(() => undefined, (e: ServiceError) => e);
      expect(err).toMatchObject(refusal);
      expect(err!.metadata.get("weft-reason")).toEqual(["MALFORMED_MESSAGE"]);
      const watched = await new Promise<ServiceError>((resolve) => {
        const call = client.makeServerStreamRequest("/grpc.health.v1.Health/Watch", raw, raw, Buffer.from(bad));
        call.on("data", () => resolve(new Error("a Watch of a malformed request answered") as ServiceError));
        call.on("error", resolve);
      });
      expect(watched).toMatchObject(refusal);
      const listed = await unary(client, "/grpc.health.v1.Health/List", bad).then(() => undefined, (e: ServiceError) => e);
      expect(listed).toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringContaining("the request is not a grpc.health.v1.HealthListRequest") });
    }
    // grpc-health-check decodes with protobufjs, which reads a string cut short as the bytes
    // that are there: "a" (NOT_FOUND), and "" from field 1 sent as the varint 1 (a length of
    // one byte, and no bytes).
    await expect(unary(client, "/grpc.health.v1.Health/Check", Uint8Array.of(0x0a, 0x05, 0x61))).rejects.toMatchObject({ code: status.NOT_FOUND, details: expect.stringContaining('"a"') });
    expect(wireFields(await unary(client, "/grpc.health.v1.Health/Check", Uint8Array.of(0x08, 0x01)))).toEqual([[1, 1]]);
    // Unknown fields before the name are skipped: a varint, and an (empty) group.
    const withUnknown = Buffer.concat([new BinaryWriter().tag(7, WireType.Varint).int32(5).finish(), Uint8Array.of(0x43, 0x44), name("weft.v1.Mesh")]);
    expect(wireFields(await unary(client, "/grpc.health.v1.Health/Check", withUnknown))).toEqual([[1, 1]]);
    // A 100 000-character name is NOT_FOUND, quoted in part.
    const long = await unary(client, "/grpc.health.v1.Health/Check", name("x".repeat(100_000))).then(() => undefined, (e: ServiceError) => e);
    expect(long).toMatchObject({ code: status.NOT_FOUND, details: expect.stringContaining("(100000 characters)") });
    expect(long!.details.length).toBeLessThan(300);
    // The sidecar still answers.
    expect(wireFields(await unary(client, "/grpc.health.v1.Health/Check", name("")))).toEqual([[1, 1]]);
    client.close();
  });

  it("keeps health NOT_SERVING on a service server until its owner sets SERVING", async () => {
    const dataDir = await tempDir();
    const log = await EventLog.open(dataDir);
    const engine = new DeliveryEngine(log);
    await engine.start();
    const server = await ServiceServer.start({ log, engine, limits: DEFAULT_LIMITS }, { address: "127.0.0.1:0", maxMessageBytes: 1 << 20 });
    const health = healthClient(server.address);
    try {
      expect(await check(health, "")).toBe("NOT_SERVING");
      expect(await check(health, "weft.v1.Mesh")).toBe("NOT_SERVING");
      const watch = watchHealth(health, "weft.v1.Mesh");
      await watch.next("NOT_SERVING");
      server.health.set("SERVING");
      await watch.next("SERVING");
      expect(await check(health, "")).toBe("SERVING");
      // Unknown names: Watch says SERVICE_UNKNOWN and stays open (grpc.health.v1).
      const unknown = watchHealth(health, "weft.v1.Admin");
      await unknown.next("SERVICE_UNKNOWN");
      await server.shutdown(5000);
      expect(await watch.ended).toMatchObject({ code: status.UNAVAILABLE, reason: "SHUTTING_DOWN" });
      expect(watch.seen).toEqual(["NOT_SERVING", "SERVING", "NOT_SERVING"]);
      expect(await unknown.ended).toMatchObject({ code: status.UNAVAILABLE, reason: "SHUTTING_DOWN" });
    } finally {
      health.close();
      server.forceShutdown();
      engine.stop();
      await log.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("reports NOT_SERVING from the start of a graceful stop, while a publish stream still drains", async () => {
    t = await startSidecar({ shutdownGraceMs: 10_000 });
    const health = healthClient(t.address);
    const watch = watchHealth(health, "");
    await watch.next("SERVING");
    // Hold the log's next append, so that the stop has a publish batch to wait for.
    const { appending, release } = holdNextAppend(t.sidecar.log);
    const conn = new RawMeshConnection(t.address);
    const pub = conn.publish();
    pub.send(7, [create(EventSchema, { id: "drain-1", source: "//test", type: "t", channel: "health.drain", data: new TextEncoder().encode("x") })]);
    await appending;

    const started = Date.now();
    const stopped = t.sidecar.stop();
    await watch.next("NOT_SERVING");
    // The batch is accepted but not yet stored: its stream is still open, unanswered.
    await expect(pub.next(300)).rejects.toThrow("no message within 300 ms");
    release();
    // Draining finishes the batch: stored and acked, then the stream ends with UNAVAILABLE.
    const answer = await pub.response();
    expect(answer.batchId).toBe(7n);
    expect(answer.results.map((r) => r.sequence)).toEqual([1n]);
    expect(await pub.finished()).toMatchObject({ code: status.UNAVAILABLE, reason: "SHUTTING_DOWN" });
    await stopped;
    // The watch is ended by the sidecar, not cut after the grace period.
    expect(await watch.ended).toMatchObject({ code: status.UNAVAILABLE, reason: "SHUTTING_DOWN" });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(watch.seen).toEqual(["SERVING", "NOT_SERVING"]);
    conn.close();
    health.close();
  });

  it("shuts down gracefully: what was acked is stored, streams end with UNAVAILABLE", async () => {
    t = await startSidecar();
    const channel = "shutdown.orders";
    const pub = t.client();
    const sub = t.client().subscribe({ channel, group: "g", from: "earliest", reconnect: false });
    await sub.subscribed();
    const acked: Published[] = [];
    const pending = Array.from({ length: 20 }, () =>
      pub.publishMany(Array.from({ length: 50 }, () => ({ channel, data: "x" }))).then((r) => acked.push(...r), () => {}),
    );
    while (acked.length < 100) await new Promise((r) => setTimeout(r, 1));
    await t.sidecar.stop();
    const ended = await sub.closed;
    expect(ended).toBeInstanceOf(ClientError);
    expect(ended!.reason).toBe("SHUTTING_DOWN");
    pub.close();
    await Promise.all(pending);
    await t.restart();
    const audit = t.client().subscribe({ channel, group: "audit", from: "earliest", maxInFlight: 1000 });
    const got = await take(audit, acked.length);
    const stored = new Set(got.map((d) => d.event.id));
    expect(acked.filter((p) => !stored.has(p.id))).toEqual([]);
    audit.close();
  });

  it("sends Subscribed before any delivery, also of events waiting for a group whose first attempts need no write", async () => {
    t = await startSidecar();
    const conn = new RawMeshConnection(t.address);
    const publish = conn.publish();
    const open = { channel: "first.subscribed", group: "g", start: { kind: StartPosition_Kind.EARLIEST }, maxInFlight: 100 };
    for (let round = 0; round < 20; round++) {
      // Events wait for the group, under its attempt mark: they can go the moment a member joins.
      await publish.publish(round, [create(EventSchema, { id: `e${round}`, source: "//first", type: "t", channel: open.channel })]);
      const sub = conn.subscribe();
      sub.open(open);
      const first = fromBinary(SubscribeResponseSchema, await sub.next());
      expect(first.response.case).toBe("subscribed");
      const [d] = await sub.take(1);
      sub.ack(d!.deliveryId);
      await eventually(() => t!.sidecar.engine.status().find((g) => g.channel === open.channel)?.ackedThrough === round + 1);
      sub.end();
      await sub.finished();
    }
    publish.end();
    conn.close();
  });

  it("refuses Subscribe streams past maxSubscriptions with RESOURCE_EXHAUSTED, and takes new ones once some close", async () => {
    t = await startSidecar({ maxSubscriptions: 2 });
    const c = t.client();
    const open = [1, 2].map(() => c.subscribe({ channel: "limit.test", group: "g" }));
    await Promise.all(open.map((s) => s.subscribed()));
    const third = c.subscribe({ channel: "limit.test", group: "g" });
    await expect(third.subscribed()).rejects.toMatchObject({ code: 8, reason: "TOO_MANY_SUBSCRIPTIONS" });
    open[0]!.close();
    await open[0]!.closed;
    // The sidecar frees the slot when it sees the stream end; the client may be a moment ahead.
    let fourth = c.subscribe({ channel: "limit.test", group: "g", reconnect: false });
    while ((await fourth.subscribed().then(() => "ok", (e: ClientError) => e.reason)) === "TOO_MANY_SUBSCRIPTIONS") {
      fourth = c.subscribe({ channel: "limit.test", group: "g", reconnect: false });
    }
    expect(await fourth.subscribed()).toMatchObject({ group: "g" });
    fourth.close();
    open[1]!.close();
  });

  it("stops reading a publish stream that has 4000 events waiting for the log, and reads on once they are stored", async () => {
    t = await startSidecar();
    const log = t.sidecar.log;
    const append = log.append.bind(log);
    // Appends to flow.held wait until released; every other channel is stored at once.
    const held: number[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    vi.spyOn(log, "append").mockImplementation(async (entries) => {
      if (entries[0]?.channel === "flow.held") {
        held.push(entries.length);
        await gate;
      }
      return append(entries);
    });
    const event = (channel: string, id: string) => create(EventSchema, { id, source: "//test", type: "t", channel, data: new Uint8Array(16) });
    // Raw HTTP/2, so that the test knows when every byte of the six batches left for the socket.
    const session = http2Connect(`http://${t.address}`);
    session.on("error", () => {});
    const publishStream = () => grpcRequest(session, "/weft.v1.Mesh/Publish");
    const responses = (stream: ClientHttp2Stream): AsyncGenerator<PublishResponse> => grpcMessages(stream, (b) => fromBinary(PublishResponseSchema, b));
    const pub = publishStream();
    const answers = responses(pub);
    // One batch first: the connection has its wide receive window before the big ones go.
    pub.write(grpcFrame(encodePublishRequest(0, [event("flow.free", "warm")])));
    expect((await answers.next()).value?.results[0]?.sequence).toBe(1n);
    for (let b = 1; b <= 6; b++) {
      pub.write(grpcFrame(encodePublishRequest(b, Array.from({ length: 1000 }, (_, i) => event("flow.held", `e-${b}-${i}`)))));
    }
    await eventually(() => session.state.outboundQueueSize === 0 && pub.writableLength === 0 && (session.socket?.writableLength ?? 0) === 0, 10_000, "the six batches sent");
    // A second stream: its batch reaches the sidecar after all six, and is stored.
    const probe = publishStream();
    probe.end(grpcFrame(encodePublishRequest(1, [event("flow.free", "probe")])));
    expect((await responses(probe).next()).value?.results[0]?.sequence).toBe(2n);
    expect(held).toEqual([1000, 1000, 1000, 1000]);
    release();
    const stored: [bigint, number][] = [];
    for (let b = 1; b <= 6; b++) {
      const a = (await answers.next()).value!;
      stored.push([a.batchId, a.results.length]);
    }
    expect(stored).toEqual([1n, 2n, 3n, 4n, 5n, 6n].map((id) => [id, 1000]));
    expect(held).toHaveLength(6);
    expect(log.head("flow.held").last).toBe(6000);
    session.destroy();
  });

  it("listens on a unix socket", async () => {
    const dir = await tempDir();
    t = await startSidecar({ listen: join(dir, "weft.sock") });
    expect(t.address).toBe(`unix:${join(dir, "weft.sock")}`);
    const c = t.client();
    const sub = c.subscribe({ channel: "unix.test", group: "g", from: "earliest" });
    await c.publish({ channel: "unix.test", data: "over a socket file" });
    const [d] = await take(sub, 1);
    expect(d!.text()).toBe("over a socket file");
    sub.close();
  });
});
