/**
 * A stored event's value: a small header, then the event's protobuf bytes exactly as the
 * publisher sent them (never re-encoded).
 *
 *   u8 version (1) | f64 append time, Unix ms | u16 key length | key (UTF-8) | event bytes
 *
 * A relay copy (an event another sidecar forwarded) also names its origin:
 *
 *   u8 version (2) | f64 append time | u16 key length | key | u8 origin length | origin
 *   (UTF-8 "NODE/LOG": node id, then the origin log's id in hex) | f64 origin sequence |
 *   event bytes
 *
 * An event redriven to one group (see DeliveryEngine.appendForGroup) names that group, so
 * every other group of the channel skips it:
 *
 *   u8 version (3) | f64 append time | u16 key length | key | u8 group length | group
 *   (UTF-8) | event bytes
 */
const VERSION = 1;
const RELAY_VERSION = 2;
const GROUP_VERSION = 3;
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
  /** For a relay copy: the sidecar that published it and its sequence there. */
  readonly origin?: Origin | undefined;
  /** For an event addressed to one group (a redriven dead letter): that group; the others skip it. */
  readonly onlyGroup?: string | undefined;
}

/** Where a relay copy came from. */
export interface Origin {
  /** The origin's node id. */
  readonly node: string;
  /** The origin log's id, hex (a wiped log gets a new one). */
  readonly log: string;
  /** The event's sequence at the origin. */
  readonly sequence: number;
}

/**
 * The dedup identity of a relay copy: one per origin log, relay channel and origin
 * sequence. Unlike a publish's, it lasts as long as the copy (not a window): an origin
 * may forward an event again at any time while it waits for the outcome.
 */
export function relayIdentity(origin: Origin): { source: string; id: string } {
  return { source: `weft-relay:${origin.node}:${origin.log}`, id: String(origin.sequence) };
}

/**
 * The dedup identity of a dead letter redriven to `group`: one per dead letter (`from`,
 * "DEAD_LETTER_CHANNEL#SEQUENCE"), so a redrive repeated within the window is stored once.
 */
export function redriveIdentity(group: string, from: string): { source: string; id: string } {
  return { source: `weft-redrive:${group}`, id: from };
}

export function encodeRecord(appendedAt: number, key: string, event: Uint8Array, origin?: Origin, onlyGroup?: string): Uint8Array {
  if (onlyGroup !== undefined && !origin) return encodeGroupRecord(appendedAt, key, event, onlyGroup);
  const keyBytes = Buffer.from(key, "utf8");
  const originBytes = origin ? Buffer.from(`${origin.node}/${origin.log}`, "utf8") : undefined;
  const extra = originBytes ? 1 + originBytes.length + 8 : 0;
  const out = Buffer.allocUnsafe(HEADER + keyBytes.length + extra + event.length);
  out.writeUInt8(originBytes ? RELAY_VERSION : VERSION, 0);
  out.writeDoubleBE(appendedAt, 1);
  out.writeUInt16BE(keyBytes.length, 9);
  keyBytes.copy(out, HEADER);
  let pos = HEADER + keyBytes.length;
  if (originBytes) {
    out.writeUInt8(originBytes.length, pos);
    originBytes.copy(out, pos + 1);
    out.writeDoubleBE(origin!.sequence, pos + 1 + originBytes.length);
    pos += extra;
  }
  out.set(event, pos);
  return out;
}

function encodeGroupRecord(appendedAt: number, key: string, event: Uint8Array, group: string): Uint8Array {
  const keyBytes = Buffer.from(key, "utf8");
  const groupBytes = Buffer.from(group, "utf8");
  const out = Buffer.allocUnsafe(HEADER + keyBytes.length + 1 + groupBytes.length + event.length);
  out.writeUInt8(GROUP_VERSION, 0);
  out.writeDoubleBE(appendedAt, 1);
  out.writeUInt16BE(keyBytes.length, 9);
  keyBytes.copy(out, HEADER);
  let pos = HEADER + keyBytes.length;
  out.writeUInt8(groupBytes.length, pos);
  groupBytes.copy(out, pos + 1);
  pos += 1 + groupBytes.length;
  out.set(event, pos);
  return out;
}

/**
 * The StoredEvent of a record that encodeRecord just made from these arguments, without
 * reading the record back: what decodeRecord would return for it.
 */
export function storedEvent(channel: string, sequence: number, appendedAt: number, key: string, event: Uint8Array, record: Uint8Array, origin?: Origin, onlyGroup?: string): StoredEvent {
  const bytes = record.subarray(record.length - event.length);
  if (origin) return { channel, sequence, appendedAt, key, bytes, origin };
  if (onlyGroup !== undefined) return { channel, sequence, appendedAt, key, bytes, onlyGroup };
  return { channel, sequence, appendedAt, key, bytes };
}

export function decodeRecord(channel: string, sequence: number, value: Uint8Array): StoredEvent {
  const buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  const version = buf.length < HEADER ? 0 : buf.readUInt8(0);
  if (version !== VERSION && version !== RELAY_VERSION && version !== GROUP_VERSION) {
    throw new Error(`corrupt record for ${channel}#${sequence}: unknown version or short header`);
  }
  const appendedAt = buf.readDoubleBE(1);
  const keyLength = buf.readUInt16BE(9);
  const key = buf.toString("utf8", HEADER, HEADER + keyLength);
  let pos = HEADER + keyLength;
  if (version === VERSION) return { channel, sequence, appendedAt, key, bytes: buf.subarray(pos) };
  if (version === GROUP_VERSION) {
    const groupLength = buf.readUInt8(pos);
    const onlyGroup = buf.toString("utf8", pos + 1, pos + 1 + groupLength);
    return { channel, sequence, appendedAt, key, bytes: buf.subarray(pos + 1 + groupLength), onlyGroup };
  }
  const nodeLength = buf.readUInt8(pos);
  const [node = "", log = ""] = buf.toString("utf8", pos + 1, pos + 1 + nodeLength).split("/");
  const originSequence = buf.readDoubleBE(pos + 1 + nodeLength);
  pos += 1 + nodeLength + 8;
  return { channel, sequence, appendedAt, key, bytes: buf.subarray(pos), origin: { node, log, sequence: originSequence } };
}

/** The append time of a record without decoding the rest. */
export function recordTime(value: Uint8Array): number {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength).readDoubleBE(1);
}

/** The stored size of a record, as counted against retention. */
export function recordSize(event: StoredEvent): number {
  const origin = event.origin ? 1 + Buffer.byteLength(`${event.origin.node}/${event.origin.log}`, "utf8") + 8 : 0;
  const group = event.onlyGroup !== undefined && !event.origin ? 1 + Buffer.byteLength(event.onlyGroup, "utf8") : 0;
  return HEADER + Buffer.byteLength(event.key, "utf8") + origin + group + event.bytes.length;
}
