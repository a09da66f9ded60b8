import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { type Timestamp, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Reason, invalid } from "../contract/errors.js";
import { type Event, EventSchema } from "../gen/weft/v1/event_pb.js";
import { type Delivery, type SubscribeResponse, SubscribeResponseSchema } from "../gen/weft/v1/mesh_pb.js";
import { putInt64, putVarint, putVarint64, varint64Size, varintSize } from "./varint.js";

/**
 * Hand-written codecs for the hot messages, so that event bytes travel from the publisher's
 * request into the log and out to subscribers without being re-encoded, and are checked
 * without the cost of reflection.
 * Field numbers follow proto/weft/v1/mesh.proto.
 */

/**
 * Decodes an encoded weft.v1.Event for validation, in one pass, without the reflection of
 * `fromBinary` (which costs more than storing the event). It agrees with `fromBinary` on the
 * result: the last value of a repeated scalar wins, repeated `time` fields merge, a repeated
 * attribute name keeps its last value, unknown fields of the event and its time are skipped
 * (newer publishers).
 *
 * It refuses more than `fromBinary` where other languages would: every known field must use
 * its declared wire type (protobuf-es takes a string sent as a varint without complaint,
 * but other languages' parsers refuse such bytes, and the log keeps the bytes as received,
 * so they must be valid protobuf for every subscriber), and strings must be valid UTF-8.
 * `data` is a view of `bytes`, not a copy.
 * @throws Error saying what is wrong with the bytes.
 */
export function readEvent(bytes: Uint8Array): Event {
  const event: Event = {
    $typeName: "weft.v1.Event",
    id: "",
    source: "",
    type: "",
    subject: "",
    datacontenttype: "",
    data: EMPTY,
    // No prototype: an attribute named "__proto__" is an attribute like any other (and refused by its name).
    attributes: Object.create(null) as Record<string, string>,
    channel: "",
    key: "",
  };
  // Positions in `bytes`, not a BinaryReader: its tags are arrays and its fields views, a
  // few objects per field of every event on the loop that stores them.
  const c: Cursor = { buf: bytes, pos: 0, end: bytes.length };
  while (c.pos < c.end) {
    const tagAt = c.pos;
    const tag = readTag(c);
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field > 10) {
      skipField(c, tagAt);
      continue;
    }
    if (wire !== WireType.LengthDelimited) {
      throw new Error(`event field ${field} has wire type ${wire}; its declared type needs wire type ${WireType.LengthDelimited}`);
    }
    const end = lengthDelimited(c);
    const start = c.pos;
    c.pos = end;
    switch (field) {
      case 1: event.id = utf8(bytes, start, end, "id"); break;
      case 2: event.source = utf8(bytes, start, end, "source"); break;
      case 3: event.type = utf8(bytes, start, end, "type"); break;
      case 4: event.subject = utf8(bytes, start, end, "subject"); break;
      case 5: event.time = readTimestamp(bytes.subarray(start, end), event.time); break;
      case 6: event.datacontenttype = utf8(bytes, start, end, "datacontenttype"); break;
      case 7: event.data = bytes.subarray(start, end); break;
      case 8: readAttribute({ buf: bytes, pos: start, end }, event.attributes); break;
      case 9: event.channel = utf8(bytes, start, end, "channel"); break;
      case 10: event.key = utf8(bytes, start, end, "key"); break;
    }
  }
  return event;
}

const EMPTY = new Uint8Array(0);
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Where reading one message (or a part of it, `end` exclusive) has got to. */
interface Cursor {
  readonly buf: Uint8Array;
  pos: number;
  readonly end: number;
}

/** A varint's low 32 bits, as protobuf reads a uint32 (up to 10 bytes). */
function varint32(c: Cursor): number {
  let result = 0;
  for (let shift = 0; shift < 70; shift += 7) {
    if (c.pos >= c.end) throw new RangeError("premature EOF");
    const b = c.buf[c.pos++]!;
    if (shift < 32) result |= (b & 0x7f) << shift;
    if ((b & 0x80) === 0) return result >>> 0;
  }
  throw new Error("invalid varint");
}

