import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { ClassicLevel } from "classic-level";
import { CLOSED_KEY, dedupPrefixes, eventKey, eventPrefix, headKey, prefixEnd, seqOfKey } from "./keys.js";
import { type StoredEvent, decodeRecord, recordTime } from "./record.js";
import { TailCache } from "./tail-cache.js";
import { type ChannelHead, type Db, LEVELDB_OPTIONS, emptyHead } from "./types.js";

/**
 * The events are a LevelDB of their own, in this subdirectory of the log's. With the dedup
 * entries, heads and group state in the same tables, every table LevelDB flushes would span
 * the stored events' key range, and each compaction would rewrite the events already
 * compacted; alone, a flushed table of new events overlaps nothing and moves down without a
 * rewrite.
 */
export const EVENTS_DIR = "events";
/** Entries a read fetches in its first native call at least; each further call fetches twice as many. */
const READ_STEP = 32;
/** The most bytes one native iterator call returns. */
const MAX_READ_BYTES = 4 * 1024 * 1024;
/**
 * The newest events kept in memory for readers that keep up (see TailCache), up to 2048 a
 * channel, of its last 100 ms: a dispatcher that keeps up reads an event within milliseconds
 * of its append, and an event held for seconds is promoted and dies in the old generation,
 * which costs full collections. At a low rate the age bound holds, at full load the count.
 */
const TAIL_CACHE_BYTES = 8 * 1024 * 1024;
const TAIL_CACHE_EVENTS_PER_CHANNEL = 2048;
const TAIL_CACHE_MAX_AGE_MS = 100;

/**
 * The stored events: two LevelDB databases (the events in EVENTS_DIR, everything else in the
 * main one), each channel's head, reads, and the repair of a crash or a failed write between
 * the two databases. The heads in memory change only when the write loop has written a group
 * (see EventStore.advance) or retention has moved a head.
 */
export class EventStore {
  readonly heads = new Map<string, ChannelHead>();
  /** Bytes of the retained events of every channel (the sum of the heads' `bytes`). */
  storedTotal = 0;
  /**
   * Channels of an append group whose write failed, which may have left one database ahead
   * of the other: set right (see repair) before the next group is written.
   */
  readonly unrepaired = new Set<string>();
  /** Whether a write of one database failed while the other's may have been made (see close). */
  halfWritten = false;
  private readonly tail = new TailCache(TAIL_CACHE_BYTES, TAIL_CACHE_EVENTS_PER_CHANNEL, TAIL_CACHE_MAX_AGE_MS);

  private constructor(
    readonly main: Db,
    readonly events: Db,
  ) {}

  /** Opens (creating if needed) both databases in `dir`. Only one process may hold them. */
  static async open(dir: string): Promise<EventStore> {
    const main: Db = new ClassicLevel<string, Uint8Array>(dir, { keyEncoding: "utf8", valueEncoding: "view", ...LEVELDB_OPTIONS });
    const events: Db = new ClassicLevel<string, Uint8Array>(join(dir, EVENTS_DIR), { keyEncoding: "utf8", valueEncoding: "view", ...LEVELDB_OPTIONS });
    await mkdir(dir, { recursive: true });
    const opened = await Promise.allSettled([main.open(), events.open()]);
    const failed = opened.find((r) => r.status === "rejected");
    if (failed) {
      await Promise.allSettled([main.close(), events.close()]);
      throw failed.reason;
    }
    return new EventStore(main, events);
  }

  /** Reads the heads, and repairs what a crash left unless the log was closed cleanly. */
  async load(): Promise<void> {
    for await (const [key, value] of this.main.iterator({ gte: "h!", lt: prefixEnd("h!") })) {
      const { first, last, bytes, expired } = JSON.parse(Buffer.from(value).toString("utf8")) as ChannelHead;
      this.heads.set(key.slice(2), { first, last, bytes, expired });
    }
    // Closed cleanly, the two databases agree; the mark goes before anything else is written.
    if ((await this.main.get(CLOSED_KEY)) !== undefined) await this.main.del(CLOSED_KEY, { sync: true });
    else await this.reconcile();
    for (const head of this.heads.values()) this.storedTotal += head.bytes;
  }

