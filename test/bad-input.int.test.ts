import { randomUUID } from "node:crypto";
import { type MessageInitShape, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { connect } from "../src/client/index.js";
import { type Event, EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { type PublishResult, StartPosition_Kind, type SubscribeOpen } from "../src/gen/weft/v1/mesh_pb.js";
import {
  RawMeshConnection,
  type RawStream,
  type RawSubscribe,
  type StreamStatus,
  type SubscribeOpenInit,
  type SubscribeRequestInit,
} from "./support/raw-client.js";
import { type TestSidecar, startSidecar } from "./support/sidecar.js";

/**
 * The delivery contract, point 10: bad input gets a clear gRPC error, and nothing else
 * happens. Every test sends something a well-behaved client never would, over a real
 * socket, asserts the exact status and "weft-reason", and then (afterEach) that the sidecar
 * still serves a fresh client and that a channel written before is byte for byte intact.
 */

const MAX_EVENT_BYTES = 4096;
const MAX_BATCH_EVENTS = 100;
const SOURCE = "//weft-test/bad-input";
const EARLIEST = { kind: StartPosition_Kind.EARLIEST };
const LATEST = { kind: StartPosition_Kind.LATEST };

let t: TestSidecar;
let raw: RawMeshConnection;
let counter = 0;
/** A name no other test uses: a valid channel or group. */
const fresh = (what: string): string => `bad.${what}.n${++counter}`;

function event(channel: string, init: MessageInitShape<typeof EventSchema> = {}): Event {
  return create(EventSchema, {
    id: randomUUID(),
    source: SOURCE,
    type: "test.bad_input",
    channel,
    data: Buffer.from("payload"),
    ...init,
  });
}

/** What the log holds for a channel: its head and each event's id and bytes, in order. */
async function stored(channel: string) {
  const head = t.sidecar.log.head(channel);
  const events = await t.sidecar.log.read(channel, head.first, 100_000);
  return {
    head,
    events: events.map((e) => ({
      sequence: e.sequence,
      id: fromBinary(EventSchema, e.bytes).id,
      hex: Buffer.from(e.bytes).toString("hex"),
    })),
  };
}

/** Asserts how a stream ended: code, reason (trailer and message prefix) and, if given, field. */
async function expectEnded(stream: RawStream, code: status, reason: string, field?: string): Promise<StreamStatus> {
  const s = await stream.finished();
  const seen = { code: status[s.code], reason: s.reason, ...(field === undefined ? {} : { field: s.field }) };
  expect(seen).toEqual({ code: status[code], reason, ...(field === undefined ? {} : { field }) });
  expect(s.details.startsWith(`${reason}: `)).toBe(true);
  return s;
}

/** Asserts a per-event refusal inside a publish response. */
function expectRefused(result: PublishResult | undefined, code: status, reason: string, field: string): void {
  expect(result, "a result for the event").toBeDefined();
  const e = result!.error;
  expect({ sequence: result!.sequence, code: e?.code, reason: e?.reason, field: e?.field }).toEqual({
    sequence: 0n,
    code,
    reason,
    field,
  });
  expect(e!.message.startsWith(`${reason}: `)).toBe(true);
}

function expectStored(result: PublishResult | undefined): bigint {
  expect(result?.error, "no error for a valid event").toBeUndefined();
  expect(result!.sequence).toBeGreaterThan(0n);
  return result!.sequence;
}

/** Publishes `events` on a new stream, returns the response, and ends the stream cleanly. */
async function publishOnce(events: (Event | Uint8Array)[], batchId = 1) {
  const pub = raw.publish();
  const response = await pub.publish(batchId, events);
  pub.end();
  expect((await pub.finished()).code).toBe(status.OK);
  return response;
}

/** Opens a subscription and waits for the confirmation. */
async function subscribe(open: SubscribeOpenInit) {
  const sub = raw.subscribe();
  sub.open(open);
  await sub.subscribed();
  return sub;
}

/** Polls until `check` holds; rejects after `timeoutMs` (a safety net, not a timing assertion). */
async function eventually(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const groupOf = (channel: string, group: string) =>
  t.sidecar.engine.status().find((g) => g.channel === channel && g.group === group);

// ---- the witness: a channel written once before all tests, which no test may change ----

const WITNESS = "bad.witness";
let witness: Awaited<ReturnType<typeof stored>>;
let witnessIds: string[];

/** The sidecar still serves a fresh client, and the witness channel is exactly as written. */
async function expectUnharmed(): Promise<void> {
  expect(await stored(WITNESS)).toEqual(witness);

  const channel = fresh("roundtrip");
  const e = event(channel);
  const response = await publishOnce([e]);
  expect(expectStored(response.results[0])).toBe(1n);

  const sub = await subscribe({ channel, group: "checker", start: EARLIEST });
  const [d] = await sub.take(1);
  expect(d?.event?.id).toBe(e.id);
  sub.ack(d!.deliveryId);

  const reader = await subscribe({ channel: WITNESS, group: fresh("reader"), start: EARLIEST, maxInFlight: 100 });
  const back: string[] = [];
  while (back.length < witnessIds.length) {
    const [x] = await reader.take(1); // keyed events come one at a time per key: ack as we go
    back.push(x!.event!.id);
    reader.ack(x!.deliveryId);
  }
  expect(back.sort()).toEqual([...witnessIds].sort());

  sub.end();
  reader.end();
  expect((await sub.finished()).code).toBe(status.OK);
  expect((await reader.finished()).code).toBe(status.OK);
}

// ---- bytes that are not protobuf ----

const GARBAGE: [string, Uint8Array][] = [
  ["text", Buffer.from("this is not protobuf")],
  ["a length past the end", Uint8Array.from([0x12, 0x50, 0x01])],
  ["field number 0", Uint8Array.from([0x00, 0x01])],
  ["an overlong varint", Uint8Array.from([0x08, ...new Array<number>(11).fill(0xff)])],
  ["wire type 7", Uint8Array.from([0x0f])],
  ["a lone end-group", Uint8Array.from([0x0c])],
  ["random bytes", Uint8Array.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0x11, 0x22])],
];

describe("bad input on the service API", () => {
  beforeAll(async () => {
    t = await startSidecar({ maxEventBytes: MAX_EVENT_BYTES, maxBatchEvents: MAX_BATCH_EVENTS });
    raw = new RawMeshConnection(t.address);
    const events = [1, 2, 3, 4, 5].map((i) => event(WITNESS, { key: `k${i % 2}`, attributes: { traceparent: `t${i}` } }));
    const response = await publishOnce(events);
    response.results.forEach((r) => expectStored(r));
    witnessIds = events.map((e) => e.id);
    witness = await stored(WITNESS);
    expect(witness.events.map((e) => e.id)).toEqual(witnessIds);
  });

  afterAll(async () => {
    raw?.close();
    await t?.dispose();
  });

  afterEach(async () => {
    await expectUnharmed();
  });

  describe("Publish", () => {
    it.each(GARBAGE)("a request of %s ends the stream with INVALID_ARGUMENT MALFORMED_MESSAGE", async (_, bytes) => {
      const pub = raw.publish();
      pub.write(bytes);
      await expectEnded(pub, status.INVALID_ARGUMENT, "MALFORMED_MESSAGE", "PublishRequest");
    });

    it("garbage after a good batch: the good batch is answered and stored, then the stream ends", async () => {
      const channel = fresh("pub");
      const good = [event(channel), event(channel)];
      const pub = raw.publish();
      const response = await pub.publish(7, good);
      expect(response.batchId).toBe(7n);
      response.results.forEach((r) => expectStored(r));
      pub.write(Buffer.from("this is not protobuf"));
      await expectEnded(pub, status.INVALID_ARGUMENT, "MALFORMED_MESSAGE");
      expect((await stored(channel)).events.map((e) => e.id)).toEqual(good.map((e) => e.id));
    });

    it.each<[string, Uint8Array]>([
      ["truncated", Uint8Array.from([0x0a, 0x10, 0x61])],
      ["a channel that is not UTF-8", Uint8Array.from([0x4a, 0x02, 0xff, 0xfe])],
      ["field number 0", Uint8Array.from([0x00])],
      ["text", Buffer.from("this is not protobuf")],
    ])("an events[] entry that is not an Event (%s) ends the stream with INVALID_ARGUMENT, and nothing of its batch is stored", async (_, bad) => {
      const channel = fresh("pub");
      const pub = raw.publish();
      pub.send(1, [event(channel), bad, event(channel)]);
      await expectEnded(pub, status.INVALID_ARGUMENT, "MALFORMED_MESSAGE", "events[1]");
      expect(t.sidecar.log.head(channel).last).toBe(0);
    });

    // Each case: [name, how the event is spoiled, expected reason, expected field].
    const BAD_EVENTS: [string, MessageInitShape<typeof EventSchema>, string, string][] = [
      ["an uppercase channel", { channel: "Orders.created" }, "INVALID_CHANNEL", "channel"],
      ["an empty channel", { channel: "" }, "INVALID_CHANNEL", "channel"],
      ["a channel with an empty segment", { channel: "a..b" }, "INVALID_CHANNEL", "channel"],
      ["a channel with a leading dot", { channel: ".orders" }, "INVALID_CHANNEL", "channel"],
      ["a channel with a trailing dot", { channel: "orders." }, "INVALID_CHANNEL", "channel"],
      ["a channel segment starting with a digit", { channel: "orders.1st" }, "INVALID_CHANNEL", "channel"],
      ["a channel of 201 characters", { channel: "a".repeat(201) }, "INVALID_CHANNEL", "channel"],
      ["a channel with non-ASCII letters", { channel: "bestellungen.größe" }, "INVALID_CHANNEL", "channel"],
      ["a channel with a wildcard", { channel: "orders.*" }, "INVALID_CHANNEL", "channel"],
      ["a channel with punctuation", { channel: "x!y" }, "INVALID_CHANNEL", "channel"],
      ["a channel with a space", { channel: "orders created" }, "INVALID_CHANNEL", "channel"],
      ["a missing id", { id: "" }, "INVALID_EVENT", "id"],
      ["a missing source", { source: "" }, "INVALID_EVENT", "source"],
      ["a missing type", { type: "" }, "INVALID_EVENT", "type"],
      ["a NUL in the id", { id: "abc\u0000def" }, "INVALID_EVENT", "id"],
      ["a newline in the id", { id: "abc\ndef" }, "INVALID_EVENT", "id"],
      ["DEL in the id", { id: "abc\u007f" }, "INVALID_EVENT", "id"],
      ["a C1 control character in the id", { id: "abc\u0085" }, "INVALID_EVENT", "id"],
      ["an escape in the source", { source: "//svc/\u001b[31m" }, "INVALID_EVENT", "source"],
      ["a tab in the type", { type: "a\tb" }, "INVALID_EVENT", "type"],
      ["an id of 257 characters", { id: "i".repeat(257) }, "INVALID_EVENT", "id"],
      ["a source of 1025 characters", { source: "s".repeat(1025) }, "INVALID_EVENT", "source"],
      ["a type of 257 characters", { type: "t".repeat(257) }, "INVALID_EVENT", "type"],
      ["a subject of 1025 characters", { subject: "s".repeat(1025) }, "INVALID_EVENT", "subject"],
      ["a datacontenttype of 257 characters", { datacontenttype: "x".repeat(257) }, "INVALID_EVENT", "datacontenttype"],
      ["a key of 257 characters", { key: "k".repeat(257) }, "INVALID_EVENT", "key"],
      ["an uppercase attribute name", { attributes: { Trace: "x" } }, "INVALID_EVENT", "attributes[Trace]"],
      ["an empty attribute name", { attributes: { "": "x" } }, "INVALID_EVENT", "attributes[]"],
      ["an attribute name starting with '-'", { attributes: { "-x": "x" } }, "INVALID_EVENT", "attributes[-x]"],
      ["an attribute name with a space", { attributes: { "a b": "x" } }, "INVALID_EVENT", "attributes[a b]"],
      ["an attribute name of 129 characters", { attributes: { ["a".repeat(129)]: "x" } }, "INVALID_EVENT", `attributes[${"a".repeat(129)}]`],
      [
        "a reserved weft. attribute",
        { attributes: { "weft.dead_letter.reason": "forged" } },
        "INVALID_EVENT",
        "attributes[weft.dead_letter.reason]",
      ],
      [
        "65 attributes",
        { attributes: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`a${i}`, "v"])) },
        "INVALID_EVENT",
        "attributes",
      ],
      ["a time with negative nanos", { time: { seconds: 1n, nanos: -1 } }, "INVALID_EVENT", "time"],
      ["a time with nanos over a second", { time: { seconds: 1n, nanos: 1_000_000_000 } }, "INVALID_EVENT", "time"],
    ];

    it.each(BAD_EVENTS)("%s: a per-event INVALID_ARGUMENT, the rest of the batch is stored", async (_, spoil, reason, field) => {
      const channel = fresh("pub");
      const before = event(channel);
      const bad = event(channel, spoil);
      const after = event(channel);
      const pub = raw.publish();
      const response = await pub.publish(3, [before, bad, after]);
      expect(response.batchId).toBe(3n);
      expect(response.results).toHaveLength(3);
      expect(expectStored(response.results[0])).toBe(1n);
      expectRefused(response.results[1], status.INVALID_ARGUMENT, reason, field);
      expect(expectStored(response.results[2])).toBe(2n);

      // The stream goes on.
      const next = event(channel);
      expect(expectStored((await pub.publish(4, [next])).results[0])).toBe(3n);
      pub.end();
      expect((await pub.finished()).code).toBe(status.OK);

      expect((await stored(channel)).events.map((e) => e.id)).toEqual([before.id, after.id, next.id]);
      if (bad.channel !== channel) expect(t.sidecar.log.channels()).not.toContain(bad.channel);
    });

    it("a batch mixing every kind of bad event is answered in order, and only its good events are stored", async () => {
      const channel = fresh("pub");
      const good = () => event(channel);
      const batch: Event[] = [good()];
      for (const [, spoil] of BAD_EVENTS) batch.push(event(channel, spoil), good());
      const response = await publishOnce(batch, 11);
      expect(response.batchId).toBe(11n);
      expect(response.results).toHaveLength(batch.length);
      const goodIds: string[] = [];
      batch.forEach((e, i) => {
        if (i % 2 === 0) {
          expectStored(response.results[i]);
          goodIds.push(e.id);
        } else {
          const [, , reason, field] = BAD_EVENTS[(i - 1) / 2]!;
          expectRefused(response.results[i], status.INVALID_ARGUMENT, reason, field);
        }
      });
      expect((await stored(channel)).events.map((e) => e.id)).toEqual(goodIds);
    });

    it("an event over the max event size gets a per-event RESOURCE_EXHAUSTED EVENT_TOO_LARGE; one at the limit is stored", async () => {
      const channel = fresh("pub");
      const sized = (bytes: number): Event => {
        const e = event(channel, { data: new Uint8Array(0) });
        e.data = new Uint8Array(bytes - toBinary(EventSchema, e).length - 3); // 3: tag and a 2-byte length
        expect(toBinary(EventSchema, e).length).toBe(bytes);
        return e;
      };
      const atLimit = sized(MAX_EVENT_BYTES);
      const over = sized(MAX_EVENT_BYTES + 1);
      const huge = event(channel, { data: new Uint8Array(200_000) });
      const response = await publishOnce([atLimit, over, huge]);
      expectStored(response.results[0]);
      expectRefused(response.results[1], status.RESOURCE_EXHAUSTED, "EVENT_TOO_LARGE", "event");
      expectRefused(response.results[2], status.RESOURCE_EXHAUSTED, "EVENT_TOO_LARGE", "event");
      expect((await stored(channel)).events.map((e) => e.id)).toEqual([atLimit.id]);
    });

    it("a batch over the max events ends the stream with RESOURCE_EXHAUSTED BATCH_TOO_LARGE, and nothing of it is stored", async () => {
      const channel = fresh("pub");
      const pub = raw.publish();
      const full = Array.from({ length: MAX_BATCH_EVENTS }, () => event(channel));
      const response = await pub.publish(1, full);
      expect(response.results.filter((r) => r.error === undefined)).toHaveLength(MAX_BATCH_EVENTS);

      const tooMany = Array.from({ length: MAX_BATCH_EVENTS + 1 }, () => event(channel));
      pub.send(2, tooMany);
      await expectEnded(pub, status.RESOURCE_EXHAUSTED, "BATCH_TOO_LARGE", "events");
      const ids = (await stored(channel)).events.map((e) => e.id);
      expect(ids).toEqual(full.map((e) => e.id));
    });

    it("an empty batch gets an empty response, and the stream goes on", async () => {
      const channel = fresh("pub");
      const pub = raw.publish();
      const empty = await pub.publish(42, []);
      expect(empty.batchId).toBe(42n);
      expect(empty.results).toEqual([]);
      const next = await pub.publish(43, [event(channel)]);
      expect(next.batchId).toBe(43n);
      expect(expectStored(next.results[0])).toBe(1n);
      pub.end();
      expect((await pub.finished()).code).toBe(status.OK);
    });

    it("a client that cancels mid-stream leaves each batch stored whole or not at all, and a retry stores each event once", async () => {
      const channel = fresh("cancel");
      const BATCHES = 20;
      const PER_BATCH = 50;
      const batches = Array.from({ length: BATCHES }, (_, b) =>
        Array.from({ length: PER_BATCH }, (_, i) => event(channel, { id: `b${b}-e${i}` })),
      );
      const batchOf = (id: string) => id.split("-")[0]!;

      // Round one: cancel in the same tick as the writes. Round two: after the first answer.
      const cancelled = raw.publish();
      batches.slice(0, BATCHES / 2).forEach((batch, b) => cancelled.send(b + 1, batch));
      cancelled.cancel();
      expect((await cancelled.finished()).code).toBe(status.CANCELLED);

      const second = raw.publish();
      batches.slice(BATCHES / 2).forEach((batch, b) => second.send(BATCHES / 2 + b + 1, batch));
      await second.response();
      second.cancel();
      expect((await second.finished()).code).toBe(status.CANCELLED);

      // Batches the sidecar had already read may still be landing: any moment must be whole.
      const wholeOrNothing = async () => {
        const { events } = await stored(channel);
        const perBatch = new Map<string, number>();
        for (const e of events) perBatch.set(batchOf(e.id), (perBatch.get(batchOf(e.id)) ?? 0) + 1);
        for (const [batch, count] of perBatch) expect(count, `events of ${batch} stored`).toBe(PER_BATCH);
        expect(new Set(events.map((e) => e.id)).size).toBe(events.length);
        expect(events.map((e) => e.sequence)).toEqual(Array.from({ length: events.length }, (_, i) => i + 1));
        return perBatch;
      };
      await wholeOrNothing();

      // The publisher retries everything on a new stream: dedup answers what was stored.
      const retry = raw.publish();
      batches.forEach((batch, b) => retry.send(b + 1, batch));
      for (let b = 0; b < BATCHES; b++) {
        const response = await retry.response();
        const duplicates = response.results.filter((r) => r.duplicate).length;
        expect(response.results.every((r) => r.error === undefined && r.sequence > 0n)).toBe(true);
        expect([0, PER_BATCH], `duplicates in batch ${response.batchId}`).toContain(duplicates);
      }
      retry.end();
      expect((await retry.finished()).code).toBe(status.OK);

      const perBatch = await wholeOrNothing();
      expect(perBatch.size).toBe(BATCHES);
      expect(t.sidecar.log.head(channel).last).toBe(BATCHES * PER_BATCH);
    });

    // protobuf-es decodes a string field sent with wire type VARINT without complaint, but
    // Go, C++ and Python parsers refuse such bytes; the log keeps bytes as received, so the
    // sidecar checks wire types (readEvent in src/wire/messages.ts) before storing.
    it("an event with a field sent in the wrong wire type is refused, not stored", async () => {
      const channel = fresh("wiretype");
      const valid = toBinary(EventSchema, event("", { channel: "" }));
      const name = Buffer.from(channel, "utf8");
      // Tag 0x48 is field 9 with wire type 0 (VARINT); a string must use wire type 2 (0x4a).
      const spoiled = Buffer.concat([valid, Uint8Array.from([0x48, name.length]), name]);
      const pub = raw.publish();
      pub.send(1, [spoiled]);
      let refusal: { code: number; reason: string } | undefined;
      try {
        refusal = (await pub.response()).results[0]?.error; // refused on its own
      } catch {
        refusal = await pub.finished(); // or the stream was ended for it
      }
      pub.end();
      await pub.finished();
      expect(t.sidecar.log.head(channel).last, "events stored from bytes that are not valid protobuf").toBe(0);
      expect(refusal?.code).toBe(status.INVALID_ARGUMENT);
    });

    // google.protobuf.Timestamp is only defined from 0001-01-01T00:00:00Z to
    // 9999-12-31T23:59:59Z; consumers that map events to JSON would throw on anything else.
    it.each<[string, bigint]>([
      ["after 9999-12-31", 253_402_300_800n],
      ["before 0001-01-01", -62_135_596_801n],
    ])("an event time %s is a per-event INVALID_ARGUMENT", async (_, seconds) => {
      const channel = fresh("time");
      const bad = event(channel, { time: { seconds, nanos: 0 } });
      const response = await publishOnce([event(channel), bad, event(channel)]);
      expectRefused(response.results[1], status.INVALID_ARGUMENT, "INVALID_EVENT", "time");
    });
  });

  describe("Subscribe", () => {
    it.each(GARBAGE)("a first message of %s ends the stream with INVALID_ARGUMENT MALFORMED_MESSAGE", async (_, bytes) => {
      const sub = raw.subscribe();
      sub.write(bytes);
      await expectEnded(sub, status.INVALID_ARGUMENT, "MALFORMED_MESSAGE", "SubscribeRequest");
    });

    it.each<[string, SubscribeRequestInit]>([
      ["ack", { case: "ack", value: { deliveryIds: [1n] } }],
      ["nack", { case: "nack", value: { deliveryIds: [1n] } }],
      ["extend", { case: "extend", value: { deliveryIds: [1n], extensionMs: 1000 } }],
      ["credit", { case: "credit", value: { credits: 10 } }],
    ])("%s before open ends the stream with FAILED_PRECONDITION NOT_OPEN", async (what, request) => {
      const sub = raw.subscribe();
      sub.request(request);
      await expectEnded(sub, status.FAILED_PRECONDITION, "NOT_OPEN", what);
    });

    it("an empty request (no oneof case) ends the stream with INVALID_ARGUMENT", async () => {
      const sub = raw.subscribe();
      sub.write(new Uint8Array(0));
      await expectEnded(sub, status.INVALID_ARGUMENT, "MALFORMED_MESSAGE", "request");
    });

    it("an empty request after open ends the stream with INVALID_ARGUMENT and the member leaves", async () => {
      const channel = fresh("sub");
      const sub = await subscribe({ channel, group: "g", start: LATEST });
      expect(groupOf(channel, "g")?.members).toBe(1);
      sub.write(new Uint8Array(0));
      await expectEnded(sub, status.INVALID_ARGUMENT, "MALFORMED_MESSAGE", "request");
      expect(groupOf(channel, "g")?.members).toBe(0);
    });

    it("a second open on the same stream ends it with FAILED_PRECONDITION ALREADY_OPEN", async () => {
      const channel = fresh("sub");
      const sub = await subscribe({ channel, group: "g", start: LATEST });
      sub.open({ channel: fresh("other"), group: "g", start: LATEST });
      await expectEnded(sub, status.FAILED_PRECONDITION, "ALREADY_OPEN", "open");
      expect(groupOf(channel, "g")?.members).toBe(0);
    });

    it("a second open sent right behind the first (before the confirmation) is ALREADY_OPEN too", async () => {
      const channel = fresh("sub");
      const sub = raw.subscribe();
      sub.open({ channel, group: "g", start: LATEST });
      sub.open({ channel, group: "g", start: LATEST });
      await expectEnded(sub, status.FAILED_PRECONDITION, "ALREADY_OPEN", "open");
      await eventually(() => (groupOf(channel, "g")?.members ?? 0) === 0, "the member to leave");
    });

    const BAD_NAMES = ["", "Orders", "a..b", ".a", "a.", "a".repeat(201), "größe", "orders.*", "x!y", "1st"];

    it.each(BAD_NAMES)("channel %j is INVALID_ARGUMENT INVALID_CHANNEL, and no group is created", async (name) => {
      const sub = raw.subscribe();
      sub.open({ channel: name, group: "g", start: LATEST });
      await expectEnded(sub, status.INVALID_ARGUMENT, "INVALID_CHANNEL", "open.channel");
      expect(t.sidecar.engine.status().some((g) => g.channel === name)).toBe(false);
    });

    it.each(BAD_NAMES)("group %j is INVALID_ARGUMENT INVALID_GROUP, and no group is created", async (name) => {
      const channel = fresh("sub");
      const sub = raw.subscribe();
      sub.open({ channel, group: name, start: LATEST });
      await expectEnded(sub, status.INVALID_ARGUMENT, "INVALID_GROUP", "open.group");
      expect(t.sidecar.engine.status().some((g) => g.channel === channel)).toBe(false);
    });

    it.each<[string, SubscribeOpenInit["start"], string]>([
      ["a missing start", undefined, "open.start"],
      ["KIND_UNSPECIFIED", { kind: StartPosition_Kind.UNSPECIFIED }, "open.start.kind"],
      ["an unknown kind (99)", { kind: 99 as StartPosition_Kind }, "open.start.kind"],
      ["KIND_SEQUENCE with sequence 0", { kind: StartPosition_Kind.SEQUENCE, sequence: 0n }, "open.start.sequence"],
      ["KIND_TIME without a time", { kind: StartPosition_Kind.TIME }, "open.start.time"],
    ])("%s is INVALID_ARGUMENT INVALID_START", async (_, start, field) => {
      const channel = fresh("sub");
      const sub = raw.subscribe();
      sub.open({ channel, group: "g", ...(start ? { start } : {}) });
      await expectEnded(sub, status.INVALID_ARGUMENT, "INVALID_START", field);
      expect(groupOf(channel, "g")).toBeUndefined();
    });

    it.each<[string, Partial<Pick<SubscribeOpen, "maxInFlight" | "ackDeadlineMs" | "maxAttempts" | "deadLetterChannel">>, status, string, string]>([
      ["max_in_flight 10001", { maxInFlight: 10_001 }, status.RESOURCE_EXHAUSTED, "TOO_MANY_CREDITS", "open.max_in_flight"],
      ["ack_deadline_ms 50", { ackDeadlineMs: 50 }, status.INVALID_ARGUMENT, "INVALID_SETTING", "open.ack_deadline_ms"],
      ["ack_deadline_ms 99", { ackDeadlineMs: 99 }, status.INVALID_ARGUMENT, "INVALID_SETTING", "open.ack_deadline_ms"],
      ["ack_deadline_ms 4000000", { ackDeadlineMs: 4_000_000 }, status.INVALID_ARGUMENT, "INVALID_SETTING", "open.ack_deadline_ms"],
      ["max_attempts 1001", { maxAttempts: 1001 }, status.INVALID_ARGUMENT, "INVALID_SETTING", "open.max_attempts"],
      ["a dead-letter channel equal to the channel", { deadLetterChannel: "$channel" }, status.INVALID_ARGUMENT, "INVALID_SETTING", "open.dead_letter_channel"],
      ["an invalid dead-letter channel", { deadLetterChannel: "Dead.Letters" }, status.INVALID_ARGUMENT, "INVALID_CHANNEL", "open.dead_letter_channel"],
      ["a dead-letter channel with a wildcard", { deadLetterChannel: "dlq.*" }, status.INVALID_ARGUMENT, "INVALID_CHANNEL", "open.dead_letter_channel"],
    ])("%s ends the stream with the right status, and no group is created", async (_, settings, code, reason, field) => {
      const channel = fresh("sub");
      const sub = raw.subscribe();
      sub.open({
        channel,
        group: "g",
        start: LATEST,
        ...settings,
        ...(settings.deadLetterChannel === "$channel" ? { deadLetterChannel: channel } : {}),
      });
      await expectEnded(sub, code, reason, field);
      expect(groupOf(channel, "g")).toBeUndefined();
    });

    it("the limits themselves are accepted (max_in_flight 10000, ack_deadline_ms 100 and 3600000, max_attempts 1000)", async () => {
      for (const settings of [
        { maxInFlight: 10_000, ackDeadlineMs: 100, maxAttempts: 1000 },
        { maxInFlight: 1, ackDeadlineMs: 3_600_000, maxAttempts: 1 },
      ]) {
        const sub = raw.subscribe();
        sub.open({ channel: fresh("sub"), group: "g", start: LATEST, ...settings });
        const s = await sub.subscribed();
        expect({ maxInFlight: s.maxInFlight, ackDeadlineMs: s.ackDeadlineMs, maxAttempts: s.maxAttempts }).toEqual(settings);
        sub.end();
        expect((await sub.finished()).code).toBe(status.OK);
      }
    });

    // The default dead-letter channel "<channel>.dlq.<group>" would pass the 200-character
    // limit here; the sidecar then uses a shorter stable name and says which in Subscribed.
    it("a valid channel and group with the default dead-letter channel are accepted", async () => {
      const channel = `long.${"c".repeat(190)}`;
      const sub = raw.subscribe();
      sub.open({ channel, group: "billing", start: LATEST });
      const confirmed = await sub.subscribed(); // today: rejects, the stream ended with INVALID_CHANNEL
      expect(confirmed.channel).toBe(channel);
      expect(confirmed.deadLetterChannel).not.toBe("");
      sub.end();
      expect((await sub.finished()).code).toBe(status.OK);
    });

    /** A group with one member that holds delivery 1 of one event, and a second member. */
    async function groupWithOneDelivery() {
      const channel = fresh("sub");
      const group = "workers";
      const first = await subscribe({ channel, group, start: LATEST, maxInFlight: 10 });
      const e = event(channel);
      expectStored((await publishOnce([e])).results[0]);
      const [d] = await first.take(1);
      expect({ id: d?.event?.id, deliveryId: d?.deliveryId, attempt: d?.attempt }).toEqual({ id: e.id, deliveryId: 1n, attempt: 1 });
      const second = await subscribe({ channel, group, start: LATEST, maxInFlight: 10 });
      return { channel, group, first, second, e };
    }

    /** The survivor gets the event again with attempt 2, acks it, and keeps getting new events. */
    async function expectRedeliveredTo(survivor: RawSubscribe, channel: string, e: Event) {
      const [again] = await survivor.take(1);
      expect({ id: again?.event?.id, attempt: again?.attempt, sequence: again?.sequence }).toEqual({ id: e.id, attempt: 2, sequence: 1n });
      survivor.ack(again!.deliveryId);
      const later = event(channel);
      expectStored((await publishOnce([later])).results[0]);
      const [next] = await survivor.take(1);
      expect({ id: next?.event?.id, attempt: next?.attempt }).toEqual({ id: later.id, attempt: 1 });
      survivor.ack(next!.deliveryId);
      survivor.end();
      expect((await survivor.finished()).code).toBe(status.OK);
    }

    it.each<[string, bigint[]]>([
      ["999 (never issued)", [999n]],
      ["0", [0n]],
      ["2^64-1", [2n ** 64n - 1n]],
      ["1 together with 2 (one valid, one not)", [1n, 2n]],
    ])("an ack of delivery id %s is INVALID_ARGUMENT UNKNOWN_DELIVERY; the event goes to another member", async (_, ids) => {
      const { channel, first, second, e } = await groupWithOneDelivery();
      first.ack(...ids);
      await expectEnded(first, status.INVALID_ARGUMENT, "UNKNOWN_DELIVERY", "delivery_ids");
      await expectRedeliveredTo(second, channel, e);
    });

    it("a nack of an unknown delivery id is INVALID_ARGUMENT UNKNOWN_DELIVERY", async () => {
      const { channel, first, second, e } = await groupWithOneDelivery();
      first.nack([5n]);
      await expectEnded(first, status.INVALID_ARGUMENT, "UNKNOWN_DELIVERY", "delivery_ids");
      await expectRedeliveredTo(second, channel, e);
    });

    it("acking the same delivery twice is fine: no error, no redelivery, the stream goes on", async () => {
      const channel = fresh("sub");
      const sub = await subscribe({ channel, group: "g", start: LATEST });
      const a = event(channel);
      expectStored((await publishOnce([a])).results[0]);
      const [d] = await sub.take(1);
      sub.ack(d!.deliveryId);
      sub.ack(d!.deliveryId);
      sub.ack(d!.deliveryId, d!.deliveryId);
      const b = event(channel);
      expectStored((await publishOnce([b])).results[0]);
      const [next] = await sub.take(1);
      expect({ id: next?.event?.id, attempt: next?.attempt, deliveryId: next?.deliveryId }).toEqual({ id: b.id, attempt: 1, deliveryId: 2n });
      sub.ack(next!.deliveryId);
      sub.ack(d!.deliveryId);
      sub.end();
      expect((await sub.finished()).code).toBe(status.OK);
      expect(groupOf(channel, "g")?.ackedThrough).toBe(2);
    });

    it("credit that would raise the window over 10000 is RESOURCE_EXHAUSTED TOO_MANY_CREDITS", async () => {
      const sub = await subscribe({ channel: fresh("sub"), group: "g", start: LATEST, maxInFlight: 9_000 });
      sub.credit(1_000); // exactly 10000: fine
      sub.credit(1);
      await expectEnded(sub, status.RESOURCE_EXHAUSTED, "TOO_MANY_CREDITS", "credit.credits");
    });

    it("credit of 0 is INVALID_ARGUMENT INVALID_SETTING", async () => {
      const sub = await subscribe({ channel: fresh("sub"), group: "g", start: LATEST });
      sub.credit(0);
      await expectEnded(sub, status.INVALID_ARGUMENT, "INVALID_SETTING", "credit.credits");
    });

    it("a nack delay over 3600000 ms is INVALID_ARGUMENT, and the nacked event is redelivered", async () => {
      const { channel, first, second, e } = await groupWithOneDelivery();
      first.nack([1n], 3_600_001);
      await expectEnded(first, status.INVALID_ARGUMENT, "INVALID_SETTING", "nack.delay_ms");
      await expectRedeliveredTo(second, channel, e);
    });

    it.each([0, 3_600_001])("an extend of %i ms is INVALID_ARGUMENT INVALID_SETTING", async (ms) => {
      const sub = await subscribe({ channel: fresh("sub"), group: "g", start: LATEST });
      sub.request({ case: "extend", value: { deliveryIds: [], extensionMs: ms } });
      await expectEnded(sub, status.INVALID_ARGUMENT, "INVALID_SETTING", "extend.extension_ms");
    });

    it("an ack of more than 10000 ids is RESOURCE_EXHAUSTED", async () => {
      const sub = await subscribe({ channel: fresh("sub"), group: "g", start: LATEST });
      sub.request({ case: "ack", value: { deliveryIds: Array.from({ length: 10_001 }, () => 1n) } });
      await expectEnded(sub, status.RESOURCE_EXHAUSTED, "BATCH_TOO_LARGE", "ack.delivery_ids");
    });

    it("a member that disconnects with deliveries unacked: they go to another member with attempt 2", async () => {
      const channel = fresh("sub");
      const group = "workers";
      const leaver = await subscribe({ channel, group, start: LATEST, maxInFlight: 10 });
      const events = [event(channel), event(channel), event(channel)];
      (await publishOnce(events)).results.forEach((r) => expectStored(r));
      const held = await leaver.take(3);
      expect(held.map((d) => d.attempt)).toEqual([1, 1, 1]);
      const stayer = await subscribe({ channel, group, start: LATEST, maxInFlight: 10 });
      leaver.cancel();
      expect((await leaver.finished()).code).toBe(status.CANCELLED);
      const again = await stayer.take(3);
      expect(again.map((d) => [d.event?.id, d.attempt]).sort()).toEqual(events.map((e) => [e.id, 2]).sort());
      stayer.ack(...again.map((d) => d.deliveryId));
      stayer.end();
      expect((await stayer.finished()).code).toBe(status.OK);
    });
  });

  describe("a hostile flood", () => {
    it("50 streams sending garbage do not stop a good client from publishing 1000 events and receiving them all", async () => {
      const channel = fresh("flood");
      const N = 1000;
      let done = false;
      const hostile = Array.from({ length: 5 }, () => new RawMeshConnection(t.address));
      const expected: Record<number, [status, string]> = {
        0: [status.INVALID_ARGUMENT, "MALFORMED_MESSAGE"], // garbage publish
        1: [status.INVALID_ARGUMENT, "MALFORMED_MESSAGE"], // garbage subscribe
        2: [status.FAILED_PRECONDITION, "NOT_OPEN"], // ack before open
        3: [status.RESOURCE_EXHAUSTED, "BATCH_TOO_LARGE"], // too many events
        4: [status.INVALID_ARGUMENT, "INVALID_CHANNEL"], // bad open
      };
      const tooMany = Array.from({ length: MAX_BATCH_EVENTS + 1 }, () => event(channel));
      const rounds = new Array<number>(50).fill(0);
      const wrong: string[] = [];
      const attack = async (i: number): Promise<void> => {
        const conn = hostile[i % hostile.length]!;
        const kind = i % 5;
        while (!done) {
          let stream: RawStream;
          if (kind === 0) {
            stream = conn.publish();
            stream.write(GARBAGE[i % GARBAGE.length]![1]);
          } else if (kind === 1) {
            stream = conn.subscribe();
            stream.write(GARBAGE[i % GARBAGE.length]![1]);
          } else if (kind === 2) {
            const s = conn.subscribe();
            s.ack(1n, 2n, 3n);
            stream = s;
          } else if (kind === 3) {
            const p = conn.publish();
            p.send(1, tooMany);
            stream = p;
          } else {
            const s = conn.subscribe();
            s.open({ channel: channel.toUpperCase(), group: "evil", start: EARLIEST });
            stream = s;
          }
          const s = await stream.finished();
          const [code, reason] = expected[kind]!;
          if (s.code !== code || s.reason !== reason) wrong.push(`${kind}: ${status[s.code]} ${s.reason} ${s.details}`);
          rounds[i]!++;
        }
      };
      const attackers = Array.from({ length: 50 }, (_, i) => attack(i));

      const client = connect(t.address, { maxBatch: MAX_BATCH_EVENTS });
      try {
        const sub = client.subscribe({ channel, group: "good", from: "earliest", maxInFlight: 500 });
        await sub.subscribed();
        const published = client.publishMany(Array.from({ length: N }, (_, i) => ({ channel, id: `good-${i}`, data: { i } })));
        const seen = new Set<string>();
        const it = sub[Symbol.asyncIterator]();
        while (seen.size < N) {
          let timer: NodeJS.Timeout | undefined;
          const next = await Promise.race([
            it.next(),
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error(`no delivery within 20 s after ${seen.size}`)), 20_000);
            }),
          ]).finally(() => clearTimeout(timer));
          if (next.done) throw new Error(`the subscription ended after ${seen.size}`);
          seen.add(next.value.event.id);
          next.value.ack();
        }
        const results = await published;
        expect(results.filter((r) => !r.duplicate)).toHaveLength(N);
        expect(seen.size).toBe(N);
        sub.close();
      } finally {
        done = true;
        await Promise.all(attackers);
        client.close();
        for (const c of hostile) c.close();
      }
      expect(wrong).toEqual([]);
      expect(rounds.every((r) => r > 0)).toBe(true);
      expect(t.sidecar.log.head(channel).last).toBe(N);
      expect(t.sidecar.log.channels()).not.toContain(channel.toUpperCase());
    });
  });
});

