import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import {
  ListChannelsRequestSchema,
  ListDeadLettersRequestSchema,
  ListGroupsRequestSchema,
  ListPeersRequestSchema,
  PurgeRequestSchema,
  RedriveRequestSchema,
  StatsRequestSchema,
} from "../../src/gen/weft/v1/admin_pb.js";
import { type Event, EventSchema } from "../../src/gen/weft/v1/event_pb.js";
import { PublishRequestSchema, type StartPosition, StartPositionSchema, SubscribeRequestSchema } from "../../src/gen/weft/v1/mesh_pb.js";
import { type GroupInterest, GroupInterestSchema, PeerFrameSchema } from "../../src/gen/weft/v1/peer_pb.js";

/**
 * What the fuzzer sends: a seeded PRNG, mutations of protobuf bytes, and for every RPC of
 * the sidecar a generator of valid requests (built with the generated schemas where there
 * are some) and of the valid frames that bring a stream to its working state. A stream's
 * frames depend on its seed only, never on what the sidecar answered, so a seed names the
 * same frames on every run (timestamps near "now" aside).
 */

/** A small, fast, seeded PRNG (mulberry32): the same seed gives the same numbers. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A uniform uint32. */
  u32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [lo, hi], both included. */
  int(lo: number, hi: number): number {
    return lo + Math.floor((this.u32() / 2 ** 32) * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!;
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** A uint64 that is often one of the edge values. */
  u64(): bigint {
    return this.chance(0.4) ? this.pick(EDGE_U64) : BigInt(this.int(0, 300));
  }

  /** A uint32 that is often one of the edge values. */
  u32Edge(): number {
    return this.chance(0.4) ? this.pick(EDGE_U32) : this.int(0, 300);
  }

  /** An int64 that is often one of the edge values (negatives included). */
  i64(): bigint {
    return this.chance(0.3) ? this.pick(EDGE_I64) : BigInt(Date.now() + this.int(-100_000, 100_000));
  }
}

/** Derives the seed of the `index`th stream of a run from the run's seed. */
export function streamSeed(seed: number, index: number): number {
  return new Rng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0).u32();
}

