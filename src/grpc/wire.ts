import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { Reason, invalid } from "../contract/errors.js";
import type { OutgoingDelivery } from "../delivery/types.js";
import type { Event } from "../gen/weft/v1/event_pb.js";

/**
 * Hand-written codecs for the hot messages, so that event bytes travel from the publisher's
 * request into the log and out to subscribers without being re-encoded, and are checked
 * without the cost of reflection.
 * Field numbers follow proto/weft/v1/mesh.proto.
 */

/**
 * Decodes an encoded weft.v1.Event for validation, in one pass, without the reflection of
 * `fromBinary` (which cost more than storing the event). It agrees with `fromBinary` on the
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
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field > 10) {
      reader.skip(wire, field);
      continue;
    }
    if (wire !== WireType.LengthDelimited) {
      throw new Error(`event field ${field} has wire type ${wire}; its declared type needs wire type ${WireType.LengthDelimited}`);
    }
    const value = reader.bytes();
    switch (field) {
      case 1: event.id = utf8(value, "id"); break;
      case 2: event.source = utf8(value, "source"); break;
      case 3: event.type = utf8(value, "type"); break;
      case 4: event.subject = utf8(value, "subject"); break;
      case 5: event.time = readTimestamp(value, event.time); break;
      case 6: event.datacontenttype = utf8(value, "datacontenttype"); break;
      case 7: event.data = value; break;
      case 8: readAttribute(value, event.attributes); break;
      case 9: event.channel = utf8(value, "channel"); break;
      case 10: event.key = utf8(value, "key"); break;
    }
  }
  return event;
}

const EMPTY = new Uint8Array(0);
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** UTF-8 text of a string field. @throws Error when the bytes are not UTF-8. */
function utf8(bytes: Uint8Array, field: string): string {
  // Most fields are short ASCII, for which a byte scan beats the decoder's call overhead.
  let ascii = true;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i]! > 0x7f) {
      ascii = false;
      break;
    }
  }
  if (ascii) return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
  try {
    return strictUtf8.decode(bytes);
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
function readAttribute(bytes: Uint8Array, into: Record<string, string>): void {
  const reader = new BinaryReader(bytes);
  let key = "";
  let value = "";
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (field !== 1 && field !== 2) throw new Error(`attributes entry has field ${field}; a map entry has only key (1) and value (2)`);
    if (wire !== WireType.LengthDelimited) {
      throw new Error(`attributes field ${field} has wire type ${wire}; its declared type needs wire type ${WireType.LengthDelimited}`);
    }
    if (field === 1) key = utf8(reader.bytes(), "attributes key");
    else value = utf8(reader.bytes(), "attributes value");
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

/**
 * Encodes SubscribeResponse messages carrying `deliveries`, each message at most about
 * `maxBytes` (a single larger delivery still goes, alone).
 */
export function writeDeliveries(deliveries: readonly OutgoingDelivery[], maxBytes: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let writer = new BinaryWriter();
  let size = 0;
  let open = false;
  const close = (): void => {
    if (!open) return;
    writer.join();
    out.push(writer.finish());
    writer = new BinaryWriter();
    size = 0;
    open = false;
  };
  for (const d of deliveries) {
    const approx = d.event.bytes.length + 40;
    if (open && size + approx > maxBytes) close();
    if (!open) {
      writer.tag(2, WireType.LengthDelimited).fork(); // SubscribeResponse.deliveries
      open = true;
    }
    writer
      .tag(1, WireType.LengthDelimited) // Deliveries.deliveries
      .fork()
      .tag(1, WireType.Varint)
      .uint64(d.deliveryId)
      .tag(2, WireType.Varint)
      .uint64(d.event.sequence)
      .tag(3, WireType.Varint)
      .uint32(d.attempt)
      .tag(4, WireType.LengthDelimited)
      .bytes(d.event.bytes)
      .tag(5, WireType.Varint)
      .int64(Math.round(d.deadline))
      .join();
    size += approx;
  }
  close();
  return out;
}

/** One event's outcome in a PublishResponse: stored at `sequence`, or refused. */
export type RawPublishResult =
  | { sequence: number; duplicate: boolean }
  | { error: { code: number; reason: string; field: string; message: string } };

/** Encodes a weft.v1.PublishResponse. */
export function writePublishResponse(batchId: bigint, results: readonly RawPublishResult[]): Uint8Array {
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
