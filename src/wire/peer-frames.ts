import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { type GroupOutcome, type PeerFrame, PeerFrameSchema } from "../gen/weft/v1/peer_pb.js";
import { putVarint, putVarint64, varint64Size, varintSize } from "./varint.js";
import { readUint64s } from "./messages.js";

/**
 * The frames of weft.v1.Peer.Link. Forwards carry event bytes and are written and read by
 * hand, so an event crosses a link byte for byte as its origin stored it (never decoded
 * into a message and encoded again). The frames that answer them (stored, outcomes), one of
 * each per event at a low rate, are written and read by hand too, so that protobuf-es's
 * reflection is not paid per event on the main thread of the receiver or of the origin.
 * Every other frame goes through protobuf-es. Field numbers follow proto/weft/v1/peer.proto.
 */

/** The protocol versions this sidecar speaks. */
export const PROTOCOL_VERSION = 1;
export const MIN_PROTOCOL_VERSION = 1;

/** Most events in one forward frame. */
export const MAX_FORWARD_EVENTS = 1000;

/** One event for one group behind the receiver (ForwardedEvent). */
export interface ForwardedEvent {
  channel: string;
  group: string;
  /** The sequence at the origin. */
  sequence: number;
  attempt: number;
  /** The encoded weft.v1.Event, as the origin stored it. */
  bytes: Uint8Array;
}

/** A frame as read: forwards by hand, the rest as protobuf-es messages. */
export type IncomingFrame =
  | { case: "forward"; forwardId: bigint; events: ForwardedEvent[] }
  | { case: "message"; frame: PeerFrame["frame"] };

/** One group's outcomes, as writeOutcomes encodes them (sequences at the origin). */
export interface GroupOutcomes {
  channel: string;
  group: string;
  done: readonly number[];
  returned: readonly number[];
}

/** Encodes PeerFrame{stored: Stored{forward_id}}, as toBinary does. */
export function writeStored(forwardId: bigint): Uint8Array {
  const inner = forwardId === 0n ? 0 : 1 + varint64Size(forwardId);
  const out = Buffer.allocUnsafe(1 + varintSize(inner) + inner);
  let pos = 0;
  out[pos++] = (4 << 3) | WireType.LengthDelimited; // PeerFrame.stored
  pos = putVarint(out, pos, inner);
  if (forwardId !== 0n) {
    out[pos++] = (1 << 3) | WireType.Varint; // Stored.forward_id
    putVarint64(out, pos, forwardId);
  }
  return out;
}

/** Encodes PeerFrame{outcomes: Outcomes{groups}}, as toBinary does (packed sequences). */
export function writeOutcomes(groups: readonly GroupOutcomes[]): Uint8Array {
  const packed = (seqs: readonly number[]): number => {
    let n = 0;
    for (const s of seqs) n += varintSize(s);
    return n;
  };
  const field = (length: number): number => (length === 0 ? 0 : 1 + varintSize(length) + length);
  const parts = groups.map((g) => {
    const channel = Buffer.from(g.channel, "utf8");
    const group = Buffer.from(g.group, "utf8");
    const done = packed(g.done);
    const returned = packed(g.returned);
    return { g, channel, group, done, returned, size: field(channel.length) + field(group.length) + field(done) + field(returned) };
  });
  let outcomes = 0;
  for (const p of parts) outcomes += 1 + varintSize(p.size) + p.size;
  const out = Buffer.allocUnsafe(1 + varintSize(outcomes) + outcomes);
  let pos = 0;
  out[pos++] = (5 << 3) | WireType.LengthDelimited; // PeerFrame.outcomes
  pos = putVarint(out, pos, outcomes);
  const bytes = (tag: number, b: Buffer): void => {
    if (b.length === 0) return;
    out[pos++] = (tag << 3) | WireType.LengthDelimited;
    pos = putVarint(out, pos, b.length);
    pos += b.copy(out, pos);
  };
  const seqs = (tag: number, values: readonly number[], length: number): void => {
    if (length === 0) return;
    out[pos++] = (tag << 3) | WireType.LengthDelimited;
    pos = putVarint(out, pos, length);
    for (const v of values) pos = putVarint(out, pos, v);
  };
  for (const p of parts) {
    out[pos++] = (1 << 3) | WireType.LengthDelimited; // Outcomes.groups
    pos = putVarint(out, pos, p.size);
    bytes(1, p.channel);
    bytes(2, p.group);
    seqs(3, p.g.done, p.done);
    seqs(4, p.g.returned, p.returned);
  }
  return out;
}