const EDGE_U32 = [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1];
const EDGE_U64 = [0n, 1n, 2n ** 32n - 1n, 2n ** 53n - 1n, 2n ** 53n + 1n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n];
const EDGE_I64 = [0n, -1n, -(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n + 1n, -(2n ** 53n)];
/** Raw varint values written over a field's: 2^64 - 1 is also -1 of an int64 or int32. */
const EDGE_VARINTS = [0n, 1n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n + 1n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n];

// ---------------------------------------------------------------------------------------
// Mutations of encoded messages.

/** One field of an encoded message: where its tag, its value and its end are. */
interface WireSpan {
  no: number;
  wireType: number;
  start: number;
  valueStart: number;
  end: number;
}

function readVarint(b: Uint8Array, pos: number): [value: bigint, next: number] | undefined {
  let v = 0n;
  for (let shift = 0n, i = pos; i < b.length && shift < 70n; i++, shift += 7n) {
    v |= BigInt(b[i]! & 0x7f) << shift;
    if ((b[i]! & 0x80) === 0) return [v, i + 1];
  }
  return undefined;
}

function varint(value: bigint): Uint8Array {
  const out: number[] = [];
  let v = BigInt.asUintN(64, value);
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
}

/** The top-level fields of `b`, or undefined where it stops being a message. */
function scan(b: Uint8Array): WireSpan[] | undefined {
  const spans: WireSpan[] = [];
  let pos = 0;
  while (pos < b.length) {
    const tag = readVarint(b, pos);
    if (!tag) return undefined;
    const [key, valueStart] = tag;
    const no = Number(key >> 3n);
    const wireType = Number(key & 7n);
    let end: number;
    if (wireType === WireType.Varint) {
      const v = readVarint(b, valueStart);
      if (!v) return undefined;
      end = v[1];
    } else if (wireType === WireType.Bit64) end = valueStart + 8;
    else if (wireType === WireType.Bit32) end = valueStart + 4;
    else if (wireType === WireType.LengthDelimited) {
      const len = readVarint(b, valueStart);
      if (!len) return undefined;
      end = len[1] + Number(len[0]);
    } else return undefined;
    if (end > b.length) return undefined;
    spans.push({ no, wireType, start: pos, valueStart, end });
    pos = end;
  }
  return spans;
}

const concat = (...parts: Uint8Array[]): Uint8Array => Uint8Array.from(Buffer.concat(parts));

/** Replaces `b[from, to)` with `middle`. */
const splice = (b: Uint8Array, from: number, to: number, middle: Uint8Array): Uint8Array => concat(b.subarray(0, from), middle, b.subarray(to));

type Mutation = (r: Rng, b: Uint8Array, depth: number) => Uint8Array;

const MUTATIONS: Record<string, Mutation> = {
  flipBits(r, b) {
    if (b.length === 0) return b;
    const out = Uint8Array.from(b);
    for (let n = r.int(1, 4); n > 0; n--) out[r.int(0, out.length - 1)]! ^= 1 << r.int(0, 7);
    return out;
  },
  insertBytes(r, b) {
    const at = r.int(0, b.length);
    const filler = r.chance(0.5) ? r.bytes(r.int(1, 8)) : new Uint8Array(r.int(1, 8)).fill(r.pick([0x00, 0xff, 0x80, 0x7f]));
    return splice(b, at, at, filler);
  },
  deleteBytes(r, b) {
    if (b.length === 0) return b;
    const at = r.int(0, b.length - 1);
    return splice(b, at, Math.min(b.length, at + r.int(1, 8)), new Uint8Array());
  },
  truncate(r, b) {
    return b.subarray(0, r.int(0, Math.max(0, b.length - 1)));
  },
  /** A varint that never ends, or is longer than ten bytes. */
  brokenVarint(r, b) {
    const spans = scan(b) ?? [];
    const at = spans.length > 0 ? r.pick(spans).valueStart : r.int(0, b.length);
    const bad = r.chance(0.5) ? new Uint8Array(r.int(10, 12)).fill(0xff) : concat(new Uint8Array(10).fill(0x80), Uint8Array.of(0x01));
    return splice(b, at, r.chance(0.5) ? b.length : at, bad);
  },
  /** A length-delimited field whose length says something else than its bytes. */
  lengthField(r, b) {
    const ld = (scan(b) ?? []).filter((s) => s.wireType === WireType.LengthDelimited);
    if (ld.length === 0) return MUTATIONS.insertBytes!(r, b, 0);
    const s = r.pick(ld);
    const len = readVarint(b, s.valueStart)!;
    const actual = s.end - len[1];
    const lie = r.pick([0n, BigInt(actual + 1), BigInt(Math.max(0, actual - 1)), 2n ** 31n, 2n ** 32n - 1n, 2n ** 64n - 1n, BigInt(r.int(0, 1 << 20))]);
    return splice(b, s.valueStart, len[1], varint(lie));
  },
  /** A field renumbered (unknown, reserved, 0, the largest) or given another wire type. */
  fieldNumber(r, b) {
    const spans = scan(b) ?? [];
    if (spans.length === 0) return MUTATIONS.insertBytes!(r, b, 0);
    const s = r.pick(spans);
    const no = r.chance(0.3) ? s.no : r.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 15, 16, 100, 19_000, 2 ** 29 - 1]);
    const wireType = r.chance(0.6) ? s.wireType : r.int(0, 7);
    return splice(b, s.start, s.valueStart, varint((BigInt(no) << 3n) | BigInt(wireType)));
  },
  duplicateField(r, b) {
    const spans = scan(b) ?? [];
    if (spans.length === 0) return b;
    const s = r.pick(spans);
    const copy = b.slice(s.start, s.end);
    const at = r.pick([0, b.length, s.end]);
    return splice(b, at, at, r.chance(0.2) ? concat(copy, copy, copy) : copy);
  },
  /** A varint field set to an edge value: 0, 2^32-1, 2^63-1, 2^64-1 (-1 as a signed field). */
  extremeNumber(r, b) {
    const spans = (scan(b) ?? []).filter((s) => s.wireType === WireType.Varint);
    if (spans.length === 0) {
      const no = r.int(1, 10);
      return concat(b, varint(BigInt(no) << 3n), varint(r.pick(EDGE_VARINTS)));
    }
    const s = r.pick(spans);
    return splice(b, s.valueStart, s.end, varint(r.pick(EDGE_VARINTS)));
  },
  /** Mutates the message inside a length-delimited field, and fixes its length. */
  nested(r, b, depth) {
    const ld = (scan(b) ?? []).filter((s) => s.wireType === WireType.LengthDelimited);
    if (ld.length === 0 || depth > 3) return MUTATIONS.flipBits!(r, b, depth);
    const s = r.pick(ld);
    const inner = b.subarray(readVarint(b, s.valueStart)![1], s.end);
    const mutated = mutateOnce(r, inner, depth + 1);
    return splice(b, s.valueStart, s.end, concat(varint(BigInt(mutated.length)), mutated));
  },
};