/** A field's tag, checked as protobuf checks it. */
function readTag(c: Cursor): number {
  const start = c.pos;
  const tag = varint32(c);
  const bytesRead = c.pos - start;
  if (bytesRead > 5 || (bytesRead === 5 && c.buf[c.pos - 1]! > 0x0f)) throw new Error("illegal tag: varint overflows uint32");
  const field = tag >>> 3;
  const wire = tag & 7;
  if (field <= 0 || wire > 5) throw new Error(`illegal tag: field no ${field} wire type ${wire}`);
  return tag;
}

/** Reads a length-delimited field's length; returns where its value ends (the value starts at c.pos). */
function lengthDelimited(c: Cursor): number {
  const length = varint32(c);
  const end = c.pos + length;
  if (end > c.end) throw new RangeError("premature EOF");
  return end;
}

/** Skips an unknown field whose tag starts at `tagAt` (groups included), as protobuf-es does. */
function skipField(c: Cursor, tagAt: number): void {
  const reader = new BinaryReader(c.buf.subarray(tagAt, c.end));
  const [field, wire] = reader.tag();
  reader.skip(wire, field);
  c.pos = tagAt + reader.pos;
}

/** UTF-8 text of a string field's bytes [start, end). @throws Error when they are not UTF-8. */
function utf8(buf: Uint8Array, start: number, end: number, field: string): string {
  // Most fields are short ASCII, for which a byte scan beats the decoder's call overhead.
  let ascii = true;
  for (let i = start; i < end; i++) {
    if (buf[i]! > 0x7f) {
      ascii = false;
      break;
    }
  }
  if (ascii) {
    // The bytes are most often a Buffer already (a view of the received message).
    if (Buffer.isBuffer(buf)) return buf.toString("latin1", start, end);
    return Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString("latin1");
  }
  try {
    return strictUtf8.decode(buf.subarray(start, end));
  } catch {
    throw new Error(`event field ${field} is not valid UTF-8`);
  }
}

/** Merges an encoded google.protobuf.Timestamp into `into` (a repeated message field merges). */
function readTimestamp(bytes: Uint8Array, into: Timestamp | undefined): Timestamp {
  const time: Timestamp = into ?? { $typeName: "google.protobuf.Timestamp", seconds: 0n, nanos: 0 };
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field === 1 || field === 2) {
      if (wire !== WireType.Varint) {
        throw new Error(`time field ${field} has wire type ${wire}; its declared type needs wire type ${WireType.Varint}`);
      }
      if (field === 1) time.seconds = BigInt(reader.int64());
      else time.nanos = reader.int32();
    } else {
      reader.skip(wire, field);
    }
  }
  return time;
}

/**
 * Reads one encoded attributes map entry into `into`; a missing key or value is "". Other
 * fields in an entry are refused, not skipped: protobuf-es (the TypeScript client) misreads
 * such an entry, so storing it would hand subscribers an event they cannot decode.
 */
function readAttribute(c: Cursor, into: Record<string, string>): void {
  let key = "";
  let value = "";
  while (c.pos < c.end) {
    const tag = readTag(c);
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field !== 1 && field !== 2) throw new Error(`attributes entry has field ${field}; a map entry has only key (1) and value (2)`);
    if (wire !== WireType.LengthDelimited) {
      throw new Error(`attributes field ${field} has wire type ${wire}; its declared type needs wire type ${WireType.LengthDelimited}`);
    }
    const end = lengthDelimited(c);
    if (field === 1) key = utf8(c.buf, c.pos, end, "attributes key");
    else value = utf8(c.buf, c.pos, end, "attributes value");
    c.pos = end;
  }
  into[key] = value;
}

/** A PublishRequest with each event still in its received bytes. */
export interface RawPublishRequest {
  batchId: bigint;
  events: Uint8Array[];
}

/**
 * Splits an encoded weft.v1.PublishRequest into its batch id and raw event bytes.
 * @throws WeftError INVALID_ARGUMENT (MALFORMED_MESSAGE) when the bytes are not a PublishRequest.
 */
