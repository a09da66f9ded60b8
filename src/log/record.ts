/**
 * A stored event's value: a small header, then the event's protobuf bytes exactly as the
 * publisher sent them (never re-encoded).
 *
 *   u8 version (1) | f64 append time, Unix ms | u16 key length | key (UTF-8) | event bytes
 *
 * An event redriven to one group (see DeliveryEngine.appendForGroup) names that group, so
 * every other group of the channel skips it:
 *
 *   u8 version (3) | f64 append time | u16 key length | key | u8 group length | group
 *   (UTF-8) | event bytes
 *
 * A copy of an event another sidecar published, held here for one group of the channel
 * (the mesh forwarded it for that group's members here), names its origin and that group
 * (every other group skips it), and the group's copy epoch when it was stored:
 *
 *   u8 version (4) | f64 append time | u16 key length | key | u8 group length | group |
 *   u8 origin length | origin (UTF-8 "NODE/LOG": node id, then the origin log's id in
 *   hex) | f64 origin sequence | f64 copy epoch | event bytes
 *
 * A copy forwarded after deliveries elsewhere (its origin's, or another peer's, that were
 * not acked) also holds how many attempts the group had made before; its deliveries here
 * count on from them:
 *
 *   u8 version (5) | as version 4 up to the copy epoch | u32 prior attempts | event bytes
 *
 * Version 2 (a copy that names its origin but no group) was written in the log channel
 * "CHANNEL~GROUP" by releases that kept copies apart; it is still read.
 */
const VERSION = 1;
const RELAY_VERSION = 2;
const GROUP_VERSION = 3;
const COPY_VERSION = 4;
const ATTEMPTED_COPY_VERSION = 5;
const HEADER = 1 + 8 + 2;

/** One event as the event log holds it. */
export interface StoredEvent {
  readonly channel: string;
  readonly sequence: number;
  /** When the origin stored it, Unix ms. Non-decreasing along a channel. */
  readonly appendedAt: number;
  /** The ordering key, "" for none. */
  readonly key: string;
  /** The encoded weft.v1.Event. */
  readonly bytes: Uint8Array;
  /** For a copy of an event another sidecar published: that sidecar and its sequence there. */
  readonly origin?: Origin | undefined;
  /**
   * For an event addressed to one group, the others skip it: a copy held for that group, or
   * a dead letter redriven to it.
   */
  readonly onlyGroup?: string | undefined;
  /** For a copy held for `onlyGroup`: the group's copy epoch when it was stored (see relayIdentity). */
  readonly copyEpoch?: number | undefined;
  /** For a copy: the group's attempts before it was forwarded here; 0 or undefined for none. */
  readonly priorAttempts?: number | undefined;
}

/** What a record holds besides the event and its key (see AppendEntry). */
export interface RecordAbout {
  readonly origin?: Origin | undefined;
  readonly onlyGroup?: string | undefined;
  readonly copyEpoch?: number | undefined;
  readonly priorAttempts?: number | undefined;
}

/** Where a copy came from. */
export interface Origin {
  /** The origin's node id. */
  readonly node: string;
  /** The origin log's id, hex (a wiped log gets a new one). */
  readonly log: string;
  /** The event's sequence at the origin. */
  readonly sequence: number;
}

/**
 * The dedup identity of a copy: one per origin log, origin sequence, group it is held for
 * and that group's copy epoch here, so a forward sent again is stored once. Unlike a
 * publish's, it lasts as long as the copy (not a window): an origin may forward an event
 * again at any time while it waits for the outcome. A group's copy epoch moves on when this
 * sidecar gives up the copies it held for the group (the origins took them back): a later
 * forward of one of them is then a new copy, never taken for the one given up.
 *
 * Without a group: the identity of a version 2 record, kept in its own log channel.
 */
export function relayIdentity(origin: Origin, group?: string, copyEpoch = 0): { source: string; id: string } {
  const source = `weft-relay:${origin.node}:${origin.log}`;
  return { source, id: group === undefined ? String(origin.sequence) : `${origin.sequence}:${group}:${copyEpoch}` };
}

/**
 * The dedup identity of a dead letter redriven to `group`: one per dead letter (`from`,
 * "DEAD_LETTER_CHANNEL#SEQUENCE"), so a redrive repeated within the window is stored once.
 */
export function redriveIdentity(group: string, from: string): { source: string; id: string } {
  return { source: `weft-redrive:${group}`, id: from };
}