/** Weighted: structure-aware mutations reach further than blind ones. */
const MUTATION_NAMES = Object.keys(MUTATIONS).flatMap((name) => (name === "nested" ? [name, name, name] : name === "extremeNumber" ? [name, name] : [name]));

function mutateOnce(r: Rng, b: Uint8Array, depth: number): Uint8Array {
  return MUTATIONS[r.pick(MUTATION_NAMES)]!(r, b, depth);
}

/** `b` with one to three mutations applied. */
export function mutate(r: Rng, b: Uint8Array): Uint8Array {
  let out = b;
  for (let n = r.int(1, 3); n > 0; n--) out = mutateOnce(r, out, 0);
  return out;
}

/** Random bytes of a random length: empty, short, a few KiB, now and then 64 KiB. */
export function randomBytes(r: Rng): Uint8Array {
  const roll = r.u32() % 100;
  const n = roll < 5 ? 0 : roll < 60 ? r.int(1, 32) : roll < 95 ? r.int(33, 4096) : r.int(4097, 64 * 1024);
  return r.bytes(n);
}

// ---------------------------------------------------------------------------------------
// Valid requests, RPC by RPC.

/**
 * The names valid requests use. None is a channel or group of the events kept across the run
 * (those are "kept.*"), so that a fuzzed ack or purge can never consume them.
 */
const CHANNELS = ["fuzz.a", "fuzz.b", "fuzz.a.dlq.g1"];
const GROUPS = ["g1", "g2", "g3"];
const BAD_NAMES = ["", "UPPER", "a..b", ".x", "x.", "weft.internal", "a b", "é", "x".repeat(201), "\u0000", "a/b"];

function channel(r: Rng): string {
  return r.chance(0.85) ? r.pick(CHANNELS) : r.pick(BAD_NAMES);
}
function group(r: Rng): string {
  return r.chance(0.85) ? r.pick(GROUPS) : r.pick(BAD_NAMES);
}
function text(r: Rng, max = 40): string {
  if (r.chance(0.05)) return "z".repeat(r.int(200, 5000));
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-._:/ ";
  let s = "";
  for (let n = r.int(0, max); n > 0; n--) s += alphabet[r.int(0, alphabet.length - 1)];
  return s;
}
function timestamp(r: Rng): { seconds: bigint; nanos: number } {
  return r.chance(0.7)
    ? { seconds: BigInt(Math.floor(Date.now() / 1000) + r.int(-1000, 1000)), nanos: r.int(0, 999_999_999) }
    : { seconds: r.pick([0n, -1n, -62_135_596_801n, 253_402_300_800n, 2n ** 63n - 1n, -(2n ** 63n)]), nanos: r.pick([0, -1, 1_000_000_000, 2 ** 31 - 1, -(2 ** 31)]) };
}

function event(r: Rng): Event {
  const attributes: Record<string, string> = {};
  for (let n = r.int(0, 3); n > 0; n--) {
    attributes[r.pick(["traceparent", "tracestate", "weft.origin", "weft.attempt", "x", "UPPER", "", "a".repeat(300)])] = text(r, 60);
  }
  return create(EventSchema, {
    id: r.chance(0.9) ? `fz-${r.u32()}` : text(r),
    source: r.chance(0.9) ? "//fuzz" : text(r),
    type: r.chance(0.9) ? "fuzz.frame" : text(r),
    subject: text(r, 10),
    time: r.chance(0.5) ? timestamp(r) : undefined,
    datacontenttype: r.pick(["", "application/json", "text/plain", text(r)]),
    data: r.chance(0.02) ? r.bytes(r.int(64 * 1024, 256 * 1024)) : r.bytes(r.int(0, 256)),
    attributes,
    channel: channel(r),
    key: r.chance(0.5) ? "" : r.pick(["k1", "k2", text(r)]),
  });
}