export function readPublishRequest(bytes: Uint8Array, maxEvents: number): { batchId: bigint; events: Uint8Array[]; tooMany: boolean } {
  const reader = new BinaryReader(bytes);
  let batchId = 0n;
  const events: Uint8Array[] = [];
  let count = 0;
  try {
    while (reader.pos < reader.len) {
      const [field, wire] = reader.tag();
      if (field === 1 && wire === WireType.Varint) {
        batchId = BigInt(reader.uint64());
      } else if (field === 2 && wire === WireType.LengthDelimited) {
        count++;
        const event = reader.bytes();
        if (count <= maxEvents) events.push(event);
      } else {
        reader.skip(wire, field);
      }
    }
  } catch (e) {
    throw invalid(
      Reason.MALFORMED_MESSAGE,
      "PublishRequest",
      `the request is not a valid weft.v1.PublishRequest (${(e as Error).message})`,
    );
  }
  return { batchId, events, tooMany: count > maxEvents };
}

/** What a Delivery message is written from: one delivery of an event as stored. */
export interface DeliveryFields {
  readonly deliveryId: number;
  readonly attempt: number;
  /** Unix ms after which the delivery is redelivered unless acked or extended. */
  readonly deadline: number;
  readonly event: {
    /** The encoded weft.v1.Event, as stored. */
    readonly bytes: Uint8Array;
    readonly sequence: number;
    /** For a relay copy: its sequence at the origin, which the subscriber is told. */
    readonly origin?: { readonly sequence: number } | undefined;
  };
}

/**
 * Encodes SubscribeResponse messages carrying `deliveries`, each message at most about
 * `maxBytes` (a single larger delivery still goes, alone).
 *
 * Written by hand into one buffer per message, sized up front: BinaryWriter's fork and join
 * would copy every event's bytes twice more, on the loop that delivers.
 * Every field is written, zero or not; `fromBinary` reads the same.
 */
export function writeDeliveries(deliveries: readonly DeliveryFields[], maxBytes: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const sizes = deliveries.map(deliverySize);
  let from = 0;
  while (from < deliveries.length) {
    // Deliveries.deliveries entries: tag, length, the Delivery.
    let content = 0;
    let to = from;
    do {
      content += 1 + varintSize(sizes[to]!) + sizes[to]!;
      to++;
    } while (to < deliveries.length && content + 1 + varintSize(sizes[to]!) + sizes[to]! <= maxBytes);
    const message = Buffer.allocUnsafe(1 + varintSize(content) + content);
    let pos = 0;
    message[pos++] = (2 << 3) | WireType.LengthDelimited; // SubscribeResponse.deliveries
    pos = putVarint(message, pos, content);
    for (let i = from; i < to; i++) {
      const d = deliveries[i]!;
      message[pos++] = (1 << 3) | WireType.LengthDelimited; // Deliveries.deliveries
      pos = putVarint(message, pos, sizes[i]!);
      message[pos++] = (1 << 3) | WireType.Varint;
      pos = putVarint(message, pos, d.deliveryId);
      message[pos++] = (2 << 3) | WireType.Varint;
      pos = putVarint(message, pos, originSequence(d));
      message[pos++] = (3 << 3) | WireType.Varint;
      pos = putVarint(message, pos, d.attempt);
      message[pos++] = (4 << 3) | WireType.LengthDelimited;
      pos = putVarint(message, pos, d.event.bytes.length);
      message.set(d.event.bytes, pos);
      pos += d.event.bytes.length;
      message[pos++] = (5 << 3) | WireType.Varint;
      pos = putInt64(message, pos, Math.round(d.deadline));
    }
    out.push(message);
    from = to;
  }
  return out;
}

/** Delivery.sequence: the sequence at the event's origin, for a relay copy too. */
const originSequence = (d: DeliveryFields): number => d.event.origin?.sequence ?? d.event.sequence;

/** Encoded size of a Delivery message (without its own tag and length). */
function deliverySize(d: DeliveryFields): number {
  const deadline = Math.round(d.deadline);
  return (
    5 + // the five tags
    varintSize(d.deliveryId) +
    varintSize(originSequence(d)) +
    varintSize(d.attempt) +
    varintSize(d.event.bytes.length) +
    d.event.bytes.length +
    (deadline < 0 ? 10 : varintSize(deadline))
  );
}

