import { randomUUID } from "node:crypto";
import { type MessageInitShape, create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminClient, type ClientError, type Subscription } from "../src/client/index.js";
import { EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { StartPosition_Kind, type StartPositionSchema } from "../src/gen/weft/v1/mesh_pb.js";
import type { Hello, PeerFrameSchema } from "../src/gen/weft/v1/peer_pb.js";
import { collect, eventually } from "./support/collect.js";
import { restartMesh, roundTrip, startMesh } from "./support/mesh.js";
import { RawMeshConnection, type RawPublish, type SubscribeRequestInit } from "./support/raw-client.js";
import { type RawLink, RawPeer, hello } from "./support/raw-peer.js";
import type { TestSidecar } from "./support/sidecar.js";

/**
 * Every number from outside is range-checked before it is stored, and nothing a sidecar
 * stores can fail to encode later. One table sends the extreme values of every numeric
 * field of every request of weft.v1.Mesh, weft.v1.Admin and weft.v1.Peer to sidecar A of a
 * three-sidecar mesh on loopback, and asserts what each gets: accepted, or refused with its
 * status, reason and field. Then the whole mesh is stopped and started again around what
 * was stored: the links must come up, every group stored must still be there and be known
 * to the other sidecars (they learn it from A's interest snapshot), nothing refused may
 * exist anywhere, and events must still go round.
 */

const U32 = 2 ** 32 - 1;
const U64 = 2n ** 64n - 1n;
const I64_MAX = 2n ** 63n - 1n;
const I64_MIN = -(2n ** 63n);
const I32_MAX = 2 ** 31 - 1;
const I32_MIN = -(2 ** 31);
/** The largest sequence (2^53 - 1) and the first past it. */
const SEQ = 2 ** 53 - 1;
const SEQ_PAST = 2n ** 53n;
/** 9999-12-31T23:59:59Z, the last second a start time may name, and the first past it. */
const LAST_SECOND = 253_402_300_799n;
const LAST_MS = 253_402_300_799_999n;
const OK = "accepted";

let mesh: TestSidecar[];
let a: TestSidecar;
let raw: RawMeshConnection;
let admin: AdminClient;
let publisher: RawPublish;
const peers: RawPeer[] = [];

let counter = 0;
const fresh = (what: string): string => `x.${what}.n${++counter}`;
const freshNode = (): string => `raw-${++counter}`;

/** Groups an accepted request stored at A, and groups a refused one would have created. */
const storedGroups: { channel: string; group: string }[] = [];
const refusedGroups: { channel: string; group: string }[] = [];
/** Ids of the accepted events of EVENTS (extreme times). */
const EVENTS = "x.events";
const acceptedEvents: string[] = [];

const refusal = (code: status, reason: string, field: string): string => `${status[code]} ${reason} ${field}`;
const ended = (s: { code: status; reason: string; field: string }): string => (s.code === status.OK ? OK : refusal(s.code, s.reason, s.field));

// ---- weft.v1.Mesh ----

let batch = 0;
/** Publishes one event of EVENTS with `time` on the shared stream; its per-event result. */
async function publishTime(seconds: bigint, nanos: number): Promise<string> {
  const event = create(EventSchema, { id: randomUUID(), source: "//weft-test/extreme", type: "test.extreme", channel: EVENTS, time: { seconds, nanos } });
  const response = await publisher.publish(++batch, [event]);
  const r = response.results[0]!;
  if (r.error) return refusal(r.error.code, r.error.reason, r.error.field);
  acceptedEvents.push(event.id);
  return OK;
}

/** Publishes one event with `batchId`; accepted when it is stored and the id is echoed. */
async function publishBatch(batchId: bigint): Promise<string> {
  const event = create(EventSchema, { id: randomUUID(), source: "//weft-test/extreme", type: "test.extreme", channel: EVENTS });
  const response = await publisher.publish(batchId, [event]);
  if (response.batchId !== batchId) return `echoed ${response.batchId}`;
  if (response.results[0]?.error) return "refused";
  acceptedEvents.push(event.id);
  return OK;
}

type StartInit = MessageInitShape<typeof StartPositionSchema>;
/** The fields of a SubscribeOpen a row sets ("$channel": the open's own channel). */
interface OpenInit {
  start?: StartInit;
  maxInFlight?: number;
  ackDeadlineMs?: number;
  maxAttempts?: number;
  deadLetterChannel?: string;
}

/** Opens a subscription to a fresh channel with `init`; accepted once it is subscribed. */
async function open(init: OpenInit): Promise<string> {
  const channel = fresh("open");
  const group = "g";
  const sub = raw.subscribe();
  sub.open({ start: { kind: StartPosition_Kind.LATEST }, ...init, channel, group, ...(init.deadLetterChannel === "$channel" ? { deadLetterChannel: channel } : {}) });
  try {
    await sub.subscribed();
  } catch {
    refusedGroups.push({ channel, group });
    return ended(await sub.finished());
  }
  storedGroups.push({ channel, group });
  sub.end();
  return ended(await sub.finished());
}

/**
 * Opens a member (max in flight 1) of a fresh group that has one delivery, sends
 * `request(deliveryId)`, and half-closes: accepted when the stream then ends OK.
 */
async function afterOpen(request: (deliveryId: bigint) => SubscribeRequestInit): Promise<string> {
  const channel = fresh("after");
  const stored = await publisher.publish(++batch, [create(EventSchema, { id: randomUUID(), source: "//weft-test/extreme", type: "test.extreme", channel })]);
  expect(stored.results[0]?.error).toBeUndefined();
  const sub = raw.subscribe();
  sub.open({ channel, group: "g", start: { kind: StartPosition_Kind.EARLIEST }, maxInFlight: 1 });
  await sub.subscribed();
  storedGroups.push({ channel, group: "g" });
  const [d] = await sub.take(1);
  sub.request(request(d!.deliveryId));
  sub.end();
  return ended(await sub.finished());
}

// ---- weft.v1.Admin ----

/** The group with one dead letter (sequence 1 of its dead-letter channel). */
const DLQ = { channel: "x.admin", group: "g" };

async function adminCall(call: () => Promise<unknown>): Promise<string> {
  try {
    await call();
    return OK;
  } catch (e) {
    const c = e as ClientError;
    return refusal(c.code, c.reason, c.field);
  }
}

// ---- weft.v1.Peer ----

function rawPeer(): RawPeer {
  const p = new RawPeer(a.peerAddress);
  peers.push(p);
  return p;
}

const PROBE = 999_999;
/**
 * Frames are handled in order: an empty forward answered with `stored` proves that every
 * frame before it was accepted. Otherwise the link ended, and this says how.
 */
async function probe(link: RawLink): Promise<string> {
  link.forward(PROBE, []);
  try {
    for (;;) if ((await link.until("stored")).forwardId === BigInt(PROBE)) break;
  } catch {
    return ended(await link.finished());
  }
  link.cancel();
  return OK;
}

/** A hello with `init`: accepted when A answers with hello and its snapshot and takes frames. */
async function greet(init: Partial<Omit<Hello, "$typeName">>): Promise<string> {
  const link = rawPeer().link();
  link.sendHello(hello(freshNode(), init));
  try {
    await link.expect("hello");
    await link.expect("interest");
  } catch {
    return ended(await link.finished());
  }
  link.sendInterest(true);
  return probe(link);
}

type FrameInit = MessageInitShape<typeof PeerFrameSchema>["frame"];

/** A linked raw peer (fresh node id) sends `frame` after its snapshot. */
async function peerFrame(frame: FrameInit | ((link: RawLink) => Promise<void> | void)): Promise<string> {
  const { link } = await rawPeer().linkUp(hello(freshNode()));
  if (typeof frame === "function") await frame(link);
  else link.send(frame);
  return probe(link);
}

/** The fields of a GroupInterest a row sets. */
interface GroupInit {
  start?: StartInit;
  maxAttempts?: number;
  deadLetterChannel?: string;
  createdUnixMs?: bigint;
}

/**
 * A peer tells A of a fresh group (without members there): accepted when A then has the
 * group stored.
 */
async function peerGroup(init: GroupInit): Promise<string> {
  const channel = fresh("peer");
  const group = "g";
  const got = await peerFrame({ case: "interest", value: { snapshot: false, groups: [{ start: { kind: StartPosition_Kind.EARLIEST }, createdUnixMs: BigInt(Date.now()), ...init, channel, group, members: false }] } });
  if (got === OK) {
    await eventually(() => has(a, channel, group), 10_000, `${channel}/${group} stored at a`);
    storedGroups.push({ channel, group });
  } else {
    refusedGroups.push({ channel, group });
  }
  return got;
}

/** The group A advertises with a member, which raw peers forward to. */
const FORWARDED = { channel: "x.forwarded", group: "g" };
let forwardMember: Subscription;

/**
 * A peer forwards one event of FORWARDED with `sequence`, `attempt` and `forwardId` (A's
 * snapshot, which linkUp read, listed the group with members).
 */
async function forward(sequence: bigint, attempt: number, forwardId = 1n): Promise<string> {
  return peerFrame(async (link) => {
    const event = create(EventSchema, { id: randomUUID(), source: "//weft-test/extreme", type: "test.extreme", channel: FORWARDED.channel });
    link.send({ case: "forward", value: { forwardId, events: [{ ...FORWARDED, sequence, attempt, event }] } });
    if (sequence >= 1n && sequence <= BigInt(SEQ) && attempt >= 1) {
      const s = await link.until("stored");
      expect(s.forwardId).toBe(forwardId);
    }
  });
}

const has = (s: TestSidecar, channel: string, group: string): boolean => s.sidecar.engine.status().some((g) => g.channel === channel && g.group === group);

// ---- the table ----

type Row = [request: string, field: string, value: string, send: () => Promise<string>, expected: string];

const INVALID = status.INVALID_ARGUMENT;
const start = (s: StartInit) => ({ start: s });
const time = (seconds: bigint, nanos = 0) => start({ kind: StartPosition_Kind.TIME, time: { seconds, nanos } });
const sequence = (n: bigint) => start({ kind: StartPosition_Kind.SEQUENCE, sequence: n });

const ROWS: Row[] = [
  // weft.v1.Mesh/Publish
  ["PublishRequest", "batch_id", "0", () => publishBatch(0n), OK],
  ["PublishRequest", "batch_id", "1", () => publishBatch(1n), OK],
  ["PublishRequest", "batch_id", "2^32-1", () => publishBatch(BigInt(U32)), OK],
  ["PublishRequest", "batch_id", "2^63-1", () => publishBatch(I64_MAX), OK],
  ["PublishRequest", "batch_id", "2^64-1", () => publishBatch(U64), OK],
  ["Event", "time.seconds", "-2^63", () => publishTime(I64_MIN, 0), refusal(INVALID, "INVALID_EVENT", "time")],
  ["Event", "time.seconds", "0001-01-01 - 1 s", () => publishTime(-62_135_596_801n, 0), refusal(INVALID, "INVALID_EVENT", "time")],
  ["Event", "time.seconds", "0001-01-01", () => publishTime(-62_135_596_800n, 0), OK],
  ["Event", "time.seconds", "-1", () => publishTime(-1n, 0), OK],
  ["Event", "time.seconds", "0", () => publishTime(0n, 0), OK],
  ["Event", "time.seconds", "2^32-1", () => publishTime(BigInt(U32), 0), OK],
  ["Event", "time.seconds", "9999-12-31T23:59:59", () => publishTime(LAST_SECOND, 999_999_999), OK],
  ["Event", "time.seconds", "10000-01-01", () => publishTime(LAST_SECOND + 1n, 0), refusal(INVALID, "INVALID_EVENT", "time")],
  ["Event", "time.seconds", "2^63-1", () => publishTime(I64_MAX, 0), refusal(INVALID, "INVALID_EVENT", "time")],
  ["Event", "time.nanos", "-2^31", () => publishTime(0n, I32_MIN), refusal(INVALID, "INVALID_EVENT", "time")],
  ["Event", "time.nanos", "-1", () => publishTime(0n, -1), refusal(INVALID, "INVALID_EVENT", "time")],
  ["Event", "time.nanos", "999999999", () => publishTime(0n, 999_999_999), OK],
  ["Event", "time.nanos", "10^9", () => publishTime(0n, 1_000_000_000), refusal(INVALID, "INVALID_EVENT", "time")],
  ["Event", "time.nanos", "2^31-1", () => publishTime(0n, I32_MAX), refusal(INVALID, "INVALID_EVENT", "time")],

  // weft.v1.Mesh/Subscribe: open
  ["SubscribeOpen", "start.kind", "-1", () => open(start({ kind: -1 as StartPosition_Kind })), refusal(INVALID, "INVALID_START", "open.start.kind")],
  ["SubscribeOpen", "start.kind", "0", () => open(start({ kind: StartPosition_Kind.UNSPECIFIED })), refusal(INVALID, "INVALID_START", "open.start.kind")],
  ["SubscribeOpen", "start.kind", "1", () => open(start({ kind: StartPosition_Kind.LATEST })), OK],
  ["SubscribeOpen", "start.kind", "4", () => open(time(0n)), OK],
  ["SubscribeOpen", "start.kind", "5", () => open(start({ kind: 5 as StartPosition_Kind })), refusal(INVALID, "INVALID_START", "open.start.kind")],
  ["SubscribeOpen", "start.kind", "2^31-1", () => open(start({ kind: I32_MAX as StartPosition_Kind })), refusal(INVALID, "INVALID_START", "open.start.kind")],
  ["SubscribeOpen", "start.sequence", "0", () => open(sequence(0n)), refusal(INVALID, "INVALID_START", "open.start.sequence")],
  ["SubscribeOpen", "start.sequence", "1", () => open(sequence(1n)), OK],
  ["SubscribeOpen", "start.sequence", "2^32-1", () => open(sequence(BigInt(U32))), OK],
  ["SubscribeOpen", "start.sequence", "2^53-1", () => open(sequence(BigInt(SEQ))), OK],
  ["SubscribeOpen", "start.sequence", "2^53", () => open(sequence(SEQ_PAST)), refusal(INVALID, "INVALID_START", "open.start.sequence")],
  ["SubscribeOpen", "start.sequence", "2^63-1", () => open(sequence(I64_MAX)), refusal(INVALID, "INVALID_START", "open.start.sequence")],
  ["SubscribeOpen", "start.sequence", "2^64-1", () => open(sequence(U64)), refusal(INVALID, "INVALID_START", "open.start.sequence")],
  ["SubscribeOpen", "start.time.seconds", "-2^63", () => open(time(I64_MIN)), refusal(INVALID, "INVALID_START", "open.start.time")],
  ["SubscribeOpen", "start.time.seconds", "-1", () => open(time(-1n)), refusal(INVALID, "INVALID_START", "open.start.time")],
  ["SubscribeOpen", "start.time.seconds", "0", () => open(time(0n)), OK],
  ["SubscribeOpen", "start.time.seconds", "1", () => open(time(1n)), OK],
  ["SubscribeOpen", "start.time.seconds", "2^32-1", () => open(time(BigInt(U32))), OK],
  ["SubscribeOpen", "start.time.seconds", "253402300799", () => open(time(LAST_SECOND, 999_999_999)), OK],
  ["SubscribeOpen", "start.time.seconds", "253402300800", () => open(time(LAST_SECOND + 1n)), refusal(INVALID, "INVALID_START", "open.start.time")],
  ["SubscribeOpen", "start.time.seconds", "2^63-1", () => open(time(I64_MAX)), refusal(INVALID, "INVALID_START", "open.start.time")],
  ["SubscribeOpen", "start.time.nanos", "-2^31", () => open(time(0n, I32_MIN)), refusal(INVALID, "INVALID_START", "open.start.time")],
  ["SubscribeOpen", "start.time.nanos", "-1", () => open(time(0n, -1)), refusal(INVALID, "INVALID_START", "open.start.time")],
  ["SubscribeOpen", "start.time.nanos", "999999999", () => open(time(0n, 999_999_999)), OK],
  ["SubscribeOpen", "start.time.nanos", "10^9", () => open(time(0n, 1_000_000_000)), refusal(INVALID, "INVALID_START", "open.start.time")],
  ["SubscribeOpen", "start.time.nanos", "2^31-1", () => open(time(0n, I32_MAX)), refusal(INVALID, "INVALID_START", "open.start.time")],
  ["SubscribeOpen", "max_in_flight", "0", () => open({ maxInFlight: 0 }), OK],
  ["SubscribeOpen", "max_in_flight", "1", () => open({ maxInFlight: 1 }), OK],
  ["SubscribeOpen", "max_in_flight", "10000", () => open({ maxInFlight: 10_000 }), OK],
  ["SubscribeOpen", "max_in_flight", "10001", () => open({ maxInFlight: 10_001 }), refusal(status.RESOURCE_EXHAUSTED, "TOO_MANY_CREDITS", "open.max_in_flight")],
  ["SubscribeOpen", "max_in_flight", "2^32-1", () => open({ maxInFlight: U32 }), refusal(status.RESOURCE_EXHAUSTED, "TOO_MANY_CREDITS", "open.max_in_flight")],
  ["SubscribeOpen", "ack_deadline_ms", "0", () => open({ ackDeadlineMs: 0 }), OK],
  ["SubscribeOpen", "ack_deadline_ms", "1", () => open({ ackDeadlineMs: 1 }), refusal(INVALID, "INVALID_SETTING", "open.ack_deadline_ms")],
  ["SubscribeOpen", "ack_deadline_ms", "99", () => open({ ackDeadlineMs: 99 }), refusal(INVALID, "INVALID_SETTING", "open.ack_deadline_ms")],
  ["SubscribeOpen", "ack_deadline_ms", "100", () => open({ ackDeadlineMs: 100 }), OK],
  ["SubscribeOpen", "ack_deadline_ms", "3600000", () => open({ ackDeadlineMs: 3_600_000 }), OK],
  ["SubscribeOpen", "ack_deadline_ms", "3600001", () => open({ ackDeadlineMs: 3_600_001 }), refusal(INVALID, "INVALID_SETTING", "open.ack_deadline_ms")],
  ["SubscribeOpen", "ack_deadline_ms", "2^32-1", () => open({ ackDeadlineMs: U32 }), refusal(INVALID, "INVALID_SETTING", "open.ack_deadline_ms")],
  ["SubscribeOpen", "max_attempts", "0", () => open({ maxAttempts: 0 }), OK],
  ["SubscribeOpen", "max_attempts", "1", () => open({ maxAttempts: 1 }), OK],
  ["SubscribeOpen", "max_attempts", "1000", () => open({ maxAttempts: 1000 }), OK],
  ["SubscribeOpen", "max_attempts", "1001", () => open({ maxAttempts: 1001 }), refusal(INVALID, "INVALID_SETTING", "open.max_attempts")],
  ["SubscribeOpen", "max_attempts", "2^32-1", () => open({ maxAttempts: U32 }), refusal(INVALID, "INVALID_SETTING", "open.max_attempts")],
  ["SubscribeOpen", "dead_letter_channel", "1 character", () => open({ deadLetterChannel: "d" }), OK],
  ["SubscribeOpen", "dead_letter_channel", "200 characters", () => open({ deadLetterChannel: `d${"x".repeat(199)}` }), OK],
  ["SubscribeOpen", "dead_letter_channel", "201 characters", () => open({ deadLetterChannel: `d${"x".repeat(200)}` }), refusal(INVALID, "INVALID_CHANNEL", "open.dead_letter_channel")],
  ["SubscribeOpen", "dead_letter_channel", "the channel", () => open({ deadLetterChannel: "$channel" }), refusal(INVALID, "INVALID_SETTING", "open.dead_letter_channel")],

  // weft.v1.Mesh/Subscribe: after open
  ["Ack", "delivery_ids", "the delivery's", () => afterOpen((id) => ({ case: "ack", value: { deliveryIds: [id] } })), OK],
  ["Ack", "delivery_ids", "0", () => afterOpen(() => ({ case: "ack", value: { deliveryIds: [0n] } })), refusal(INVALID, "UNKNOWN_DELIVERY", "delivery_ids")],
  ["Ack", "delivery_ids", "2^53", () => afterOpen(() => ({ case: "ack", value: { deliveryIds: [SEQ_PAST] } })), refusal(INVALID, "UNKNOWN_DELIVERY", "delivery_ids")],
  ["Ack", "delivery_ids", "2^64-1", () => afterOpen(() => ({ case: "ack", value: { deliveryIds: [U64] } })), refusal(INVALID, "UNKNOWN_DELIVERY", "delivery_ids")],
  ["Nack", "delay_ms", "0", () => afterOpen((id) => ({ case: "nack", value: { deliveryIds: [id], delayMs: 0 } })), OK],
  ["Nack", "delay_ms", "3600000", () => afterOpen((id) => ({ case: "nack", value: { deliveryIds: [id], delayMs: 3_600_000 } })), OK],
  ["Nack", "delay_ms", "3600001", () => afterOpen((id) => ({ case: "nack", value: { deliveryIds: [id], delayMs: 3_600_001 } })), refusal(INVALID, "INVALID_SETTING", "nack.delay_ms")],
  ["Nack", "delay_ms", "2^32-1", () => afterOpen((id) => ({ case: "nack", value: { deliveryIds: [id], delayMs: U32 } })), refusal(INVALID, "INVALID_SETTING", "nack.delay_ms")],
  ["Nack", "delivery_ids", "2^64-1", () => afterOpen(() => ({ case: "nack", value: { deliveryIds: [U64], delayMs: 0 } })), refusal(INVALID, "UNKNOWN_DELIVERY", "delivery_ids")],
  ["Extend", "extension_ms", "0", () => afterOpen((id) => ({ case: "extend", value: { deliveryIds: [id], extensionMs: 0 } })), refusal(INVALID, "INVALID_SETTING", "extend.extension_ms")],
  ["Extend", "extension_ms", "1", () => afterOpen((id) => ({ case: "extend", value: { deliveryIds: [id], extensionMs: 1 } })), OK],
  ["Extend", "extension_ms", "3600000", () => afterOpen((id) => ({ case: "extend", value: { deliveryIds: [id], extensionMs: 3_600_000 } })), OK],
  ["Extend", "extension_ms", "3600001", () => afterOpen((id) => ({ case: "extend", value: { deliveryIds: [id], extensionMs: 3_600_001 } })), refusal(INVALID, "INVALID_SETTING", "extend.extension_ms")],
  ["Extend", "extension_ms", "2^32-1", () => afterOpen((id) => ({ case: "extend", value: { deliveryIds: [id], extensionMs: U32 } })), refusal(INVALID, "INVALID_SETTING", "extend.extension_ms")],
  ["Extend", "delivery_ids", "2^64-1", () => afterOpen(() => ({ case: "extend", value: { deliveryIds: [U64], extensionMs: 1000 } })), refusal(INVALID, "UNKNOWN_DELIVERY", "delivery_ids")],
  ["Credit", "credits", "0", () => afterOpen(() => ({ case: "credit", value: { credits: 0 } })), refusal(INVALID, "INVALID_SETTING", "credit.credits")],
  ["Credit", "credits", "1", () => afterOpen(() => ({ case: "credit", value: { credits: 1 } })), OK],
  ["Credit", "credits", "9999 (a total of 10000)", () => afterOpen(() => ({ case: "credit", value: { credits: 9_999 } })), OK],
  ["Credit", "credits", "10000 (a total of 10001)", () => afterOpen(() => ({ case: "credit", value: { credits: 10_000 } })), refusal(status.RESOURCE_EXHAUSTED, "TOO_MANY_CREDITS", "credit.credits")],
  ["Credit", "credits", "2^32-1", () => afterOpen(() => ({ case: "credit", value: { credits: U32 } })), refusal(status.RESOURCE_EXHAUSTED, "TOO_MANY_CREDITS", "credit.credits")],

  // weft.v1.Admin
  ["ListDeadLettersRequest", "after_sequence", "0", () => adminCall(() => admin.listDeadLetters({ ...DLQ, afterSequence: 0n })), OK],
  ["ListDeadLettersRequest", "after_sequence", "2^53-1", () => adminCall(() => admin.listDeadLetters({ ...DLQ, afterSequence: BigInt(SEQ) })), OK],
  ["ListDeadLettersRequest", "after_sequence", "2^53", () => adminCall(() => admin.listDeadLetters({ ...DLQ, afterSequence: SEQ_PAST })), refusal(INVALID, "INVALID_SEQUENCE", "after_sequence")],
  ["ListDeadLettersRequest", "after_sequence", "2^64-1", () => adminCall(() => admin.listDeadLetters({ ...DLQ, afterSequence: U64 })), refusal(INVALID, "INVALID_SEQUENCE", "after_sequence")],
  ["ListDeadLettersRequest", "limit", "0", () => adminCall(() => admin.listDeadLetters({ ...DLQ, limit: 0 })), OK],
  ["ListDeadLettersRequest", "limit", "1", () => adminCall(() => admin.listDeadLetters({ ...DLQ, limit: 1 })), OK],
  ["ListDeadLettersRequest", "limit", "1000", () => adminCall(() => admin.listDeadLetters({ ...DLQ, limit: 1000 })), OK],
  ["ListDeadLettersRequest", "limit", "1001", () => adminCall(() => admin.listDeadLetters({ ...DLQ, limit: 1001 })), refusal(INVALID, "INVALID_LIMIT", "limit")],
  ["ListDeadLettersRequest", "limit", "2^32-1", () => adminCall(() => admin.listDeadLetters({ ...DLQ, limit: U32 })), refusal(INVALID, "INVALID_LIMIT", "limit")],
  ["RedriveRequest", "sequences", "0", () => adminCall(() => admin.redrive({ ...DLQ, sequences: [0n] })), refusal(INVALID, "INVALID_SEQUENCE", "sequences[0]")],
  ["RedriveRequest", "sequences", "2^53-1", () => adminCall(() => admin.redrive({ ...DLQ, sequences: [BigInt(SEQ)] })), refusal(status.NOT_FOUND, "DEAD_LETTER_NOT_FOUND", "sequences[0]")],
  ["RedriveRequest", "sequences", "2^53", () => adminCall(() => admin.redrive({ ...DLQ, sequences: [SEQ_PAST] })), refusal(INVALID, "INVALID_SEQUENCE", "sequences[0]")],
  ["RedriveRequest", "sequences", "2^64-1", () => adminCall(() => admin.redrive({ ...DLQ, sequences: [U64] })), refusal(INVALID, "INVALID_SEQUENCE", "sequences[0]")],
  ["RedriveRequest", "sequences", "1 (the dead letter)", () => adminCall(() => admin.redrive({ ...DLQ, sequences: [1n] })), OK],
  ["RedriveRequest", "limit", "0", () => adminCall(() => admin.redrive({ ...DLQ, limit: 0 })), OK],
  ["RedriveRequest", "limit", "1", () => adminCall(() => admin.redrive({ ...DLQ, limit: 1 })), OK],
  ["RedriveRequest", "limit", "10000", () => adminCall(() => admin.redrive({ ...DLQ, limit: 10_000 })), OK],
  ["RedriveRequest", "limit", "10001", () => adminCall(() => admin.redrive({ ...DLQ, limit: 10_001 })), refusal(INVALID, "INVALID_LIMIT", "limit")],
  ["RedriveRequest", "limit", "2^32-1", () => adminCall(() => admin.redrive({ ...DLQ, limit: U32 })), refusal(INVALID, "INVALID_LIMIT", "limit")],
  ["PurgeRequest", "sequences", "0", () => adminCall(() => admin.purge({ ...DLQ, sequences: [0n] })), refusal(INVALID, "INVALID_SEQUENCE", "sequences[0]")],
  ["PurgeRequest", "sequences", "1 (redriven already)", () => adminCall(() => admin.purge({ ...DLQ, sequences: [1n] })), refusal(status.NOT_FOUND, "DEAD_LETTER_NOT_FOUND", "sequences[0]")],
  ["PurgeRequest", "sequences", "2^53-1", () => adminCall(() => admin.purge({ ...DLQ, sequences: [BigInt(SEQ)] })), refusal(status.NOT_FOUND, "DEAD_LETTER_NOT_FOUND", "sequences[0]")],
  ["PurgeRequest", "sequences", "2^53", () => adminCall(() => admin.purge({ ...DLQ, sequences: [SEQ_PAST] })), refusal(INVALID, "INVALID_SEQUENCE", "sequences[0]")],
  ["PurgeRequest", "sequences", "2^64-1", () => adminCall(() => admin.purge({ ...DLQ, sequences: [U64] })), refusal(INVALID, "INVALID_SEQUENCE", "sequences[0]")],
  ["PurgeRequest", "sequences", "none (every pending one)", () => adminCall(() => admin.purge({ ...DLQ, sequences: [] })), OK],

  // weft.v1.Peer: hello
  ["Hello", "instance", "0", () => greet({ instance: 0n }), refusal(INVALID, "PROTOCOL_VIOLATION", "hello.instance")],
  ["Hello", "instance", "1", () => greet({ instance: 1n }), OK],
  ["Hello", "instance", "2^63-1", () => greet({ instance: I64_MAX }), OK],
  ["Hello", "instance", "2^64-1", () => greet({ instance: U64 }), OK],
  ["Hello", "log_id", "0", () => greet({ logId: 0n }), refusal(INVALID, "PROTOCOL_VIOLATION", "hello.log_id")],
  ["Hello", "log_id", "1", () => greet({ logId: 1n }), OK],
  ["Hello", "log_id", "2^64-1", () => greet({ logId: U64 }), OK],
  ["Hello", "min_protocol_version", "0", () => greet({ minProtocolVersion: 0 }), refusal(INVALID, "UNSUPPORTED_PROTOCOL", "hello.min_protocol_version")],
  ["Hello", "min_protocol_version", "2 (max 2)", () => greet({ minProtocolVersion: 2, maxProtocolVersion: 2 }), refusal(status.FAILED_PRECONDITION, "UNSUPPORTED_PROTOCOL", "hello.max_protocol_version")],
  ["Hello", "min_protocol_version", "2^32-1 (max 2^32-1)", () => greet({ minProtocolVersion: U32, maxProtocolVersion: U32 }), refusal(status.FAILED_PRECONDITION, "UNSUPPORTED_PROTOCOL", "hello.max_protocol_version")],
  ["Hello", "max_protocol_version", "0", () => greet({ maxProtocolVersion: 0 }), refusal(INVALID, "UNSUPPORTED_PROTOCOL", "hello.min_protocol_version")],
  ["Hello", "max_protocol_version", "2^32-1", () => greet({ maxProtocolVersion: U32 }), OK],
  ["Hello", "heartbeat_interval_ms", "0", () => greet({ heartbeatIntervalMs: 0 }), OK],
  ["Hello", "heartbeat_interval_ms", "1", () => greet({ heartbeatIntervalMs: 1 }), OK],
  ["Hello", "heartbeat_interval_ms", "3600000", () => greet({ heartbeatIntervalMs: 3_600_000 }), OK],
  ["Hello", "heartbeat_interval_ms", "3600001", () => greet({ heartbeatIntervalMs: 3_600_001 }), refusal(INVALID, "PROTOCOL_VIOLATION", "hello.heartbeat_interval_ms")],
  ["Hello", "heartbeat_interval_ms", "2^32-1", () => greet({ heartbeatIntervalMs: U32 }), refusal(INVALID, "PROTOCOL_VIOLATION", "hello.heartbeat_interval_ms")],
  ["Hello", "max_message_bytes", "0", () => greet({ maxMessageBytes: 0 }), OK],
  ["Hello", "max_message_bytes", "1", () => greet({ maxMessageBytes: 1 }), refusal(INVALID, "PROTOCOL_VIOLATION", "hello.max_message_bytes")],
  ["Hello", "max_message_bytes", "4095", () => greet({ maxMessageBytes: 4095 }), refusal(INVALID, "PROTOCOL_VIOLATION", "hello.max_message_bytes")],
  ["Hello", "max_message_bytes", "4096", () => greet({ maxMessageBytes: 4096 }), OK],
  ["Hello", "max_message_bytes", "2^32-1", () => greet({ maxMessageBytes: U32 }), OK],

  // weft.v1.Peer: interest (a group learnt from a peer is stored)
  ["GroupInterest", "start.sequence", "0", () => peerGroup(sequence(0n)), refusal(INVALID, "INVALID_START", "interest.groups[0].start.sequence")],
  ["GroupInterest", "start.sequence", "2^53-1", () => peerGroup(sequence(BigInt(SEQ))), OK],
  ["GroupInterest", "start.sequence", "2^64-1", () => peerGroup(sequence(U64)), refusal(INVALID, "INVALID_START", "interest.groups[0].start.sequence")],
  ["GroupInterest", "start.time.seconds", "-1", () => peerGroup(time(-1n)), refusal(INVALID, "INVALID_START", "interest.groups[0].start.time")],
  ["GroupInterest", "start.time.seconds", "0", () => peerGroup(time(0n)), OK],
  ["GroupInterest", "start.time.seconds", "253402300799", () => peerGroup(time(LAST_SECOND, 999_999_999)), OK],
  ["GroupInterest", "start.time.seconds", "2^63-1", () => peerGroup(time(I64_MAX)), refusal(INVALID, "INVALID_START", "interest.groups[0].start.time")],
  ["GroupInterest", "start.time.nanos", "10^9", () => peerGroup(time(0n, 1_000_000_000)), refusal(INVALID, "INVALID_START", "interest.groups[0].start.time")],
  ["GroupInterest", "max_attempts", "0", () => peerGroup({ maxAttempts: 0 }), OK],
  ["GroupInterest", "max_attempts", "1000", () => peerGroup({ maxAttempts: 1000 }), OK],
  ["GroupInterest", "max_attempts", "1001", () => peerGroup({ maxAttempts: 1001 }), refusal(INVALID, "INVALID_SETTING", "interest.groups[0].max_attempts")],
  ["GroupInterest", "max_attempts", "2^32-1", () => peerGroup({ maxAttempts: U32 }), refusal(INVALID, "INVALID_SETTING", "interest.groups[0].max_attempts")],
  ["GroupInterest", "dead_letter_channel", "201 characters", () => peerGroup({ deadLetterChannel: `d${"x".repeat(200)}` }), refusal(INVALID, "INVALID_CHANNEL", "interest.groups[0].dead_letter_channel")],
  ["GroupInterest", "created_unix_ms", "-2^63", () => peerGroup({ createdUnixMs: I64_MIN }), refusal(INVALID, "INVALID_START", "interest.groups[0].created_unix_ms")],
  ["GroupInterest", "created_unix_ms", "-1", () => peerGroup({ createdUnixMs: -1n }), refusal(INVALID, "INVALID_START", "interest.groups[0].created_unix_ms")],
  ["GroupInterest", "created_unix_ms", "0 (unknown), KIND_LATEST", () => peerGroup({ createdUnixMs: 0n, ...start({ kind: StartPosition_Kind.LATEST }) }), OK],
  ["GroupInterest", "created_unix_ms", "1, KIND_LATEST", () => peerGroup({ createdUnixMs: 1n, ...start({ kind: StartPosition_Kind.LATEST }) }), OK],
  ["GroupInterest", "created_unix_ms", "9999-12-31T23:59:59.999, KIND_LATEST", () => peerGroup({ createdUnixMs: LAST_MS, ...start({ kind: StartPosition_Kind.LATEST }) }), OK],
  ["GroupInterest", "created_unix_ms", "10000-01-01, KIND_LATEST", () => peerGroup({ createdUnixMs: LAST_MS + 1n, ...start({ kind: StartPosition_Kind.LATEST }) }), refusal(INVALID, "INVALID_START", "interest.groups[0].created_unix_ms")],
  ["GroupInterest", "created_unix_ms", "2^63-1", () => peerGroup({ createdUnixMs: I64_MAX }), refusal(INVALID, "INVALID_START", "interest.groups[0].created_unix_ms")],

  // weft.v1.Peer: forward (relay copies are stored), stored, outcomes, heartbeat
  ["Forward", "forward_id", "0", () => forward(1n, 1, 0n), OK],
  ["Forward", "forward_id", "2^63-1", () => forward(1n, 1, I64_MAX), OK],
  ["Forward", "forward_id", "2^64-1", () => forward(1n, 1, U64), OK],
  ["ForwardedEvent", "sequence", "0", () => forward(0n, 1), refusal(INVALID, "PROTOCOL_VIOLATION", "forward.events[0].sequence")],
  ["ForwardedEvent", "sequence", "1", () => forward(1n, 1), OK],
  ["ForwardedEvent", "sequence", "2^32-1", () => forward(BigInt(U32), 1), OK],
  ["ForwardedEvent", "sequence", "2^53-1", () => forward(BigInt(SEQ), 1), OK],
  ["ForwardedEvent", "sequence", "2^53", () => forward(SEQ_PAST, 1), refusal(INVALID, "PROTOCOL_VIOLATION", "forward.events[0].sequence")],
  ["ForwardedEvent", "sequence", "2^64-1", () => forward(U64, 1), refusal(INVALID, "PROTOCOL_VIOLATION", "forward.events[0].sequence")],
  ["ForwardedEvent", "attempt", "0", () => forward(1n, 0), refusal(INVALID, "PROTOCOL_VIOLATION", "forward.events[0].attempt")],
  ["ForwardedEvent", "attempt", "2^32-1", () => forward(1n, U32), OK],
  ["Stored", "forward_id", "0", () => peerFrame({ case: "stored", value: { forwardId: 0n } }), OK],
  ["Stored", "forward_id", "2^64-1", () => peerFrame({ case: "stored", value: { forwardId: U64 } }), OK],
  ["GroupOutcome", "done", "0", () => peerFrame({ case: "outcomes", value: { groups: [{ ...FORWARDED, done: [0n] }] } }), refusal(INVALID, "PROTOCOL_VIOLATION", "outcomes.groups[0].done[0]")],
  ["GroupOutcome", "done", "1", () => peerFrame({ case: "outcomes", value: { groups: [{ ...FORWARDED, done: [1n] }] } }), OK],
  ["GroupOutcome", "done", "2^53-1", () => peerFrame({ case: "outcomes", value: { groups: [{ ...FORWARDED, done: [BigInt(SEQ)] }] } }), OK],
  ["GroupOutcome", "done", "2^53", () => peerFrame({ case: "outcomes", value: { groups: [{ ...FORWARDED, done: [SEQ_PAST] }] } }), refusal(INVALID, "PROTOCOL_VIOLATION", "outcomes.groups[0].done[0]")],
  ["GroupOutcome", "done", "2^64-1", () => peerFrame({ case: "outcomes", value: { groups: [{ ...FORWARDED, done: [1n, U64] }] } }), refusal(INVALID, "PROTOCOL_VIOLATION", "outcomes.groups[0].done[1]")],
  ["GroupOutcome", "returned", "0", () => peerFrame({ case: "outcomes", value: { groups: [{ ...FORWARDED, returned: [0n] }] } }), refusal(INVALID, "PROTOCOL_VIOLATION", "outcomes.groups[0].returned[0]")],
  ["GroupOutcome", "returned", "2^53-1", () => peerFrame({ case: "outcomes", value: { groups: [{ ...FORWARDED, returned: [BigInt(SEQ)] }] } }), OK],
  ["GroupOutcome", "returned", "2^64-1", () => peerFrame({ case: "outcomes", value: { groups: [{ ...FORWARDED, returned: [U64] }] } }), refusal(INVALID, "PROTOCOL_VIOLATION", "outcomes.groups[0].returned[0]")],
  ["Heartbeat", "sent_unix_ms", "-2^63", () => peerFrame({ case: "heartbeat", value: { sentUnixMs: I64_MIN } }), OK],
  ["Heartbeat", "sent_unix_ms", "-1", () => peerFrame({ case: "heartbeat", value: { sentUnixMs: -1n } }), OK],
  ["Heartbeat", "sent_unix_ms", "0", () => peerFrame({ case: "heartbeat", value: { sentUnixMs: 0n } }), OK],
  ["Heartbeat", "sent_unix_ms", "2^63-1", () => peerFrame({ case: "heartbeat", value: { sentUnixMs: I64_MAX } }), OK],
];

describe("extreme values of every numeric field, and a restart around what was stored", () => {
  beforeAll(async () => {
    mesh = await startMesh(["a", "b", "c"]);
    a = mesh[0]!;
    raw = new RawMeshConnection(a.address);
    admin = new AdminClient(a.address);
    publisher = raw.publish();

    // One dead letter of DLQ: max attempts 1, nacked once.
    const made = await publisher.publish(++batch, [create(EventSchema, { id: randomUUID(), source: "//weft-test/extreme", type: "test.extreme", channel: DLQ.channel })]);
    expect(made.results[0]?.error).toBeUndefined();
    const sub = raw.subscribe();
    sub.open({ ...DLQ, start: { kind: StartPosition_Kind.EARLIEST }, maxAttempts: 1 });
    await sub.subscribed();
    const [d] = await sub.take(1);
    sub.nack([d!.deliveryId]);
    await eventually(async () => (await admin.listDeadLetters(DLQ)).deadLetters.length === 1, 10_000, "one dead letter");
    sub.end();
    await sub.finished();
    storedGroups.push(DLQ);

    // A member of FORWARDED on A, so that A advertises it to raw peers.
    forwardMember = a.client().subscribe({ ...FORWARDED, from: "earliest" });
    await forwardMember.subscribed();
    storedGroups.push(FORWARDED);
  }, 60_000);

  afterAll(async () => {
    for (const p of peers) p.close();
    admin?.close();
    raw?.close();
    for (const s of mesh ?? []) await s.dispose();
  });

  it.each(ROWS)("%s.%s = %s", async (_request, _field, _value, send, expected) => {
    expect(await send()).toBe(expected);
  });

  it("the mesh restarts around everything stored: links come up, nothing refused exists, events go round", async () => {
    // Every value was tried: the table ran first (tests of a file run in order).
    expect(storedGroups.length).toBeGreaterThan(20);
    expect(refusedGroups.length).toBeGreaterThan(20);
    for (const p of peers.splice(0)) p.close();
    forwardMember.close();
    publisher.end();

    await restartMesh(mesh);

    const missing = (s: TestSidecar) => storedGroups.filter((g) => !has(s, g.channel, g.group)).map((g) => `${g.channel}/${g.group}`);
    expect(missing(a)).toEqual([]);
    // The others learnt every group of A from its interest: each was encoded and accepted.
    await eventually(() => mesh.every((s) => missing(s).length === 0), 20_000, "every sidecar knows every group stored at a");
    for (const s of mesh) {
      const present = refusedGroups.filter((g) => has(s, g.channel, g.group) || s.sidecar.log.channels().includes(g.channel));
      expect(present, s.sidecar.config.nodeId).toEqual([]);
    }

    // Events with extreme times, stored before the restart, cross a link after it.
    const reader = mesh[1]!.client().subscribe({ channel: EVENTS, group: "reader", from: "earliest", maxInFlight: 1000 });
    const seen = new Set<string>();
    await collect(reader, () => acceptedEvents.every((id) => seen.has(id)), (d) => {
      seen.add(d.event.id);
      d.ack();
    });
    reader.close();

    const [x, y, z] = mesh as [TestSidecar, TestSidecar, TestSidecar];
    await roundTrip(x, y, "x.round");
    await roundTrip(y, z, "x.round");
    await roundTrip(z, x, "x.round");
  }, 120_000);
});