  /**
   * Makes the two databases agree again after a crash between an append group's two writes
   * (or retention's):
   * - events above a channel's head were written without their head: no publisher was told
   *   they were stored, and their sequences are the next appends'. They are removed, as are
   *   the events of a channel with no head, and events below a head's first (retention
   *   moved the head and stopped before removing them).
   * - a head above the last stored event was written without its events: the head moves back
   *   to that event, so the sequences are used again. The dedup entries that name them
   *   stay, and count as duplicates no more (see Dedup.duplicateOf); first attempts stored for
   *   them count once for the events that take those sequences (one attempt too many, as
   *   after any stop between a first attempt's write and its send). The head's byte count
   *   keeps the lost events' bytes, which retention by size meets a group's worth early.
   *
   * Only the last group written (or retention's last pass) can be half written, and each
   * half holds a channel's sequences from its head on: one read on this loop tells whether
   * a channel is whole, so a whole channel costs no range read or delete, and an open of many
   * channels stays short. Finding the channels with events and no head still takes a read
   * per channel. A log closed cleanly (CLOSED_KEY) skips all of it.
   */
  private async reconcile(): Promise<void> {
    const repaired = this.main.batch();
    const stored = (channel: string, sequence: number): boolean => this.events.getSync(eventKey(channel, sequence)) !== undefined;
    for (const [channel, head] of this.heads) {
      const prefix = eventPrefix(channel);
      if (stored(channel, head.last + 1)) await this.events.clear({ gt: eventKey(channel, head.last), lt: prefixEnd(prefix) });
      if (head.first > 1 && stored(channel, head.first - 1)) await this.events.clear({ gte: prefix, lt: eventKey(channel, head.first) });
      if (head.last < head.first || stored(channel, head.last)) continue;
      const [lastKey] = await this.events.keys({ gte: eventKey(channel, head.first), lte: eventKey(channel, head.last), reverse: true, limit: 1 }).all();
      const last = lastKey === undefined ? head.first - 1 : seqOfKey(lastKey);
      const moved = { ...head, last };
      this.heads.set(channel, moved);
      repaired.put(headKey(channel), Buffer.from(JSON.stringify(moved)));
    }
    // Channels with events and no head: a crash before their first head was written.
    for (let after = "e!"; ; ) {
      const [key] = await this.events.keys({ gt: after, lt: prefixEnd("e!"), limit: 1 }).all();
      if (key === undefined) break;
      const channel = key.slice(2, key.length - 17);
      after = prefixEnd(eventPrefix(channel));
      if (!this.heads.has(channel)) await this.events.clear({ gte: eventPrefix(channel), lt: after });
    }
    if (repaired.length > 0) await repaired.write({ sync: true });
    else await repaired.close();
  }

  /**
   * Sets right the channels of append groups whose write failed: a failed group's events
   * may be in the events' database with its heads not written, or its heads without its
   * events. The heads in memory are the truth (they move only once a group is written): they
   * are written again, and events above them removed. Runs in the write loop.
   */
  async repair(fsync: boolean): Promise<void> {
    if (this.unrepaired.size === 0) return;
    const channels = [...this.unrepaired];
    const heads = this.main.batch();
    for (const channel of channels) {
      const head = this.heads.get(channel);
      if (head) heads.put(headKey(channel), Buffer.from(JSON.stringify(head)));
      else heads.del(headKey(channel));
      await this.events.clear({ gt: eventKey(channel, head?.last ?? 0), lt: prefixEnd(eventPrefix(channel)) });
    }
    await heads.write({ sync: fsync });
    for (const channel of channels) this.unrepaired.delete(channel);
  }

  /**
   * Removes a channel whole: its head, then its events and its dedup entries. Runs in the
   * write loop. The head goes first: a stop before the rest leaves events without a head,
   * which the next open removes (see reconcile).
   */
  async drop(channel: string): Promise<void> {
    const head = this.heads.get(channel);
    if (!head) return;
    await this.main.del(headKey(channel), { sync: true });
    this.heads.delete(channel);
    this.storedTotal -= head.bytes;
    await this.events.clear({ gte: eventPrefix(channel), lt: prefixEnd(eventPrefix(channel)) });
    for (const prefix of dedupPrefixes(channel)) {
      await this.main.clear({ gte: prefix, lt: prefixEnd(prefix) });
    }
  }