function start(r: Rng): StartPosition {
  if (r.chance(0.7)) {
    const kind = r.int(1, 4);
    return create(StartPositionSchema, { kind, sequence: kind === 3 ? BigInt(r.int(1, 100)) : 0n, time: kind === 4 ? timestamp(r) : undefined });
  }
  return create(StartPositionSchema, {
    kind: r.chance(0.85) ? r.int(0, 4) : r.pick([5, -1, 2 ** 31 - 1]),
    sequence: r.u64(),
    time: r.chance(0.5) ? timestamp(r) : undefined,
  });
}

function ids(r: Rng): bigint[] {
  return Array.from({ length: r.chance(0.02) ? 10_001 : r.int(0, 6) }, () => (r.chance(0.7) ? BigInt(r.int(1, 200)) : r.u64()));
}

const sequences = ids;

function subscribeRequest(r: Rng): Uint8Array {
  const request = r.pick([
    () => ({
      case: "open" as const,
      value: {
        channel: channel(r),
        group: group(r),
        start: r.chance(0.9) ? start(r) : undefined,
        maxInFlight: r.chance(0.5) ? r.int(1, 20) : r.u32Edge(),
        ackDeadlineMs: r.chance(0.5) ? 0 : r.u32Edge(),
        maxAttempts: r.chance(0.5) ? 0 : r.u32Edge(),
        deadLetterChannel: r.chance(0.7) ? "" : channel(r),
      },
    }),
    () => ({ case: "ack" as const, value: { deliveryIds: ids(r) } }),
    () => ({ case: "nack" as const, value: { deliveryIds: ids(r), delayMs: r.chance(0.5) ? r.int(0, 100) : r.u32Edge() } }),
    () => ({ case: "extend" as const, value: { deliveryIds: ids(r), extensionMs: r.u32Edge() } }),
    () => ({ case: "credit" as const, value: { credits: r.u32Edge() } }),
    () => ({ case: undefined }),
  ])();
  return toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { request }));
}

function groupInterest(r: Rng): GroupInterest {
  return create(GroupInterestSchema, {
    channel: channel(r),
    group: group(r),
    start: r.chance(0.95) ? start(r) : undefined,
    maxAttempts: r.chance(0.5) ? 0 : r.u32Edge(),
    deadLetterChannel: r.chance(0.7) ? "" : channel(r),
    members: r.chance(0.6),
    createdUnixMs: r.i64(),
  });
}

function hello(r: Rng, nodeId: string): Uint8Array {
  const sane = r.chance(0.8);
  return toBinary(
    PeerFrameSchema,
    create(PeerFrameSchema, {
      frame: {
        case: "hello",
        value: {
          nodeId: r.chance(0.9) ? nodeId : r.pick(BAD_NAMES),
          instance: sane ? BigInt(r.int(1, 2 ** 31)) : r.u64(),
          logId: sane ? BigInt(r.int(1, 2 ** 31)) : r.u64(),
          minProtocolVersion: sane ? 1 : r.u32Edge(),
          maxProtocolVersion: sane ? 1 : r.u32Edge(),
          softwareVersion: text(r),
          // Long: a fuzzed link is never ended as silent before the fuzzer ends it.
          heartbeatIntervalMs: sane ? 60_000 : r.u32Edge(),
          maxMessageBytes: sane ? 0 : r.u32Edge(),
        },
      },
    }),
  );
}

function peerFrame(r: Rng, nodeId: string): Uint8Array {
  const frame = r.pick([
    () => ({ case: "interest" as const, value: { snapshot: r.chance(0.5), groups: Array.from({ length: r.int(0, 4) }, () => groupInterest(r)) } }),
    () => ({
      case: "forward" as const,
      value: {
        forwardId: r.u64(),
        events: Array.from({ length: r.int(0, 4) }, () => ({
          channel: channel(r),
          group: group(r),
          sequence: r.chance(0.6) ? BigInt(r.int(1, 100)) : r.u64(),
          attempt: r.chance(0.7) ? r.int(1, 5) : r.u32Edge(),
          event: r.chance(0.95) ? event(r) : undefined,
        })),
      },
    }),
    () => ({ case: "stored" as const, value: { forwardId: r.u64() } }),
    () => ({
      case: "outcomes" as const,
      value: { groups: Array.from({ length: r.int(0, 3) }, () => ({ channel: channel(r), group: group(r), done: sequences(r), returned: sequences(r) })) },
    }),
    () => ({ case: "heartbeat" as const, value: { sentUnixMs: r.i64() } }),
    () => ({ case: undefined }),
  ])();
  // A hello now and then: a second one is a protocol violation the sidecar must name.
  if (r.chance(0.08)) return hello(r, nodeId);
  return toBinary(PeerFrameSchema, create(PeerFrameSchema, { frame }));
}