/**
 * Decodes a weft.v1.SubscribeResponse for the client, to the same message `fromBinary`
 * gives. Deliveries are read by hand and their events with `readEvent`: through
 * `fromBinary` the reflection would be most of a subscriber's CPU. Anything but a plain
 * batch of deliveries (the `subscribed` confirmation, unknown or repeated fields) goes to
 * `fromBinary`, and so does an event `readEvent` refuses (it is stricter), so the client
 * accepts exactly what `fromBinary` accepts.
 * @throws Error when the bytes are not a SubscribeResponse.
 */
export function readSubscribeResponse(bytes: Uint8Array): SubscribeResponse {
  const deliveries = readDeliveries(bytes);
  if (!deliveries) return fromBinary(SubscribeResponseSchema, bytes);
  return {
    $typeName: "weft.v1.SubscribeResponse",
    response: { case: "deliveries", value: { $typeName: "weft.v1.Deliveries", deliveries } },
  };
}

/** The deliveries of a response that holds only them; undefined for anything else. */
function readDeliveries(bytes: Uint8Array): Delivery[] | undefined {
  const reader = new BinaryReader(bytes);
  if (reader.len === 0) return undefined;
  const [field, wire] = reader.tag();
  if (field !== 2 || wire !== WireType.LengthDelimited) return undefined; // SubscribeResponse.deliveries
  const batch = reader.bytes();
  if (reader.pos !== reader.len) return undefined; // more than one field: let fromBinary merge
  const deliveries: Delivery[] = [];
  const inner = new BinaryReader(batch);
  while (inner.pos < inner.len) {
    const [f, w] = inner.tag();
    if (f !== 1 || w !== WireType.LengthDelimited) return undefined; // Deliveries.deliveries
    const delivery = readDelivery(inner.bytes());
    if (!delivery) return undefined;
    deliveries.push(delivery);
  }
  return deliveries;
}

/** One Delivery as the sidecar writes it (each field once, in order); undefined otherwise. */
function readDelivery(bytes: Uint8Array): Delivery | undefined {
  const d: Delivery = { $typeName: "weft.v1.Delivery", deliveryId: 0n, sequence: 0n, attempt: 0, event: undefined, deadlineUnixMs: 0n };
  const reader = new BinaryReader(bytes);
  let last = 0;
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    // A field out of order or repeated would need merging rules: fromBinary has them.
    if (field <= last || field > 5) return undefined;
    last = field;
    if (wire !== (field === 4 ? WireType.LengthDelimited : WireType.Varint)) return undefined;
    switch (field) {
      case 1: d.deliveryId = BigInt(reader.uint64()); break;
      case 2: d.sequence = BigInt(reader.uint64()); break;
      case 3: d.attempt = reader.uint32(); break;
      case 4: d.event = readDeliveredEvent(reader.bytes()); break;
      case 5: d.deadlineUnixMs = BigInt(reader.int64()); break;
    }
  }
  return d;
}

function readDeliveredEvent(bytes: Uint8Array): Event {
  try {
    return readEvent(bytes);
  } catch {
    return fromBinary(EventSchema, bytes);
  }
}

/**
 * The delivery ids of a SubscribeRequest that is an ack and nothing else (its one member
 * `ack`, the ids packed or not), as every generated client writes it; undefined for anything
 * else, which the caller reads with fromBinary (and its errors). At a low rate a subscriber
 * acks each delivery alone, and fromBinary's reflection allocated more than the rest of
 * the ack's handling.
 */
export function readAckRequest(bytes: Uint8Array): bigint[] | undefined {
  try {
    const reader = new BinaryReader(bytes);
    if (reader.len === 0) return undefined;
    const [field, wire] = reader.tag();
    if (field !== 2 || wire !== WireType.LengthDelimited) return undefined;
    const ack = new BinaryReader(reader.bytes());
    if (reader.pos !== reader.len) return undefined;
    const ids: bigint[] = [];
    while (ack.pos < ack.len) {
      const [f, w] = ack.tag();
      if (f !== 1 || !readUint64s(ack, w, ids)) return undefined;
    }
    return ids;
  } catch {
    return undefined;
  }
}