  /** The channel's head (a copy); an empty head for a channel never written. */
  head(channel: string): ChannelHead {
    const h = this.heads.get(channel);
    return h ? { ...h } : emptyHead();
  }

  /** A written append group's heads and events become the store's. */
  advance(channel: string, head: ChannelHead, events: StoredEvent[]): void {
    this.storedTotal += head.bytes - (this.heads.get(channel)?.bytes ?? 0);
    this.heads.set(channel, head);
    this.tail.add(channel, events);
  }

  /** Retention moved a channel's head (its first, bytes and expired). */
  trim(channel: string, head: ChannelHead): void {
    this.storedTotal += head.bytes - (this.heads.get(channel)?.bytes ?? 0);
    this.heads.set(channel, head);
  }

  /** The stored record of one event (its raw value), read on this thread; undefined if none. */
  recordAt(channel: string, sequence: number): Uint8Array | undefined {
    return this.events.getSync(eventKey(channel, sequence));
  }

  /**
   * Reads up to `limit` events of `channel` starting at sequence `from`, in order, stopping
   * once `maxBytes` of event bytes are read (always at least one event).
   */
  async read(channel: string, from: number, limit: number, maxBytes = Infinity): Promise<StoredEvent[]> {
    const head = this.heads.get(channel);
    if (!head || from > head.last || limit < 1) return [];
    const start = Math.max(from, head.first);
    const cached = this.tail.read(channel, start, limit, maxBytes);
    if (cached) return cached;
    const out: StoredEvent[] = [];
    let bytes = 0;
    // Each step is a trip to LevelDB's threads and back to this loop, which a dispatcher
    // waits for; under a publish load the loop is busy and a trip costs milliseconds. So the
    // first step takes what the byte budget holds of events of the channel's average size,
    // and the native side may return that many bytes at once (its default stops at 16 KiB,
    // ~50 events of 256 B: a read of hundreds would take ten trips or more). Later steps
    // double, so a budget reached early reads little past it. (`for await` would cost a trip
    // per entry.)
    const average = Math.max(1, head.bytes / Math.max(1, head.last - head.first + 1));
    const fits = Number.isFinite(maxBytes) ? Math.floor(maxBytes / average) : limit;
    const firstStep = Math.max(READ_STEP, Math.min(limit, fits));
    const iterator = this.events.iterator({
      gte: eventKey(channel, start),
      // Not past the head: a crash may have left events above it until the next open.
      lte: eventKey(channel, head.last),
      limit,
      highWaterMarkBytes: Math.min(MAX_READ_BYTES, Math.max(16 * 1024, Math.ceil(firstStep * average * 1.25))),
    });
    try {
      for (let step = firstStep; out.length < limit && bytes < maxBytes; step *= 2) {
        const entries = await iterator.nextv(Math.min(step, limit - out.length));
        if (entries.length === 0) break;
        for (const [key, value] of entries) {
          const event = decodeRecord(channel, seqOfKey(key), value);
          out.push(event);
          bytes += event.bytes.length;
          if (bytes >= maxBytes) break;
        }
      }
    } finally {
      await iterator.close();
    }
    return out;
  }

  /** Reads the given sequences of `channel`; undefined where retention removed one. */
  async get(channel: string, sequences: number[]): Promise<(StoredEvent | undefined)[]> {
    const values = await this.events.getMany(sequences.map((s) => eventKey(channel, s)));
    return values.map((v, i) => (v === undefined ? undefined : decodeRecord(channel, sequences[i]!, v)));
  }

  /** The first retained sequence stored at or after `time` (Unix ms); last + 1 if none. */
  sequenceAtTime(channel: string, time: number): number {
    const head = this.head(channel);
    let lo = head.first;
    let hi = head.last + 1;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const value = this.recordAt(channel, mid);
      if (value !== undefined && recordTime(value) >= time) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** Closes both databases; a clean close (`clean`) is marked, so the next open skips the repair. */
  async close(clean: boolean): Promise<void> {
    this.tail.clear();
    if (clean) await this.main.put(CLOSED_KEY, Buffer.from("1"), { sync: true }).catch(() => {});
    await Promise.all([this.main.close(), this.events.close()]);
  }
}