/** Encodes any frame but a forward. */
export function writeFrame(frame: PeerFrame["frame"]): Uint8Array {
  return toBinary(PeerFrameSchema, create(PeerFrameSchema, { frame }));
}

/** Encodes PeerFrame{forward: Forward{forward_id, events}} into one buffer sized up front. */
export function writeForward(forwardId: number, events: readonly ForwardedEvent[]): Uint8Array {
  const names = events.map((e) => [Buffer.from(e.channel, "utf8"), Buffer.from(e.group, "utf8")] as const);
  const sizes = events.map((e, i) => {
    const [c, g] = names[i]!;
    return (
      1 + varintSize(c.length) + c.length +
      1 + varintSize(g.length) + g.length +
      1 + varintSize(e.sequence) +
      1 + varintSize(e.attempt) +
      1 + varintSize(e.bytes.length) + e.bytes.length
    );
  });
  let forward = 1 + varintSize(forwardId);
  for (const s of sizes) forward += 1 + varintSize(s) + s;
  const out = Buffer.allocUnsafe(1 + varintSize(forward) + forward);
  let pos = 0;
  out[pos++] = (3 << 3) | WireType.LengthDelimited; // PeerFrame.forward
  pos = putVarint(out, pos, forward);
  out[pos++] = (1 << 3) | WireType.Varint; // Forward.forward_id
  pos = putVarint(out, pos, forwardId);
  events.forEach((e, i) => {
    const [c, g] = names[i]!;
    out[pos++] = (2 << 3) | WireType.LengthDelimited; // Forward.events
    pos = putVarint(out, pos, sizes[i]!);
    out[pos++] = (1 << 3) | WireType.LengthDelimited;
    pos = putVarint(out, pos, c.length);
    pos += c.copy(out, pos);
    out[pos++] = (2 << 3) | WireType.LengthDelimited;
    pos = putVarint(out, pos, g.length);
    pos += g.copy(out, pos);
    out[pos++] = (3 << 3) | WireType.Varint;
    pos = putVarint(out, pos, e.sequence);
    out[pos++] = (4 << 3) | WireType.Varint;
    pos = putVarint(out, pos, e.attempt);
    out[pos++] = (5 << 3) | WireType.LengthDelimited;
    pos = putVarint(out, pos, e.bytes.length);
    out.set(e.bytes, pos);
    pos += e.bytes.length;
  });
  return out;
}

/**
 * Decodes a PeerFrame. When the frame's oneof ends up as `forward` it is read by hand,
 * keeping each event's bytes as a view; `stored` and `outcomes` by hand too, as long as they
 * are encoded as writeStored and writeOutcomes do; anything else through `fromBinary`. Protobuf's rules
 * hold either way: unknown fields are skipped, the last oneof member set wins, and a message
 * field that appears more than once is merged (a forward's events add up).
 * @throws Error saying what is wrong with the bytes.
 */
export function readFrame(bytes: Uint8Array): IncomingFrame {
  const reader = new BinaryReader(bytes);
  let forwards: Uint8Array[] = [];
  // The parts of the last stored or outcomes member, while each came as a message.
  let answers: Uint8Array[] | undefined = [];
  let last = 0;
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 3 && wire === WireType.LengthDelimited) {
      if (last !== 3) forwards = [];
      forwards.push(reader.bytes());
      last = 3;
    } else if ((field === 4 || field === 5) && wire === WireType.LengthDelimited) {
      const part = reader.bytes();
      if (answers && last !== field) answers = [];
      answers?.push(part);
      last = field;
    } else {
      if (field >= 1 && field <= 6) last = field;
      // A member that is not a message: fromBinary says what is wrong.
      if (field >= 1 && field <= 6 && wire !== WireType.LengthDelimited) answers = undefined;
      reader.skip(wire, field);
    }
  }
  if (last === 3) return readForward(forwards);
  // By hand when every part is as writeStored and writeOutcomes write it; else fromBinary,
  // which knows every other way to say the same (or the error).
  const value = answers && (last === 4 ? readStored(answers) : last === 5 ? readOutcomes(answers) : undefined);
  if (value) return { case: "message", frame: value };
  return { case: "message", frame: fromBinary(PeerFrameSchema, bytes).frame };
}

