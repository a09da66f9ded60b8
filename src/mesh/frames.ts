import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { type PeerFrame, PeerFrameSchema } from "../gen/weft/v1/peer_pb.js";
import { putVarint, varintSize } from "../grpc/varint.js";

/**
 * The frames of weft.v1.Peer.Link. Forwards carry event bytes and are written and read by
 * hand, so an event crosses a link byte for byte as its origin stored it (never decoded
 * into a message and encoded again); every other frame goes through protobuf-es.
 * Field numbers follow proto/weft/v1/peer.proto.
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
 * keeping each event's bytes as a view; anything else through `fromBinary`. Protobuf's rules
 * hold either way: unknown fields are skipped, the last oneof member set wins, and a message
 * field that appears more than once is merged (a forward's events add up).
 * @throws Error saying what is wrong with the bytes.
 */
export function readFrame(bytes: Uint8Array): IncomingFrame {
  const reader = new BinaryReader(bytes);
  let forwards: Uint8Array[] = [];
  let last = 0;
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 3 && wire === WireType.LengthDelimited) {
      if (last !== 3) forwards = [];
      forwards.push(reader.bytes());
      last = 3;
    } else {
      if (field >= 1 && field <= 6) last = field;
      reader.skip(wire, field);
    }
  }
  if (last === 3) return readForward(forwards);
  return { case: "message", frame: fromBinary(PeerFrameSchema, bytes).frame };
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