/** grpc.health.v1.HealthCheckRequest{service}: no generated code for it in src/gen. */
function healthRequest(r: Rng): Uint8Array {
  const service = r.pick(["", "weft.v1.Mesh", "weft.v1.Peer", "weft.v1.Admin", "grpc.health.v1.Health", text(r)]);
  const w = new BinaryWriter();
  if (service !== "" || r.chance(0.3)) w.tag(1, WireType.LengthDelimited).string(service);
  return w.finish();
}

/** grpc.reflection ServerReflectionRequest: host (1) and one question (3 to 7). */
function reflectionRequest(r: Rng): Uint8Array {
  const w = new BinaryWriter();
  if (r.chance(0.3)) w.tag(1, WireType.LengthDelimited).string(text(r));
  const symbols = ["weft.v1.Mesh", "weft.v1.Admin", "weft.v1.Event", "weft.v1.SubscribeOpen.channel", "weft.v1.Mesh.Publish", "google.protobuf.Timestamp", "", "nope", text(r)];
  switch (r.int(3, 7)) {
    case 3:
      w.tag(3, WireType.LengthDelimited).string(r.pick(["weft/v1/mesh.proto", "weft/v1/event.proto", "google/protobuf/timestamp.proto", "", "../etc/passwd", text(r)]));
      break;
    case 4:
      w.tag(4, WireType.LengthDelimited).string(r.pick(symbols));
      break;
    case 5:
      w.tag(5, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(r.pick(symbols)).tag(2, WireType.Varint).int32(r.pick([0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 536_870_911])).join();
      break;
    case 6:
      w.tag(6, WireType.LengthDelimited).string(r.pick(symbols));
      break;
    default:
      w.tag(7, WireType.LengthDelimited).string(r.pick(["", "*", text(r)]));
  }
  return w.finish();
}

// ---------------------------------------------------------------------------------------
// The RPCs.

export type RpcKind = "unary" | "server-stream" | "bidi";

/** One RPC of the sidecar, and how to make its requests. */
export interface FuzzTarget {
  /** "weft.v1.Mesh/Publish". */
  name: string;
  /** Which listener serves it. */
  port: "service" | "peer";
  kind: RpcKind;
  /** One valid request. `nodeId` is this stream's own, for the Peer. */
  valid(r: Rng, nodeId: string): Uint8Array;
  /** The valid requests that bring a stream to its working state (a subscription, a link up). */
  prologue?(r: Rng, nodeId: string): Uint8Array[];
}

const unary = (name: string, valid: (r: Rng) => Uint8Array): FuzzTarget => ({ name, port: "service", kind: "unary", valid });

/** Every RPC the sidecar serves, on both of its gRPC listeners. */
export const TARGETS: readonly FuzzTarget[] = [
  {
    name: "weft.v1.Mesh/Publish",
    port: "service",
    kind: "bidi",
    valid: (r) => toBinary(PublishRequestSchema, create(PublishRequestSchema, { batchId: r.chance(0.6) ? BigInt(r.int(1, 50)) : r.u64(), events: Array.from({ length: r.int(0, 5) }, () => event(r)) })),
  },
  {
    name: "weft.v1.Mesh/Subscribe",
    port: "service",
    kind: "bidi",
    valid: subscribeRequest,
    prologue: (r) => [
      toBinary(
        SubscribeRequestSchema,
        create(SubscribeRequestSchema, {
          request: { case: "open", value: { channel: r.pick(CHANNELS), group: r.pick(GROUPS), start: { kind: r.int(1, 2) }, maxInFlight: r.int(1, 10) } },
        }),
      ),
    ],
  },
  unary("weft.v1.Admin/ListChannels", () => toBinary(ListChannelsRequestSchema, create(ListChannelsRequestSchema))),
  unary("weft.v1.Admin/ListGroups", (r) => toBinary(ListGroupsRequestSchema, create(ListGroupsRequestSchema, { channel: channel(r) }))),
  unary("weft.v1.Admin/ListPeers", () => toBinary(ListPeersRequestSchema, create(ListPeersRequestSchema))),
  unary("weft.v1.Admin/ListDeadLetters", (r) =>
    toBinary(ListDeadLettersRequestSchema, create(ListDeadLettersRequestSchema, { channel: channel(r), group: group(r), afterSequence: r.u64(), limit: r.u32Edge() })),
  ),
  unary("weft.v1.Admin/Redrive", (r) =>
    toBinary(RedriveRequestSchema, create(RedriveRequestSchema, { channel: channel(r), group: group(r), sequences: sequences(r), limit: r.u32Edge() })),
  ),
  unary("weft.v1.Admin/Purge", (r) => toBinary(PurgeRequestSchema, create(PurgeRequestSchema, { channel: channel(r), group: group(r), sequences: sequences(r) }))),
  unary("weft.v1.Admin/Stats", () => toBinary(StatsRequestSchema, create(StatsRequestSchema))),
  {
    name: "weft.v1.Peer/Link",
    port: "peer",
    kind: "bidi",
    valid: peerFrame,
    prologue: (r, nodeId) => [
      hello(r, nodeId),
      toBinary(PeerFrameSchema, create(PeerFrameSchema, { frame: { case: "interest", value: { snapshot: true, groups: Array.from({ length: r.int(0, 2) }, () => groupInterest(r)) } } })),
    ],
  },
  unary("grpc.health.v1.Health/Check", healthRequest),
  { name: "grpc.health.v1.Health/Watch", port: "service", kind: "server-stream", valid: healthRequest },
  unary("grpc.health.v1.Health/List", () => new Uint8Array()),
  { name: "grpc.reflection.v1.ServerReflection/ServerReflectionInfo", port: "service", kind: "bidi", valid: reflectionRequest },
  { name: "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", port: "service", kind: "bidi", valid: reflectionRequest },
];

/** What one stream sends: its frames, and how the fuzzer paces and ends it. */
export interface StreamPlan {
  target: FuzzTarget;
  /** The stream's own node id, on the Peer. */
  nodeId: string;
  frames: Uint8Array[];
  /** Wait for the sidecar's first answer after this many frames (the prologue), or -1. */
  awaitAfter: number;
  /** Yield to the event loop between frames, so the sidecar handles them one by one. */
  paced: boolean;
  /** How the fuzzer ends a streaming request: half-close and wait, or cancel. */
  ending: "half-close" | "cancel";
}

/**
 * The plan of one stream of `target`: valid requests (in any order), mutations of valid
 * requests and random bytes, after the prologue half the time.
 */
export function planStream(target: FuzzTarget, seed: number, index: number): StreamPlan {
  const r = new Rng(seed);
  const nodeId = `fuzz-node-${index}`;
  const frames: Uint8Array[] = [];
  let awaitAfter = -1;
  if (target.kind !== "bidi") return { target, nodeId, frames: [frame(r, target, nodeId)], awaitAfter, paced: false, ending: "half-close" };
  if (target.prologue && r.chance(0.6)) {
    frames.push(...target.prologue(r, nodeId));
    if (r.chance(0.7)) awaitAfter = frames.length;
  }
  // Valid requests only (their order is the test), mostly valid, or mostly broken: a stream
  // ends at its first bad frame, so only the first two reach the states after a few requests.
  const mix = r.pick([MIXES.valid, MIXES.mostlyValid, MIXES.broken]);
  for (let n = r.int(1, 12); n > 0; n--) frames.push(frame(r, target, nodeId, mix));
  return { target, nodeId, frames, awaitAfter, paced: r.chance(0.5), ending: r.chance(0.75) ? "half-close" : "cancel" };
}

/** Percent of valid and of mutated frames (the rest are random bytes). */
const MIXES = { valid: [100, 0], mostlyValid: [75, 20], broken: [20, 55] } as const;

function frame(r: Rng, target: FuzzTarget, nodeId: string, [valid, mutated]: readonly [number, number] = MIXES.broken): Uint8Array {
  const roll = r.u32() % 100;
  if (roll < valid) return target.valid(r, nodeId);
  if (roll < valid + mutated) return mutate(r, target.valid(r, nodeId));
  return randomBytes(r);
}
