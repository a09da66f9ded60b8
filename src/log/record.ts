/**
 * A stored event's value: a small header, then the event's protobuf bytes exactly as the
 * publisher sent them (never re-encoded).
 *
 *   u8 version (1) | f64 append time, Unix ms | u16 key length | key (UTF-8) | event bytes
 */
const VERSION = 1;
const HEADER = 1 + 8 + 2;

/** One event as the origin log holds it. */
export interface StoredEvent {
  readonly channel: string;
  readonly sequence: number;
  /** When the origin stored it, Unix ms. Non-decreasing along a channel. */
  readonly appendedAt: number;
  /** The ordering key, "" for none. */
  readonly key: string;
  /** The encoded weft.v1.Event. */
  readonly bytes: Uint8Array;
}

export function encodeRecord(appendedAt: number, key: string, event: Uint8Array): Uint8Array {
  const keyBytes = Buffer.from(key, "utf8");
  const out = Buffer.allocUnsafe(HEADER + keyBytes.length + event.length);
  out.writeUInt8(VERSION, 0);
  out.writeDoubleBE(appendedAt, 1);
  out.writeUInt16BE(keyBytes.length, 9);
  keyBytes.copy(out, HEADER);
  out.set(event, HEADER + keyBytes.length);
  return out;
}

export function decodeRecord(channel: string, sequence: number, value: Uint8Array): StoredEvent {
  const buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (buf.length < HEADER || buf.readUInt8(0) !== VERSION) {
    throw new Error(`corrupt record for ${channel}#${sequence}: unknown version or short header`);
  }
  const appendedAt = buf.readDoubleBE(1);
  const keyLength = buf.readUInt16BE(9);
  const key = buf.toString("utf8", HEADER, HEADER + keyLength);
  return { channel, sequence, appendedAt, key, bytes: buf.subarray(HEADER + keyLength) };
}

/** The append time of a record without decoding the rest. */
export function recordTime(value: Uint8Array): number {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength).readDoubleBE(1);
}

/** The stored size of a record, as counted against retention. */
export function recordSize(event: StoredEvent): number {
  return HEADER + Buffer.byteLength(event.key, "utf8") + event.bytes.length;
}