/**
 * Reads one occurrence of a `repeated uint64` field whose tag was just read (`wire`: packed,
 * or one value) into `into`; false for another wire type.
 */
export function readUint64s(reader: BinaryReader, wire: WireType, into: bigint[]): boolean {
  if (wire === WireType.Varint) {
    into.push(BigInt(reader.uint64()));
    return true;
  }
  if (wire !== WireType.LengthDelimited) return false;
  const packed = new BinaryReader(reader.bytes());
  while (packed.pos < packed.len) into.push(BigInt(packed.uint64()));
  return true;
}

/** One event's outcome in a PublishResponse: stored at `sequence`, or refused. */
export type RawPublishResult =
  | { sequence: number; duplicate: boolean }
  | { error: { code: number; reason: string; field: string; message: string } };

/**
 * Encodes a weft.v1.PublishResponse. One where every event was stored (the usual answer, one
 * per publish at a low rate) is sized up front and written into one buffer, without the
 * chunks and forks BinaryWriter would allocate for it.
 */
export function writePublishResponse(batchId: bigint, results: readonly RawPublishResult[]): Uint8Array {
  let size = batchId === 0n ? 0 : 1 + varint64Size(batchId);
  for (const r of results) {
    if ("error" in r) return writePublishResponseWithErrors(batchId, results);
    const inner = storedSize(r);
    size += 1 + varintSize(inner) + inner;
  }
  const out = Buffer.allocUnsafe(size);
  let pos = 0;
  if (batchId !== 0n) {
    out[pos++] = (1 << 3) | WireType.Varint; // batch_id
    pos = putVarint64(out, pos, batchId);
  }
  for (const r of results as readonly { sequence: number; duplicate: boolean }[]) {
    out[pos++] = (2 << 3) | WireType.LengthDelimited; // results
    pos = putVarint(out, pos, storedSize(r));
    if (r.sequence !== 0) {
      out[pos++] = (1 << 3) | WireType.Varint; // PublishResult.sequence
      pos = putVarint(out, pos, r.sequence);
    }
    if (r.duplicate) {
      out[pos++] = (2 << 3) | WireType.Varint; // PublishResult.duplicate
      out[pos++] = 1;
    }
  }
  return out;
}

/** Bytes of a PublishResult for a stored event. */
function storedSize(r: { sequence: number; duplicate: boolean }): number {
  return (r.sequence === 0 ? 0 : 1 + varintSize(r.sequence)) + (r.duplicate ? 2 : 0);
}

function writePublishResponseWithErrors(batchId: bigint, results: readonly RawPublishResult[]): Uint8Array {
  const w = new BinaryWriter();
  if (batchId !== 0n) w.tag(1, WireType.Varint).uint64(batchId);
  for (const r of results) {
    w.tag(2, WireType.LengthDelimited).fork();
    if ("error" in r) {
      w.tag(3, WireType.LengthDelimited)
        .fork()
        .tag(1, WireType.Varint)
        .uint32(r.error.code)
        .tag(2, WireType.LengthDelimited)
        .string(r.error.reason)
        .tag(3, WireType.LengthDelimited)
        .string(r.error.field)
        .tag(4, WireType.LengthDelimited)
        .string(r.error.message)
        .join();
    } else {
      w.tag(1, WireType.Varint).uint64(r.sequence);
      if (r.duplicate) w.tag(2, WireType.Varint).bool(true);
    }
    w.join();
  }
  return w.finish();
}

// ---- client side: what the publisher sends ----

/**
 * Encodes a weft.v1.PublishRequest from events encoded once, when they were published:
 * the batch id, then each event as a length-delimited field 2, copied into one buffer.
 */