export function encodeRecord(appendedAt: number, key: string, event: Uint8Array, about: RecordAbout = {}): Uint8Array {
  const { origin, onlyGroup, copyEpoch } = about;
  const prior = about.priorAttempts ?? 0;
  const keyBytes = Buffer.from(key, "utf8");
  const groupBytes = onlyGroup === undefined ? undefined : Buffer.from(onlyGroup, "utf8");
  const originBytes = origin ? Buffer.from(`${origin.node}/${origin.log}`, "utf8") : undefined;
  const copy = originBytes !== undefined && groupBytes !== undefined;
  const version = copy ? (prior > 0 ? ATTEMPTED_COPY_VERSION : COPY_VERSION) : originBytes ? RELAY_VERSION : groupBytes ? GROUP_VERSION : VERSION;
  const groupLength = groupBytes ? 1 + groupBytes.length : 0;
  const originLength = originBytes ? 1 + originBytes.length + 8 + (copy ? 8 : 0) + (prior > 0 ? 4 : 0) : 0;
  const out = Buffer.allocUnsafe(HEADER + keyBytes.length + groupLength + originLength + event.length);
  out.writeUInt8(version, 0);
  out.writeDoubleBE(appendedAt, 1);
  out.writeUInt16BE(keyBytes.length, 9);
  keyBytes.copy(out, HEADER);
  let pos = HEADER + keyBytes.length;
  if (groupBytes) {
    out.writeUInt8(groupBytes.length, pos);
    groupBytes.copy(out, pos + 1);
    pos += groupLength;
  }
  if (originBytes) {
    out.writeUInt8(originBytes.length, pos);
    originBytes.copy(out, pos + 1);
    out.writeDoubleBE(origin!.sequence, pos + 1 + originBytes.length);
    if (copy) out.writeDoubleBE(copyEpoch ?? 0, pos + 1 + originBytes.length + 8);
    if (prior > 0) out.writeUInt32BE(prior, pos + 1 + originBytes.length + 16);
    pos += originLength;
  }
  out.set(event, pos);
  return out;
}

/**
 * The StoredEvent of a record that encodeRecord just made from these arguments, without
 * reading the record back: what decodeRecord would return for it.
 */
export function storedEvent(
  channel: string,
  sequence: number,
  appendedAt: number,
  key: string,
  event: Uint8Array,
  record: Uint8Array,
  about: RecordAbout = {},
): StoredEvent {
  const { origin, onlyGroup, copyEpoch, priorAttempts } = about;
  const bytes = record.subarray(record.length - event.length);
  if (origin && onlyGroup !== undefined) {
    if (priorAttempts) return { channel, sequence, appendedAt, key, bytes, origin, onlyGroup, copyEpoch: copyEpoch ?? 0, priorAttempts };
    return { channel, sequence, appendedAt, key, bytes, origin, onlyGroup, copyEpoch: copyEpoch ?? 0 };
  }
  if (origin) return { channel, sequence, appendedAt, key, bytes, origin };
  if (onlyGroup !== undefined) return { channel, sequence, appendedAt, key, bytes, onlyGroup };
  return { channel, sequence, appendedAt, key, bytes };
}

export function decodeRecord(channel: string, sequence: number, value: Uint8Array): StoredEvent {
  const buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  const version = buf.length < HEADER ? 0 : buf.readUInt8(0);
  if (version < VERSION || version > ATTEMPTED_COPY_VERSION) {
    throw new Error(`corrupt record for ${channel}#${sequence}: unknown version or short header`);
  }
  const appendedAt = buf.readDoubleBE(1);
  const keyLength = buf.readUInt16BE(9);
  const key = buf.toString("utf8", HEADER, HEADER + keyLength);
  let pos = HEADER + keyLength;
  if (version === VERSION) return { channel, sequence, appendedAt, key, bytes: buf.subarray(pos) };
  let onlyGroup: string | undefined;
  if (version >= GROUP_VERSION) {
    const groupLength = buf.readUInt8(pos);
    onlyGroup = buf.toString("utf8", pos + 1, pos + 1 + groupLength);
    pos += 1 + groupLength;
    if (version === GROUP_VERSION) return { channel, sequence, appendedAt, key, bytes: buf.subarray(pos), onlyGroup };
  }
  const nodeLength = buf.readUInt8(pos);
  const [node = "", log = ""] = buf.toString("utf8", pos + 1, pos + 1 + nodeLength).split("/");
  const originSequence = buf.readDoubleBE(pos + 1 + nodeLength);
  pos += 1 + nodeLength + 8;
  const origin = { node, log, sequence: originSequence };
  if (version === RELAY_VERSION) return { channel, sequence, appendedAt, key, bytes: buf.subarray(pos), origin };
  const copyEpoch = buf.readDoubleBE(pos);
  if (version === COPY_VERSION) return { channel, sequence, appendedAt, key, bytes: buf.subarray(pos + 8), origin, onlyGroup, copyEpoch };
  const priorAttempts = buf.readUInt32BE(pos + 8);
  return { channel, sequence, appendedAt, key, bytes: buf.subarray(pos + 12), origin, onlyGroup, copyEpoch, priorAttempts };
}

/** The append time of a record without decoding the rest. */
export function recordTime(value: Uint8Array): number {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength).readDoubleBE(1);
}

/** The stored size of a record, as counted against retention. */
export function recordSize(event: StoredEvent): number {
  const origin = event.origin ? 1 + Buffer.byteLength(`${event.origin.node}/${event.origin.log}`, "utf8") + 8 : 0;
  const group = event.onlyGroup !== undefined ? 1 + Buffer.byteLength(event.onlyGroup, "utf8") : 0;
  const epoch = event.origin && event.onlyGroup !== undefined ? 8 : 0;
  const prior = event.priorAttempts ? 4 : 0;
  return HEADER + Buffer.byteLength(event.key, "utf8") + origin + group + epoch + prior + event.bytes.length;
}
