import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { putVarint, varintSize } from "./varint.js";

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