export function writePublishRequest(batchId: bigint, events: readonly Uint8Array[]): Uint8Array {
  let size = 1 + varint64Size(batchId);
  for (const e of events) size += 1 + varintSize(e.length) + e.length;
  const out = Buffer.allocUnsafe(size);
  out[0] = 0x08; // field 1 (batch_id), varint
  let at = putVarint64(out, 1, batchId);
  for (const e of events) {
    out[at++] = 0x12; // field 2 (events), length-delimited
    at = putVarint(out, at, e.length);
    out.set(e, at);
    at += e.length;
  }
  return out;
}

/** The fields of a weft.v1.Event as they go on the wire; strings empty when unset. */
export interface EventFields {
  id: string;
  source: string;
  type: string;
  subject: string;
  time: Date | undefined;
  datacontenttype: string;
  data: Uint8Array;
  attributes: Record<string, string>;
  channel: string;
  key: string;
}

/**
 * Encodes a weft.v1.Event (proto/weft/v1/event.proto) straight from its fields, in field
 * order, leaving out empty strings and bytes as proto3 does. Building a message with
 * `create` and encoding it with `toBinary` cost more than everything else the client does
 * per event; the result is the same bytes. No closures inside: under tsx (esbuild's
 * keepNames) each closure made per event costs a defineProperty call.
 */
export function writeEvent(e: EventFields): Uint8Array {
  const lengths = [e.id, e.source, e.type, e.subject, e.datacontenttype, e.channel, e.key].map(utf8Length);
  let size = 0;
  for (const length of lengths) if (length > 0) size += fieldSize(length);
  let time: Uint8Array | undefined;
  if (e.time) {
    const t = timestampFromDate(e.time);
    const w = new BinaryWriter();
    if (t.seconds !== 0n) w.tag(1, WireType.Varint).int64(t.seconds);
    if (t.nanos !== 0) w.tag(2, WireType.Varint).int32(t.nanos);
    time = w.finish();
    size += fieldSize(time.length);
  }
  if (e.data.length > 0) size += fieldSize(e.data.length);
  const attributes = Object.entries(e.attributes);
  for (const [name, value] of attributes) size += fieldSize(entrySize(name, value));

  const out = Buffer.allocUnsafe(size);
  let at = 0;
  at = putString(out, at, 1, e.id, lengths[0]!);
  at = putString(out, at, 2, e.source, lengths[1]!);
  at = putString(out, at, 3, e.type, lengths[2]!);
  at = putString(out, at, 4, e.subject, lengths[3]!);
  if (time) at = putBytes(out, at, 5, time);
  at = putString(out, at, 6, e.datacontenttype, lengths[4]!);
  if (e.data.length > 0) at = putBytes(out, at, 7, e.data);
  for (const [name, value] of attributes) {
    out[at++] = (8 << 3) | WireType.LengthDelimited;
    at = putVarint(out, at, entrySize(name, value));
    // A map entry carries its key and value even when empty, as toBinary writes it.
    at = putString(out, at, 1, name, utf8Length(name), true);
    at = putString(out, at, 2, value, utf8Length(value), true);
  }
  at = putString(out, at, 9, e.channel, lengths[5]!);
  at = putString(out, at, 10, e.key, lengths[6]!);
  return out;
}

const utf8Length = (s: string): number => Buffer.byteLength(s, "utf8");

/** The size of a length-delimited field (tag, length, body) with a body of `length` bytes. */
const fieldSize = (length: number): number => 1 + varintSize(length) + length;

const entrySize = (name: string, value: string): number => fieldSize(utf8Length(name)) + fieldSize(utf8Length(value));

/** Writes a string field unless it is empty (or `always`); returns the position after it. */
function putString(out: Buffer, at: number, field: number, value: string, length: number, always = false): number {
  if (length === 0 && !always) return at;
  out[at++] = (field << 3) | WireType.LengthDelimited;
  at = putVarint(out, at, length);
  return at + out.write(value, at, "utf8");
}

function putBytes(out: Buffer, at: number, field: number, value: Uint8Array): number {
  out[at++] = (field << 3) | WireType.LengthDelimited;
  at = putVarint(out, at, value.length);
  out.set(value, at);
  return at + value.length;
}