describe("a request over the server's max message size", () => {
  const MAX_MESSAGE_BYTES = 8 * 1024;
  let small: TestSidecar;
  let conn: RawMeshConnection;

  beforeAll(async () => {
    small = await startSidecar({ maxMessageBytes: MAX_MESSAGE_BYTES });
    conn = new RawMeshConnection(small.address);
  });

  afterAll(async () => {
    conn?.close();
    await small?.dispose();
  });

  /** A round trip on a fresh stream of the small sidecar. */
  async function roundTrip(channel: string): Promise<void> {
    const pub = conn.publish();
    const e = event(channel);
    const response = await pub.publish(1, [e]);
    expectStored(response.results[0]);
    pub.end();
    const sub = conn.subscribe();
    sub.open({ channel, group: "checker", start: EARLIEST });
    const [d] = await sub.take(1);
    expect(d?.event?.id).toBe(e.id);
    sub.ack(d!.deliveryId);
    sub.end();
    expect((await sub.finished()).code).toBe(status.OK);
    expect((await pub.finished()).code).toBe(status.OK);
  }

  it("a publish request over the limit ends the stream with RESOURCE_EXHAUSTED, stores nothing, and the sidecar serves on", async () => {
    const channel = fresh("big");
    const pub = conn.publish();
    pub.send(1, [event(channel, { data: new Uint8Array(MAX_MESSAGE_BYTES + 1) })]);
    const s = await pub.finished();
    expect(status[s.code]).toBe("RESOURCE_EXHAUSTED");
    expect(small.sidecar.log.head(channel).last).toBe(0);
    await roundTrip(channel);
    expect(small.sidecar.log.head(channel).last).toBe(1);
  });

  it("a subscribe request over the limit ends the stream with RESOURCE_EXHAUSTED, and the member leaves", async () => {
    const channel = fresh("big");
    const sub = conn.subscribe();
    sub.open({ channel, group: "g", start: LATEST });
    await sub.subscribed();
    sub.ack(...Array.from({ length: 4000 }, () => 1_000_000n));
    const s = await sub.finished();
    expect(status[s.code]).toBe("RESOURCE_EXHAUSTED");
    expect(small.sidecar.engine.status().find((g) => g.channel === channel)?.members).toBe(0);
    await roundTrip(channel);
  });
});
