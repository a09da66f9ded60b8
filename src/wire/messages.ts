import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Reason, invalid } from "../contract/errors.js";
import { type Event, EventSchema } from "../gen/weft/v1/event_pb.js";
import { type Delivery, type SubscribeResponse, SubscribeResponseSchema } from "../gen/weft/v1/mesh_pb.js";
import { putInt64, putVarint, putVarint64, varint64Size, varintSize } from "./varint.js";
import { readEvent } from "./event-reader.js";

export { readEvent } from "./event-reader.js";
export { type EventFields, writeEvent } from "./event-writer.js";

/**
 * Hand-written codecs for the hot messages, so that event bytes travel from the publisher's
 * request into the log and out to subscribers without being re-encoded, and are checked
 * without the cost of reflection.
 * Field numbers follow proto/weft/v1/mesh.proto.
 */

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