type Answer = Extract<PeerFrame["frame"], { case: "stored" | "outcomes" }>;

/** Stored from its parts (merged: the last forward_id wins); undefined for anything unusual. */
function readStored(parts: Uint8Array[]): Answer | undefined {
  let forwardId = 0n;
  for (const bytes of parts) {
    const reader = new BinaryReader(bytes);
    while (reader.pos < reader.len) {
      const [field, wire] = reader.tag();
      if (field !== 1 || wire !== WireType.Varint) return undefined;
      forwardId = BigInt(reader.uint64());
    }
  }
  return { case: "stored", value: { $typeName: "weft.v1.Stored", forwardId } };
}

/** Outcomes from its parts (merged: their groups add up); undefined for anything unusual. */
function readOutcomes(parts: Uint8Array[]): Answer | undefined {
  const groups: GroupOutcome[] = [];
  for (const bytes of parts) {
    const reader = new BinaryReader(bytes);
    while (reader.pos < reader.len) {
      const [field, wire] = reader.tag();
      if (field !== 1 || wire !== WireType.LengthDelimited) return undefined;
      const group = readGroupOutcome(reader.bytes());
      if (!group) return undefined;
      groups.push(group);
    }
  }
  return { case: "outcomes", value: { $typeName: "weft.v1.Outcomes", groups } };
}

function readGroupOutcome(bytes: Uint8Array): GroupOutcome | undefined {
  const reader = new BinaryReader(bytes);
  const g: GroupOutcome = { $typeName: "weft.v1.GroupOutcome", channel: "", group: "", done: [], returned: [], returnedAfterAttempts: [] };
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 3 || field === 4) {
      if (!readUint64s(reader, wire, field === 3 ? g.done : g.returned)) return undefined;
    } else if ((field === 1 || field === 2) && wire === WireType.LengthDelimited) {
      if (field === 1) g.channel = reader.string();
      else g.group = reader.string();
    } else return undefined;
  }
  return g;
}

function readForward(parts: Uint8Array[]): IncomingFrame {
  let forwardId = 0n;
  const events: ForwardedEvent[] = [];
  for (const bytes of parts) {
    const reader = new BinaryReader(bytes);
    while (reader.pos < reader.len) {
      const [field, wire] = reader.tag();
      if (field === 1) {
        expectWire(wire, WireType.Varint, "forward.forward_id");
        forwardId = BigInt(reader.uint64());
      } else if (field === 2) {
        expectWire(wire, WireType.LengthDelimited, "forward.events");
        if (events.length === MAX_FORWARD_EVENTS) throw new TooManyEvents();
        events.push(readForwardedEvent(reader.bytes()));
      } else {
        reader.skip(wire, field);
      }
    }
  }
  return { case: "forward", forwardId, events };
}

function readForwardedEvent(bytes: Uint8Array): ForwardedEvent {
  const reader = new BinaryReader(bytes);
  const e: ForwardedEvent = { channel: "", group: "", sequence: 0, attempt: 0, bytes: new Uint8Array(0) };
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    switch (field) {
      case 1:
        expectWire(wire, WireType.LengthDelimited, "channel");
        e.channel = reader.string();
        break;
      case 2:
        expectWire(wire, WireType.LengthDelimited, "group");
        e.group = reader.string();
        break;
      case 3: {
        expectWire(wire, WireType.Varint, "sequence");
        const s = BigInt(reader.uint64());
        e.sequence = s > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(s);
        break;
      }
      case 4:
        expectWire(wire, WireType.Varint, "attempt");
        e.attempt = reader.uint32();
        break;
      case 5:
        expectWire(wire, WireType.LengthDelimited, "event");
        e.bytes = reader.bytes();
        break;
      default:
        reader.skip(wire, field);
    }
  }
  return e;
}

function expectWire(actual: WireType, expected: WireType, field: string): void {
  if (actual !== expected) throw new Error(`${field} has wire type ${actual}; its declared type needs wire type ${expected}`);
}

/** A forward frame with more than MAX_FORWARD_EVENTS events. */
export class TooManyEvents extends Error {
  constructor() {
    super(`a forward carries at most ${MAX_FORWARD_EVENTS} events`);
  }
}
