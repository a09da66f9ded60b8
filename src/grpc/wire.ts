import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Reason, invalid } from "../contract/errors.js";
import type { OutgoingDelivery } from "../delivery/types.js";

/**
 * Hand-written codecs for the two hot messages, so that event bytes travel from the
 * publisher's request into the log and out to subscribers without being re-encoded.
 * Field numbers follow proto/weft/v1/mesh.proto.
 */

/**
 * Checks that every known field of an encoded weft.v1.Event uses its declared wire type.
 * protobuf-es decodes a string field sent as a varint without complaint, but other
 * languages' parsers refuse such bytes; since the log keeps the bytes as received, they must
 * be valid protobuf for every subscriber. Unknown fields are allowed (newer publishers).
 * @returns a description of the first problem, or undefined when the bytes are well-formed.
 */
export function eventWireProblem(bytes: Uint8Array): string | undefined {
  return fieldsProblem(bytes, (field) => (field >= 1 && field <= 10 ? WireType.LengthDelimited : undefined), (field, value) => {
    if (field === 5) return fieldsProblem(value, (f) => (f === 1 || f === 2 ? WireType.Varint : undefined), () => undefined, "time");
    if (field === 8) return fieldsProblem(value, (f) => (f === 1 || f === 2 ? WireType.LengthDelimited : undefined), () => undefined, "attributes");
    return undefined;
  }, "event");
}

function fieldsProblem(
  bytes: Uint8Array,
  expected: (field: number) => WireType | undefined,
  nested: (field: number, value: Uint8Array) => string | undefined,
  where: string,
): string | undefined {
  const reader = new BinaryReader(bytes);
  try {
    while (reader.pos < reader.len) {
      const [field, wire] = reader.tag();
      const want = expected(field);
      if (want !== undefined && wire !== want) {
        return `${where} field ${field} has wire type ${wire}; its declared type needs wire type ${want}`;
      }
      if (wire === WireType.LengthDelimited && want !== undefined) {
        const problem = nested(field, reader.bytes());
        if (problem) return problem;
      } else {
        reader.skip(wire, field);
      }
    }
  } catch (e) {
    return `${where} is not valid protobuf (${(e as Error).message})`;
  }
  return undefined;
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
