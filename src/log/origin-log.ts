import { randomBytes } from "node:crypto";
import { mkdir, statfs } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { StartAt } from "../delivery/types.js";
import { NO_OBSERVER, type Observer } from "../ops/observer.js";
import { fromBinary } from "@bufbuild/protobuf";
import { ClassicLevel } from "classic-level";
import { EventSchema } from "../gen/weft/v1/event_pb.js";
import { Reason, WeftError } from "../contract/errors.js";
import { status } from "@grpc/grpc-js";
import {
  deadLetterMarksKey,
  ackedKey,
  ackedPrefix,
  dedupKey,
  CLOSED_KEY,
  DEDUP_PREFIX,
  DEDUP_TABLES_KEY,
  EVENTS_SPLIT_KEY,
  dedupIdentityOf,
  dedupTableKey,
  dedupTablePrefix,
  eventKey,
  eventPrefix,
  groupKey,
  headKey,
  inflightKey,
  inflightPrefix,
  pumpKey,
  pumpPrefix,
  LOG_ID_KEY,
  PROBE_KEY,
  prefixEnd,
  seqOfKey,
} from "./keys.js";
import { type Origin, type StoredEvent, decodeRecord, encodeRecord, recordSize, recordTime, redriveIdentity, relayIdentity, storedEvent } from "./record.js";
import { TailCache } from "./tail-cache.js";
import type { BloomFilter } from "./bloom-filter.js";
import { DedupFilter } from "./dedup-filter.js";

/** How long and how much a channel keeps. The first limit reached removes the oldest events. */
export interface Retention {
  /** Events older than this (by append time) are removed, in ms. */
  maxAgeMs: number;
  /** When a channel's stored events exceed this many bytes, the oldest are removed. */
  maxBytes: number;
}

export interface OriginLogOptions {
  /** Sync every append batch to disk before acking it (group commit). Default false. */
  fsync?: boolean;
  /** Re-publishing (source, id) within this window is a duplicate, in ms. Default 10 minutes. */
  dedupWindowMs?: number;
  /** Retention for channels without their own. Default 7 days and 1 GiB. */
  retention?: Retention;
  /** Retention per channel name, overriding the default. */
  channelRetention?: Record<string, Retention>;
  /** The clock, Unix ms. Tests may pass their own. */
  now?: () => number;
  /** Told what is stored, deduplicated and expired, and when the disk fills up and has room again. */
  observer?: Observer;
  /**
   * Appends that count against the quota (`AppendOptions.quota`: publishes) are refused with
   * STORAGE_QUOTA while the retained events take this many bytes or more (the sum of every
   * channel's `bytes`); retention frees room. 0 for no quota. Default 0.
   */
  maxStoredBytes?: number;
  /**
   * Most channels the log holds: channels with events (published, dead-letter and relay
   * channels alike) and channels with a group (see holdChannels). An append that would make
   * one more is refused with TOO_MANY_CHANNELS. Default: no limit.
   */
  maxChannels?: number;
}

/** How an append is made. */
export interface AppendOptions {
  /**
   * Refused with RESOURCE_EXHAUSTED / STORAGE_QUOTA while the log holds `maxStoredBytes`: set
   * for publishes. Relay copies, dead letters and redrives carry events the mesh already
   * accepted, and are stored past the quota.
   */
  quota?: boolean;
}

/** Why the log refuses appends for now: the disk is full. */
export interface DiskFull {
  /** Since when, Unix ms. */
  since: number;
  /** The error of the write that failed (the latest one while the log probes). */
  message: string;
}

/** One event to append: its raw bytes and the fields the log indexes. */
export interface AppendEntry {
  channel: string;
  source: string;
  id: string;
  key: string;
  bytes: Uint8Array;
  /** For a relay copy of an event another sidecar published: that sidecar and its sequence. */
  origin?: Origin | undefined;
  /**
   * For an event addressed to one group of the channel (a redriven dead letter): that group.
   * Every other group skips it. Never set on a relay copy (its log channel names the group).
   */
  onlyGroup?: string | undefined;
}

/** What happened to one appended event. */
export interface AppendResult {
  sequence: number;
  duplicate: boolean;
}

/** A channel's position and counters. */
export interface ChannelHead {
  /** The oldest retained sequence; last + 1 when the channel is empty. */
  first: number;
  /** The newest sequence; 0 before the first event. */
  last: number;
  /** Bytes of the retained records. */
  bytes: number;
  /** Events removed by retention, ever. */
  expired: number;
}

/** A group's durable state, as stored. */
export interface GroupRecord {
  channel: string;
  group: string;
  /** Every sequence up to and including this one is done for the group. */
  ackedThrough: number;
  maxAttempts: number;
  deadLetterChannel: string;
  /** Events retention removed before the group had finished them. */
  expiredUnacked: number;
  /** When the group was created (here or, for a group learnt from a peer, where it was), Unix ms. */
  createdAt?: number | undefined;
  /** Where the group started when it was created. */
  start?: StartAt | undefined;
}

/**
 * Which dead letters of one group in one dead-letter channel an operator has handled
 * (redriven or purged): every one up to `through`, and those in `handled` above it.
 */
export interface DeadLetterMarks {
  /** Every dead-letter channel sequence up to and including this one is handled (or not the group's). */
  through: number;
  /** Handled sequences above `through`, ascending. */
  handled: number[];
}

/** A delivery in flight, as stored, so a restart redelivers instead of forgetting. */
export interface InflightRecord {
  sequence: number;
  /** Deliveries made so far. */
  attempt: number;
}

/** A group's state on open: its record, the sequences acked above the cursor, in-flight. */
export interface LoadedGroup {
  record: GroupRecord;
  acked: number[];
  inflight: InflightRecord[];
}

type Db = ClassicLevel<string, Uint8Array>;
type ChainedBatch = ReturnType<Db["batch"]>;

interface PendingAppend {
  entries: AppendEntry[];
  resolve: (results: AppendResult[]) => void;
  reject: (error: unknown) => void;
}

/**
 * Work in the write loop other than appending (retention, the dedup tables' switch, the dedup
 * filter's snapshot); runs alone, at a point where no group is prepared and unwritten.
 */
interface PendingTask {
  run: () => Promise<void>;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** An append group whose dedup entries are being looked up. */
interface Lookup {
  group: PendingAppend[];
  /** The dedup identity of every entry, in order: its dedupKey (a relay copy's entry key). */
  keys: string[];
  /**
   * For each key looked up, the entry (an index into keys, ascending) it may hold a duplicate
   * of: where the dedup filter may hold the entry's identity, its keys in both dedup tables
   * (and the old place while that may hold any), or a relay copy's entry.
   */
  askedFor: number[];
  /** What LevelDB holds for each key asked. */
  stored: Promise<(Uint8Array | undefined)[]>;
  /** The entries of the group being written while this one was looked up. */
  pending: Map<string, AppendResult> | undefined;
}

/** An append group ready to write. */
interface Written {
  /** Its events, for the events' database. */
  eventBatch: ChainedBatch;
  /** Everything else (dedup entries, heads, first attempts), for the main database. */
  batch: ChainedBatch;
  touched: Map<string, ChannelHead>;
  events: Map<string, StoredEvent[]>;
  /** Its new dedup entries: what the next group, looked up meanwhile, cannot see yet. */
  seen: Map<string, AppendResult>;
  results: AppendResult[][];
  /** Per pending append, the refusal that stored none of it (a channel past maxChannels). */
  refusals: (WeftError | undefined)[];
  /** What the `onPrepare` listeners are told once the write succeeded or failed. */
  settles: ((stored: boolean) => void)[];
}

/**
 * Told of each channel's new events while their append group is prepared, before it is
 * written: it may add group state to `attempts`, which is written in the same LevelDB write.
 * It returns what to call once that write succeeded (true) or failed (false), or nothing.
 */
export type PrepareListener = (channel: string, events: readonly StoredEvent[], attempts: GroupBatch) => ((stored: boolean) => void) | undefined;

/** What one sweep pass found to remove, planned outside the write loop. */
interface SweepPlan {
  /** The channel's first sequence when the plan was made; the plan is void if it moved. */
  first: number;
  /**
   * Events retention removes, oldest first, with their size and the dedup entry that goes
   * with them: a relay copy's, or one a log kept before its dedup tables.
   */
  expire: { sequence: number; size: number; dedupKey: string | undefined }[];
}

/**
 * The log's two dedup tables. A publish's dedup entry is written to the active table, and a
 * lookup asks both. The other table was last written `since`; once that is a whole window
 * ago, each of its entries is past the window, and the sweep clears it with one range delete
 * on LevelDB's thread and makes it the active one. An entry lasts one to two windows.
 *
 * No entry is deleted one by one: that would mean decoding every event past the window and
 * writing the deletes from the loop, which delays the deliveries the same loop makes.
 */
interface DedupTables {
  /** The table written, 0 or 1. */
  active: number;
  /** When the active table became the active one (when the other was last written), Unix ms. */
  since: number;
  /**
   * A log written before the tables kept publishes' entries where relay copies' are; those
   * are looked up while they may be within the window: until a window after this (Unix ms;
   * 0 for a log that never had them), and removed with their events by retention.
   */
  legacyBefore: number;
}

const DEFAULT_RETENTION: Retention = { maxAgeMs: 7 * 24 * 3600_000, maxBytes: 1024 ** 3 };
/**
 * An append group (one LevelDB write) ends at this many events or bytes of events. Larger
 * writes save little more, and every other write (a delivery's attempt, an ack) waits
 * behind the one in progress: a larger group makes deliveries wait longer.
 */
export const MAX_APPEND_GROUP = 10_000;
export const MAX_APPEND_GROUP_BYTES = 256 * 1024;
/** Entries a read fetches in its first native call at least; each further call fetches twice as many. */
const READ_STEP = 32;
/** The most bytes one native iterator call returns. */
const MAX_READ_BYTES = 4 * 1024 * 1024;
/**
 * Events one sweep pass removes. A pass decodes them on the loop, and its apply looks the
 * dedup entry of each relay copy up (getSync, from a table file) in the write loop. The loop
 * delivers nothing while a pass runs, so passes are small and deliveries go between them.
 */
const SWEEP_PASS_EVENTS = 64;
/** Passes of one channel in one sweep: ~500k events (8000 × SWEEP_PASS_EVENTS). */
const MAX_SWEEP_PASSES = 8000;
/**
 * After each pass a sweep pauses for this many times the pass's own duration, so a sweep with
 * much to do takes a third of the loop at most.
 */
const SWEEP_PAUSE_FACTOR = 2;
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
 * How the log's LevelDB is sized. The memtable (two while one is flushed) and the block cache
 * are native memory, and the write-ahead log a restart replays is as large as a memtable:
 * LevelDB's own 4 MiB and 8 MiB keep the resident memory and a restart's replay small, and
 * larger ones do not append faster. Larger files mean fewer of them to open and compact.
 */
export const LEVELDB_OPTIONS = {
  writeBufferSize: 4 * 1024 * 1024,
  cacheSize: 8 * 1024 * 1024,
  maxFileSize: 16 * 1024 * 1024,
} as const;
/**
 * The events are a LevelDB of their own, in this subdirectory of the log's. With the dedup
 * entries, heads and group state in the same tables, every table LevelDB flushes would span
 * the stored events' key range, and each compaction would rewrite the events already
 * compacted; alone, a flushed table of new events overlaps nothing and moves down without a
 * rewrite.
 */
export const EVENTS_DIR = "events";
/**
 * Up to this many dedup lookups in an append batch are made on the loop (getSync, a few µs
 * each) rather than in one getMany on LevelDB's threads, whose round trip and wake-up cost
 * more than that when events come one or two at a time.
 */
const SYNC_LOOKUPS = 8;
/** Dedup keys the filter's load reads per native call, and the bytes it may take. */
const DEDUP_LOAD_STEP = 2000;
const DEDUP_LOAD_BYTES = 256 * 1024;
/** How often a log whose disk is full tries a write again, ms. */
export const DISK_PROBE_MS = 1000;
/**
 * A full disk counts as having room again once this much of it is free: each database is
 * then opened again (see probe), which writes its memtables (up to two) to a table.
 */
const REOPEN_FREE_BYTES = 2 * LEVELDB_OPTIONS.writeBufferSize + 1024 * 1024;

/**
 * Whether `error` says the disk (or the user's disk quota) is full: ENOSPC or EDQUOT, or
 * LevelDB's "IO error: FILE: No space left on device".
 */
export function isDiskFull(error: unknown): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOSPC" || code === "EDQUOT" || /No space left on device|Disk quota exceeded/i.test(e.message)) return true;
  }
  return false;
}

/** Group state that could not be written for a full disk, waiting its turn (see OriginLog.writeState). */
interface StalledWrite {
  /** Its place among every group-state write, in the order they were made. */
  order: number;
  ops: StateOp[];
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** One change of group state, as `GroupBatch` collects it. */
type StateOp = { type: "put"; key: string; value: Uint8Array } | { type: "del"; key: string };

/** Writes an append group's two batches at once; fails if either failed, once both are done. */
async function writeBoth(events: ChainedBatch, rest: ChainedBatch, sync: boolean): Promise<void> {
  const [a, b] = await Promise.allSettled([events.write({ sync }), rest.write({ sync })]);
  if (a.status === "rejected") throw a.reason;
  if (b.status === "rejected") throw b.reason;
}

/**
 * The origin log: every event published to this sidecar, per channel, in LevelDB, plus
 * the durable state of the groups that read it.
 *
 * Appends are group-committed: concurrent `append` calls are written together, in call
 * order (one fsync per database with `fsync: true`). A resolved append means stored.
 *
 * A group is two LevelDB writes, made at once: its events to the events' database
 * (EVENTS_DIR), and its dedup entries, heads and first attempts to the main one. A crash can
 * land between them; opening repairs either half (see reconcile), and a dedup entry counts
 * only while the event it names is stored with the entry's append time (see duplicateOf).
 */
export class OriginLog {
  private readonly heads = new Map<string, ChannelHead>();
  /**
   * The channels the log holds, bounded by maxChannels: every channel with a head, and every
   * channel a group reads (holdChannels). Never shrinks while the log is open: retention
   * keeps a head for an emptied channel, and groups are not removed.
   */
  private readonly held = new Set<string>();
  /** New channels of the append group being written, held once it is stored. */
  private preparing: ReadonlySet<string> = new Set();
  private readonly queue: PendingAppend[] = [];
  private readonly tasks: PendingTask[] = [];
  private sweeping: Promise<void> | undefined;
  private writing = false;
  private closed = false;
  private readonly listeners = new Set<(channel: string, last: number) => void>();
  private readonly preparers = new Set<PrepareListener>();
  private readonly trimListeners = new Set<(channel: string, first: number) => void>();
  private readonly now: () => number;
  private readonly observer: Observer;
  private readonly dedupWindowMs: number;
  private readonly fsync: boolean;
  private drained: Promise<void> = Promise.resolve();
  private markDrained: () => void = () => {};
  private readonly tail = new TailCache(TAIL_CACHE_BYTES, TAIL_CACHE_EVENTS_PER_CHANNEL, TAIL_CACHE_MAX_AGE_MS);
  private readonly dedupFilter = new DedupFilter((into) => this.loadDedupKeys(into));
  /** Set by open(). */
  private tables: DedupTables = { active: 0, since: 0, legacyBefore: 0 };
  /** Entries written to each dedup table since the log was opened (for the dedup filter's count). */
  private readonly tableAdds = [0, 0];
  /**
   * Whether each dedup table may hold an entry: a lookup skips one that holds none (a new
   * log's second table, or one just cleared). Until the dedup filter has loaded, every id
   * is looked up, and asking an empty table too would double those lookups and the memory
   * they take.
   */
  private readonly tableMayHold = [true, true];
  /**
   * For a log written before EVENTS_DIR: per channel, the last event it kept in the main
   * database (see loadLegacy). Empty for a log created since.
   */
  private readonly legacy = new Map<string, number>();
  /** Whether a write of one database failed while the other's may have been made (see close). */
  private halfWritten = false;
  /**
   * Channels of an append group whose write failed, which may have left one database ahead
   * of the other: set right (see repair) before the next group is written.
   */
  private readonly unrepaired = new Set<string>();
  /** Bytes of the retained events of every channel (the sum of the heads' `bytes`). */
  private storedTotal = 0;
  /** Set while the disk is full: appends are refused and group state waits (see probe). */
  private full: DiskFull | undefined;
  private probing: NodeJS.Timeout | undefined;
  /** Group-state writes made so far (each one's `order`). */
  private stateWrites = 0;
  /** Group-state writes waiting for room on the disk, in the order they were made. */
  private readonly stalled: StalledWrite[] = [];

  private constructor(
    /** The log's directory. */
    readonly dir: string,
    private readonly db: Db,
    /** The events (EVENTS_DIR); everything else is in `db`. */
    private readonly events: Db,
    private readonly options: OriginLogOptions,
    /**
     * Random, chosen when the log was created: a wiped data directory is a new log, whose
     * sequences start again at 1. Peers keep relay copies per (node, log id).
     */
    readonly id: bigint,
  ) {
    this.now = options.now ?? Date.now;
    this.observer = options.observer ?? NO_OBSERVER;
    this.dedupWindowMs = options.dedupWindowMs ?? 10 * 60_000;
    this.fsync = options.fsync ?? false;
  }

  /** Opens (creating if needed) the log in `dir`. Only one process may hold it. */
  static async open(dir: string, options: OriginLogOptions = {}): Promise<OriginLog> {
    const db: Db = new ClassicLevel<string, Uint8Array>(dir, { keyEncoding: "utf8", valueEncoding: "view", ...LEVELDB_OPTIONS });
    const events: Db = new ClassicLevel<string, Uint8Array>(join(dir, EVENTS_DIR), { keyEncoding: "utf8", valueEncoding: "view", ...LEVELDB_OPTIONS });
    await mkdir(dir, { recursive: true });
    const opened = await Promise.allSettled([db.open(), events.open()]);
    const failed = opened.find((r) => r.status === "rejected");
    if (failed) {
      await Promise.allSettled([db.close(), events.close()]);
      throw failed.reason;
    }
    try {
      return await OriginLog.load(dir, db, events, options);
    } catch (e) {
      await Promise.allSettled([db.close(), events.close()]);
      throw e;
    }
  }

  private static async load(dir: string, db: Db, events: Db, options: OriginLogOptions): Promise<OriginLog> {
    let id = await db.get(LOG_ID_KEY);
    const existed = id !== undefined;
    if (id === undefined) {
      id = randomBytes(8);
      await db.put(LOG_ID_KEY, id, { sync: true });
    }
    const log = new OriginLog(dir, db, events, options, Buffer.from(id).readBigUInt64BE(0));
    for await (const [key, value] of db.iterator({ gte: "h!", lt: prefixEnd("h!") })) {
      // Heads written before the dedup tables also hold how far the sweep had forgotten.
      const { first, last, bytes, expired } = JSON.parse(Buffer.from(value).toString("utf8")) as ChannelHead;
      log.heads.set(key.slice(2), { first, last, bytes, expired });
      log.held.add(key.slice(2));
    }
    const tables = await db.get(DEDUP_TABLES_KEY);
    if (tables !== undefined) {
      log.tables = JSON.parse(Buffer.from(tables).toString("utf8")) as DedupTables;
    } else {
      const now = log.now();
      log.tables = { active: 0, since: now, legacyBefore: existed ? now : 0 };
      await db.put(DEDUP_TABLES_KEY, Buffer.from(JSON.stringify(log.tables)));
    }
    for (const table of [0, 1]) {
      const prefix = dedupTablePrefix(table);
      log.tableMayHold[table] = (await db.keys({ gte: prefix, lt: prefixEnd(prefix), limit: 1 }).all()).length > 0;
    }
    await log.loadLegacy();
    // Closed cleanly, the two databases agree; the mark goes before anything else is written.
    if ((await db.get(CLOSED_KEY)) !== undefined) await db.del(CLOSED_KEY, { sync: true });
    else await log.reconcile();
    for (const head of log.heads.values()) log.storedTotal += head.bytes;
    return log;
  }

  /**
   * A log written before EVENTS_DIR kept its events in the main database. They stay there
   * (moving them would make an upgrade's first start rewrite every event), and reads,
   * dedup checks and retention find each channel's events up to its last one at the upgrade
   * there, and the later ones in the events' database; retention removes the old ones in time.
   * Which is which is written once, on the first open after the upgrade, before any event
   * goes to the events' database.
   */
  private async loadLegacy(): Promise<void> {
    const stored = await this.db.get(EVENTS_SPLIT_KEY);
    if (stored !== undefined) {
      const { legacyThrough } = JSON.parse(Buffer.from(stored).toString("utf8")) as { legacyThrough: Record<string, number> };
      for (const [channel, through] of Object.entries(legacyThrough)) this.legacy.set(channel, through);
      return;
    }
    const [anyEvent] = await this.db.keys({ gte: "e!", lt: prefixEnd("e!"), limit: 1 }).all();
    const legacyThrough: Record<string, number> = {};
    if (anyEvent !== undefined) {
      for (const [channel, head] of this.heads) {
        if (head.last < head.first) continue;
        legacyThrough[channel] = head.last;
        this.legacy.set(channel, head.last);
      }
    }
    await this.db.put(EVENTS_SPLIT_KEY, Buffer.from(JSON.stringify({ legacyThrough })), { sync: true });
  }

  /** The last event of `channel` in the main database (see loadLegacy); 0 for none. */
  private legacyThrough(channel: string): number {
    return this.legacy.size > 0 ? (this.legacy.get(channel) ?? 0) : 0;
  }

  /** The database holding `channel`'s event `sequence` (see loadLegacy). */
  private eventDb(channel: string, sequence: number): Db {
    return sequence <= this.legacyThrough(channel) ? this.db : this.events;
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
   *   stay, and count as duplicates no more (see duplicateOf); first attempts stored for
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
    const repaired = this.db.batch();
    const stored = (channel: string, sequence: number): boolean => this.events.getSync(eventKey(channel, sequence)) !== undefined;
    for (const [channel, head] of this.heads) {
      const prefix = eventPrefix(channel);
      // The events up to a log's upgrade were written with their head (see loadLegacy).
      const legacyThrough = this.legacyThrough(channel);
      if (stored(channel, head.last + 1)) await this.events.clear({ gt: eventKey(channel, head.last), lt: prefixEnd(prefix) });
      if (head.first - 1 > legacyThrough && stored(channel, head.first - 1)) await this.events.clear({ gte: prefix, lt: eventKey(channel, head.first) });
      const from = Math.max(head.first, legacyThrough + 1);
      if (head.last < from || stored(channel, head.last)) continue;
      const [lastKey] = await this.events.keys({ gte: eventKey(channel, from), lte: eventKey(channel, head.last), reverse: true, limit: 1 }).all();
      const last = lastKey === undefined ? from - 1 : seqOfKey(lastKey);
      if (last === head.last) continue;
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

  /** Called after each append batch with every channel that grew and its new last sequence. */
  onAppend(listener: (channel: string, last: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Called with each channel's new events before their append group is written (see PrepareListener). */
  onPrepare(listener: PrepareListener): () => void {
    this.preparers.add(listener);
    return () => this.preparers.delete(listener);
  }

  /** Called when retention removed the oldest events of a channel; `first` is the new oldest. */
  onTrim(listener: (channel: string, first: number) => void): () => void {
    this.trimListeners.add(listener);
    return () => this.trimListeners.delete(listener);
  }

  /** The channel's head; an empty head for a channel never written. */
  head(channel: string): ChannelHead {
    const h = this.heads.get(channel);
    return h ? { first: h.first, last: h.last, bytes: h.bytes, expired: h.expired } : { first: 1, last: 0, bytes: 0, expired: 0 };
  }

  /** Every channel that has ever had an event. */
  channels(): string[] {
    return [...this.heads.keys()];
  }

  /** How many channels the log holds (see OriginLogOptions.maxChannels). */
  get channelCount(): number {
    return this.held.size;
  }

  /**
   * Holds `channels` for groups that read them (a group is created on each), counting them
   * against maxChannels whether or not they have events yet: a relay channel held here
   * takes its peers' forwards without ever being refused. All of them or none.
   * @throws WeftError TOO_MANY_CHANNELS (RESOURCE_EXHAUSTED) when they would pass the limit.
   */
  holdChannels(channels: readonly string[]): void {
    const fresh = new Set(channels.filter((c) => !this.held.has(c)));
    const counted = [...fresh].filter((c) => !this.preparing.has(c));
    const refusal = counted.length > 0 ? this.channelRefusal(counted.length, counted[0]!) : undefined;
    if (refusal) throw refusal;
    for (const c of fresh) this.held.add(c);
  }

  /** The refusal of `fresh` more channels (the first named), or undefined when they fit. */
  private channelRefusal(fresh: number, channel: string): WeftError | undefined {
    const max = this.options.maxChannels ?? Infinity;
    let count = this.held.size;
    for (const c of this.preparing) if (!this.held.has(c)) count++;
    if (count + fresh <= max) return undefined;
    this.observer.refused(Reason.TOO_MANY_CHANNELS);
    return new WeftError(
      status.RESOURCE_EXHAUSTED,
      Reason.TOO_MANY_CHANNELS,
      `this sidecar holds ${count} channels and its limit (maxChannels) is ${max}; ${JSON.stringify(channel.slice(0, 200))} would be a new one: use an existing channel, or raise maxChannels`,
      "channel",
    );
  }

  /**
   * Appends events (deduplicated by channel, source and id within the window) and resolves
   * once they are stored, with one result per entry in order. Refused, with nothing stored:
   * LOG_CLOSED once the log is closed; DISK_FULL (RESOURCE_EXHAUSTED) while the disk is full
   * (see diskFull); STORAGE_QUOTA (RESOURCE_EXHAUSTED) for an append with `quota` while the
   * log holds `maxStoredBytes`; TOO_MANY_CHANNELS (RESOURCE_EXHAUSTED) for an append that
   * would make a channel past `maxChannels` (none of that append is stored).
   */
  append(entries: AppendEntry[], options: AppendOptions = {}): Promise<AppendResult[]> {
    if (this.closed) {
      return Promise.reject(new WeftError(status.UNAVAILABLE, Reason.LOG_CLOSED, "the log is closed"));
    }
    if (this.full) return Promise.reject(this.diskFullError());
    const quota = this.options.maxStoredBytes ?? 0;
    if (options.quota && quota > 0 && this.storedTotal >= quota) {
      return Promise.reject(
        new WeftError(
          status.RESOURCE_EXHAUSTED,
          Reason.STORAGE_QUOTA,
          `the log holds ${this.storedTotal} bytes of events, its quota (maxStoredBytes) is ${quota}; publish again once retention has removed old events, or raise the quota`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ entries, resolve, reject });
      this.startWriting();
    });
  }

  /**
   * Runs `run` in the write loop, so heads change in one place only: at the next point
   * between two append groups, ahead of the appends queued meanwhile (a group already looked
   * up is prepared after it, against the heads it leaves). Behind every queued append, the
   * dedup filter's snapshot would wait for all of them, and each of their ids would be looked
   * up in LevelDB meanwhile.
   */
  private task(run: () => Promise<void>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.tasks.push({ run, resolve, reject });
      this.startWriting();
    });
  }

  /**
   * An idle write loop starts after the current callback (a microtask), not in the loop's
   * next check phase: an event that comes alone is written without waiting for the other
   * I/O of the same turn. Appends that come while a group is written make the next group.
   */
  private startWriting(): void {
    if (!this.writing) {
      this.writing = true;
      this.drained = new Promise((r) => (this.markDrained = r));
      queueMicrotask(() => void this.writeLoop());
    }
  }

  /**
   * The only writer of heads: append groups (group-committed) and tasks, one at a time.
   *
   * While a group is written, the next group's dedup entries are already looked up (a
   * group's lookup takes about as long as its write): that lookup cannot see what the group
   * being written adds, so the next group also checks that group's entries in memory.
   */
  private async writeLoop(): Promise<void> {
    let next: Lookup | undefined;
    const run = async (task: PendingTask): Promise<void> => {
      try {
        await task.run();
        task.resolve();
      } catch (e) {
        task.reject(e);
      }
    };
    while (next || this.queue.length > 0 || this.tasks.length > 0) {
      // Here no group is prepared and unwritten; `next` is only looked up.
      if (this.full && next) {
        // The probe (a task) may close the databases under its lookup; it is refused below anyway.
        this.queue.unshift(...next.group);
        next = undefined;
      }
      const task = this.tasks.shift();
      if (task) {
        await run(task);
        continue;
      }
      if (this.full) {
        // Refused at once, nothing written: the publisher hears now, not when there is room.
        const error = this.diskFullError();
        for (const p of this.queue.splice(0)) p.reject(error);
        continue;
      }
      if (this.unrepaired.size > 0) {
        try {
          await this.repair();
        } catch (e) {
          if (isDiskFull(e)) {
            this.failed(e);
          } else {
            // Left to the next open, which repairs what any crash leaves (see reconcile).
            this.halfWritten = true;
            this.unrepaired.clear();
          }
          continue;
        }
      }
      const current: Lookup = next ?? this.lookUp(this.takeGroup(), undefined);
      next = undefined;
      let written: Written | undefined;
      try {
        written = this.prepare(current, await current.stored);
        if (this.queue.length > 0) next = this.lookUp(this.takeGroup(), written.seen);
        await writeBoth(written.eventBatch, written.batch, this.fsync);
      } catch (e) {
        this.preparing = new Set();
        if (written) for (const channel of written.touched.keys()) this.unrepaired.add(channel);
        const error = this.failed(e);
        for (const settle of written?.settles ?? []) settle(false);
        for (const p of current.group) p.reject(error);
        if (next) {
          // Its lookup counted on entries that were not written: it goes again, from the start.
          this.queue.unshift(...next.group);
          next = undefined;
        }
        continue;
      }
      this.applied(written);
      current.group.forEach((p, i) => {
        const refusal = written.refusals[i];
        if (refusal) p.reject(refusal);
        else p.resolve(written.results[i]!);
      });
    }
    this.writing = false;
    this.markDrained();
  }

  /** Takes the queued appends (at least one) that make the next group. */
  private takeGroup(): PendingAppend[] {
    const group: PendingAppend[] = [];
    let count = 0;
    let bytes = 0;
    while (count < MAX_APPEND_GROUP && bytes < MAX_APPEND_GROUP_BYTES) {
      const next = this.queue[0];
      if (!next) break;
      this.queue.shift();
      group.push(next);
      count += next.entries.length;
      for (const e of next.entries) bytes += e.bytes.length;
    }
    return group;
  }

  /**
   * Starts looking up the dedup entries of a group's events that the dedup filter may hold
   * (most ids are new, and it knows): in one getMany on LevelDB's threads (a getSync per
   * event would take this loop's time, and this loop also delivers), or with
   * getSync for a few. `pending` is what the group written meanwhile adds.
   */
  private lookUp(group: PendingAppend[], pending: Map<string, AppendResult> | undefined): Lookup {
    const keys: string[] = [];
    const askedFor: number[] = [];
    const ask: string[] = [];
    const filter = this.dedupFilter;
    const legacy = this.now() - this.tables.legacyBefore < this.dedupWindowMs;
    for (const p of group) {
      for (const entry of p.entries) {
        const key = dedupKey(entry.channel, entry.source, entry.id);
        // The filter holds identities: a table's entry is added as its dedupKey.
        if (filter.mayHold(key)) {
          const relay = entry.origin !== undefined;
          if (relay || legacy) askedFor.push(keys.length), ask.push(key);
          if (!relay) {
            for (let table = 0; table < 2; table++) {
              if (this.tableMayHold[table]) askedFor.push(keys.length), ask.push(dedupTableKey(table, key));
            }
          }
        }
        keys.push(key);
      }
    }
    const stored = ask.length <= SYNC_LOOKUPS ? Promise.resolve(ask.map((k) => this.db.getSync(k))) : this.db.getMany(ask);
    // A failed lookup is the write's failure; until then it must not count as unhandled.
    stored.catch(() => {});
    return { group, keys, askedFor, stored, pending };
  }

  /** Assigns sequences and builds the batch of a looked-up group (heads change once it is written). */
  private prepare(lookup: Lookup, stored: (Uint8Array | undefined)[]): Written {
    const now = this.now();
    const eventBatch = this.events.batch();
    const batch = this.db.batch();
    const touched = new Map<string, ChannelHead>();
    const events = new Map<string, StoredEvent[]>();
    const seen = new Map<string, AppendResult>();
    const results: AppendResult[][] = [];
    let k = 0;
    let a = 0;
    const active = this.tables.active;
    const refusals: (WeftError | undefined)[] = [];
    const fresh = new Set<string>();
    this.preparing = fresh;
    for (const p of lookup.group) {
      const out: AppendResult[] = [];
      const refusal = this.refuseNewChannels(p.entries, fresh);
      refusals.push(refusal);
      if (refusal) {
        // None of it is stored: its lookups are passed over.
        for (let i = 0; i < p.entries.length; i++, k++) while (lookup.askedFor[a] === k) a++;
        results.push(out);
        continue;
      }
      for (const entry of p.entries) {
        const dk = lookup.keys[k]!;
        const relay = entry.origin !== undefined;
        let found: AppendResult | undefined;
        if (lookup.askedFor[a] === k) {
          const first = (touched.get(entry.channel) ?? this.heads.get(entry.channel))?.first ?? 1;
          for (; lookup.askedFor[a] === k; a++) found ??= this.duplicateOf(entry.channel, stored[a], now, relay, first);
        }
        k++;
        const earlier = seen.get(dk) ?? lookup.pending?.get(dk) ?? found;
        if (earlier) {
          out.push({ sequence: earlier.sequence, duplicate: true });
          this.observer.deduplicated(entry.channel);
          continue;
        }
        let head = touched.get(entry.channel);
        if (!head) {
          const current = this.heads.get(entry.channel);
          head = current ? { ...current } : { first: 1, last: 0, bytes: 0, expired: 0 };
          touched.set(entry.channel, head);
        }
        const sequence = head.last + 1;
        head.last = sequence;
        const record = encodeRecord(now, entry.key, entry.bytes, entry.origin, entry.onlyGroup);
        head.bytes += record.length;
        eventBatch.put(eventKey(entry.channel, sequence), record);
        let list = events.get(entry.channel);
        if (!list) events.set(entry.channel, (list = []));
        list.push(storedEvent(entry.channel, sequence, now, entry.key, entry.bytes, record, entry.origin, entry.onlyGroup));
        const entryKey = relay ? dk : dedupTableKey(active, dk);
        batch.put(entryKey, Buffer.from(`${sequence}:${now}`));
        this.dedupFilter.add(dk);
        if (!relay) {
          this.tableAdds[active]!++;
          this.tableMayHold[active] = true;
        }
        const result = { sequence, duplicate: false };
        seen.set(dk, result);
        out.push(result);
      }
      results.push(out);
    }
    for (const [channel, head] of touched) batch.put(headKey(channel), Buffer.from(JSON.stringify(head)));
    const settles: ((stored: boolean) => void)[] = [];
    if (this.preparers.size > 0 && events.size > 0) {
      const attempts = new GroupBatch(this, batch);
      for (const [channel, list] of events) {
        for (const p of this.preparers) {
          const settle = p(channel, list, attempts);
          if (settle) settles.push(settle);
        }
      }
      attempts.stage();
    }
    return { eventBatch, batch, touched, events, seen, results, refusals, settles };
  }

  /**
   * The refusal of an append whose new channels would pass maxChannels, counting `fresh`
   * (the new channels of the group so far); otherwise adds its new channels to `fresh`.
   */
  private refuseNewChannels(entries: readonly AppendEntry[], fresh: Set<string>): WeftError | undefined {
    let mine: Set<string> | undefined;
    for (const e of entries) {
      if (this.held.has(e.channel) || fresh.has(e.channel)) continue;
      (mine ??= new Set()).add(e.channel);
    }
    if (!mine) return undefined;
    const refusal = this.channelRefusal(mine.size, [...mine][0]!);
    if (!refusal) for (const c of mine) fresh.add(c);
    return refusal;
  }

  /** A group is stored: its heads become the log's, and readers hear of it. */
  private applied(written: Written): void {
    for (const channel of written.touched.keys()) this.held.add(channel);
    this.preparing = new Set();
    for (const [channel, head] of written.touched) {
      const before = this.heads.get(channel);
      this.observer.stored(channel, head.last - (before?.last ?? 0), head.bytes - (before?.bytes ?? 0));
      this.storedTotal += head.bytes - (before?.bytes ?? 0);
      this.heads.set(channel, head);
      this.tail.add(channel, written.events.get(channel)!);
    }
    for (const settle of written.settles) settle(true);
    for (const [channel, head] of written.touched) for (const l of this.listeners) l(channel, head.last);
  }

  /**
   * The earlier append a stored dedup entry points to, if it is within the window and still
   * stored (`first`: the channel's oldest retained sequence): the event at its sequence must
   * be the one appended at the entry's time. An entry whose events were lost in a crash
   * between the group's two writes names a sequence that holds nothing, or, once used again,
   * another event (see reconcile).
   */
  private duplicateOf(channel: string, value: Uint8Array | undefined, now: number, relay: boolean, first: number): AppendResult | undefined {
    if (value === undefined) return undefined;
    const [seq, at] = Buffer.from(value).toString("utf8").split(":").map(Number);
    // A relay copy's entry lasts as long as the copy: retention removes both together. A
    // publish's entry stays in its table after retention removed the event: re-publishing it
    // then stores it again.
    if (seq === undefined || at === undefined || seq < first || (!relay && now - at >= this.dedupWindowMs)) return undefined;
    const event = this.eventDb(channel, seq).getSync(eventKey(channel, seq));
    if (event === undefined || recordTime(event) !== at) return undefined;
    return { sequence: seq, duplicate: true };
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
    const legacyThrough = this.legacyThrough(channel);
    if (start > legacyThrough) return this.readFrom(this.events, channel, head, start, limit, maxBytes);
    // From before the log's upgrade (see loadLegacy), then on from the events' database.
    const old = await this.readFrom(this.db, channel, head, start, Math.min(limit, legacyThrough - start + 1), maxBytes);
    const bytes = old.reduce((sum, e) => sum + e.bytes.length, 0);
    if (old.length === 0 || old[old.length - 1]!.sequence < legacyThrough || old.length >= limit || bytes >= maxBytes) return old;
    return old.concat(await this.readFrom(this.events, channel, head, legacyThrough + 1, limit - old.length, maxBytes - bytes));
  }

  /** `read` from one database: its events of `channel` from `start` on, LevelDB only. */
  private async readFrom(db: Db, channel: string, head: ChannelHead, start: number, limit: number, maxBytes: number): Promise<StoredEvent[]> {
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
    const iterator = db.iterator({
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
    const legacyThrough = this.legacyThrough(channel);
    const fromEvents = sequences.filter((s) => s > legacyThrough);
    const values = await this.events.getMany(fromEvents.map((s) => eventKey(channel, s)));
    if (fromEvents.length < sequences.length) {
      // From before the log's upgrade (see loadLegacy), in order with the rest.
      const old = await this.db.getMany(sequences.filter((s) => s <= legacyThrough).map((s) => eventKey(channel, s)));
      let o = 0;
      let e = 0;
      return sequences.map((s) => {
        const v = s <= legacyThrough ? old[o++] : values[e++];
        return v === undefined ? undefined : decodeRecord(channel, s, v);
      });
    }
    return values.map((v, i) => (v === undefined ? undefined : decodeRecord(channel, sequences[i]!, v)));
  }

  /** The first retained sequence stored at or after `time` (Unix ms); last + 1 if none. */
  sequenceAtTime(channel: string, time: number): number {
    const head = this.head(channel);
    let lo = head.first;
    let hi = head.last + 1;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const value = this.eventDb(channel, mid).getSync(eventKey(channel, mid));
      if (value !== undefined && recordTime(value) >= time) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  // ---- group state ----

  /** Every stored group, with its acked and in-flight entries above its cursor. */
  async loadGroups(): Promise<LoadedGroup[]> {
    const out: LoadedGroup[] = [];
    for await (const [, value] of this.db.iterator({ gte: "g!", lt: prefixEnd("g!") })) {
      const record = JSON.parse(Buffer.from(value).toString("utf8")) as GroupRecord;
      this.held.add(record.channel);
      // From the cursor on: below it everything is done, and the entries of a backlog just
      // drained are a million deletes that LevelDB has not compacted away yet, which an
      // iterator from the prefix would step over one by one.
      const above = record.ackedThrough + 1;
      const acked: number[] = [];
      for await (const key of this.db.keys({
        gte: ackedKey(record.channel, record.group, above),
        lt: prefixEnd(ackedPrefix(record.channel, record.group)),
      })) {
        acked.push(seqOfKey(key));
      }
      const inflight: InflightRecord[] = [];
      const recorded = new Set<number>();
      for await (const [key, v] of this.db.iterator({
        gte: inflightKey(record.channel, record.group, above),
        lt: prefixEnd(inflightPrefix(record.channel, record.group)),
      })) {
        const sequence = seqOfKey(key);
        const attempt = Number(Buffer.from(v).toString("utf8"));
        recorded.add(sequence);
        // "0": given back after a first attempt recorded in a pump record; none counts.
        inflight.push({ sequence, attempt: Number.isFinite(attempt) ? attempt : 1 });
      }
      // Pump records become one in-flight record per first attempt still open, so a
      // dispatcher only tracks the pump records it writes itself.
      const done = new Set(acked);
      const convert = this.db.batch();
      for await (const [key, v] of this.db.iterator({ gte: pumpPrefix(record.channel, record.group), lt: prefixEnd(pumpPrefix(record.channel, record.group)) })) {
        for (const sequence of pumpSequences(v)) {
          if (sequence < above || done.has(sequence) || recorded.has(sequence)) continue;
          recorded.add(sequence);
          inflight.push({ sequence, attempt: 1 });
          convert.put(inflightKey(record.channel, record.group, sequence), attemptValue(1));
        }
        convert.del(key);
      }
      if (convert.length > 0) await convert.write();
      else await convert.close();
      out.push({ record, acked, inflight });
    }
    return out;
  }

  /** The dead letters of `group` (of `channel`) in `deadLetterChannel` an operator has handled. */
  async deadLetterMarks(deadLetterChannel: string, channel: string, group: string): Promise<DeadLetterMarks> {
    const value = await this.db.get(deadLetterMarksKey(deadLetterChannel, channel, group));
    if (value === undefined) return { through: 0, handled: [] };
    return JSON.parse(Buffer.from(value).toString("utf8")) as DeadLetterMarks;
  }

  /** Stores what `deadLetterMarks` reads. */
  async putDeadLetterMarks(deadLetterChannel: string, channel: string, group: string, marks: DeadLetterMarks): Promise<void> {
    if (this.closed) throw new WeftError(status.UNAVAILABLE, Reason.LOG_CLOSED, "the log is closed");
    await this.db.put(deadLetterMarksKey(deadLetterChannel, channel, group), Buffer.from(JSON.stringify(marks)));
  }

  /** Starts a batch of group-state changes, written together by `write()`. */
  groupBatch(): GroupBatch {
    return new GroupBatch(this);
  }

  /**
   * Writes group-state changes (GroupBatch.write) in one LevelDB write. While the disk is
   * full they wait, in the order they were made, and are written once there is room (see
   * probe): a cursor, an ack or an attempt is late, never lost or written out of order.
   * Rejects with LOG_CLOSED if the log closes first.
   * @internal
   */
  writeState(ops: StateOp[]): Promise<void> {
    const order = ++this.stateWrites;
    if (this.full || this.stalled.length > 0) return this.stall(order, ops);
    return this.writeOps(ops).catch((e: unknown) => {
      if (this.closed || !isDiskFull(e)) throw e;
      this.failed(e);
      return this.stall(order, ops);
    });
  }

  /** One LevelDB write of `ops`, made afresh each time: a batch whose write failed cannot be written again. */
  private writeOps(ops: StateOp[]): Promise<void> {
    const batch = this.db.batch();
    for (const op of ops) {
      if (op.type === "put") batch.put(op.key, op.value);
      else batch.del(op.key);
    }
    return batch.write();
  }

  private stall(order: number, ops: StateOp[]): Promise<void> {
    if (this.closed) return Promise.reject(new WeftError(status.UNAVAILABLE, Reason.LOG_CLOSED, "the log is closed"));
    return new Promise((resolve, reject) => {
      let at = this.stalled.length;
      while (at > 0 && this.stalled[at - 1]!.order > order) at--;
      this.stalled.splice(at, 0, { order, ops, resolve, reject });
    });
  }

  // ---- a full disk ----

  /**
   * Set while the disk is full: from the first write that failed for it until a probe (every
   * DISK_PROBE_MS) finds both databases writable again, has written the group state that
   * waited, and has set right what the failed writes left (see repair). Meanwhile appends
   * are refused with DISK_FULL, and nothing that was acked is lost: it is all on disk.
   */
  get diskFull(): DiskFull | undefined {
    return this.full && { ...this.full };
  }

  /** Bytes of the retained events of every channel: what `maxStoredBytes` bounds. */
  get storedBytes(): number {
    return this.storedTotal;
  }

  private diskFullError(): WeftError {
    return new WeftError(
      status.RESOURCE_EXHAUSTED,
      Reason.DISK_FULL,
      `the disk of the log (${this.dir}) is full (${this.full?.message ?? "no space left on device"}); nothing was stored: publish again once it has room`,
    );
  }

  /**
   * What a failed write is reported as: a full disk starts the full state (and its probe)
   * and is DISK_FULL; any other error is itself.
   */
  private failed(e: unknown): unknown {
    if (!isDiskFull(e) || this.closed) return e;
    const message = (e as Error).message;
    if (!this.full) {
      this.full = { since: this.now(), message };
      this.observer.diskFull(this.dir, true, message);
      this.probing = setInterval(() => void this.task(() => this.probe()).catch(() => {}), DISK_PROBE_MS);
      this.probing.unref();
    }
    return e instanceof WeftError ? e : this.diskFullError();
  }

  /**
   * While the disk is full: once the disk has REOPEN_FREE_BYTES free, opens both databases
   * again, tries a small write to each, writes the group state that waited, in order, sets
   * right the channels of failed appends, and ends the full state. Runs in the write loop,
   * so no append is written meanwhile.
   *
   * Why open them again: a write that failed for a full disk may have left part of itself at
   * the end of the database's write-ahead log, and LevelDB writes on past it as if it were
   * whole; the records written after it cannot be read when the log is replayed after a
   * crash, and acked events would be lost (test/disk-full.e2e.test.ts). Opened again, a
   * database replays its log into a table and starts a new one. It also clears LevelDB's
   * refusal of every write after a failed compaction. Reads fail while a database is closed;
   * readers are woken once the log is writable again.
   */
  private async probe(): Promise<void> {
    if (!this.full || this.closed) return;
    try {
      const { bavail, bsize } = await statfs(this.dir);
      if (bavail * bsize < REOPEN_FREE_BYTES) return;
      for (const db of [this.events, this.db]) {
        await db.close();
        await db.open();
        await db.put(PROBE_KEY, PROBE_VALUE, { sync: this.fsync });
      }
      await this.writeStalled();
      await this.repair();
      // Group state written while the repair ran waited too: the full state ends only once
      // none waits, with no await between that check and the end (else it would wait forever).
      await this.writeStalled();
    } catch (e) {
      if (this.full) this.full.message = (e as Error).message;
      return;
    }
    const since = this.full.since;
    this.full = undefined;
    clearInterval(this.probing);
    this.probing = undefined;
    this.observer.diskFull(this.dir, false, `writable again after ${this.now() - since} ms`);
    // A reader that failed while a database was opened again goes on.
    for (const [channel, head] of this.heads) for (const l of this.listeners) l(channel, head.last);
  }

  /** Writes the group state that waited for room, in the order it was made. */
  private async writeStalled(): Promise<void> {
    while (this.stalled.length > 0) {
      const write = this.stalled[0]!;
      await this.writeOps(write.ops);
      this.stalled.shift();
      write.resolve();
    }
  }

  /**
   * Sets right the channels of append groups whose write failed: a failed group's events
   * may be in the events' database with its heads not written, or its heads without its
   * events. The heads in memory are the truth (they move only once a group is written): they
   * are written again, and events above them removed. Runs in the write loop.
   */
  private async repair(): Promise<void> {
    if (this.unrepaired.size === 0) return;
    const channels = [...this.unrepaired];
    const heads = this.db.batch();
    for (const channel of channels) {
      const head = this.heads.get(channel);
      if (head) heads.put(headKey(channel), Buffer.from(JSON.stringify(head)));
      else heads.del(headKey(channel));
      const prefix = eventPrefix(channel);
      await this.events.clear({ gt: eventKey(channel, head?.last ?? 0), lt: prefixEnd(prefix) });
    }
    await heads.write({ sync: this.fsync });
    for (const channel of channels) this.unrepaired.delete(channel);
  }

  /**
   * Adds every stored dedup key to `into` (for the dedup filter), from a snapshot taken in
   * the write loop between groups: every key written after it is added as it is prepared.
   */
  private async loadDedupKeys(into: BloomFilter): Promise<void> {
    const snapshot = () => this.db.keys({ gte: DEDUP_PREFIX, lt: prefixEnd(DEDUP_PREFIX), fillCache: false, highWaterMarkBytes: DEDUP_LOAD_BYTES });
    let iterator: ReturnType<typeof snapshot> | undefined;
    await this.task(async () => {
      iterator = snapshot();
    });
    try {
      for (;;) {
        if (this.closed) throw new WeftError(status.UNAVAILABLE, Reason.LOG_CLOSED, "the log is closed");
        const keys = await iterator!.nextv(DEDUP_LOAD_STEP);
        if (keys.length === 0) return;
        for (const key of keys) into.add(dedupIdentityOf(key));
      }
    } finally {
      await iterator!.close();
    }
  }

  /** @internal For tests: settles once the dedup filter's load under way, if any, has ended. */
  dedupFilterSettled(): Promise<void> {
    return this.dedupFilter.settled();
  }

  // ---- retention ----

  /**
   * Applies retention: removes each channel's oldest events while they are older than max
   * age or the channel is over max bytes (counted in `expired`), and clears the dedup table
   * that is past the window (see DedupTables). Each pass is planned with reads outside the
   * write loop and applied inside it, so appends are never overwritten. Listeners of `onTrim`
   * hear about every channel whose first sequence moved. One sweep at a time; close() waits
   * for it.
   */
  sweep(): Promise<void> {
    this.sweeping ??= this.sweepAll()
      .catch((e: unknown) => {
        throw this.failed(e);
      })
      .finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async sweepAll(): Promise<void> {
    // Its writes would fail too; it runs again at the next interval after the disk has room.
    if (this.full) return;
    await this.rotateDedupTables();
    for (const channel of [...this.heads.keys()]) {
      for (let pass = 0; pass < MAX_SWEEP_PASSES && !this.closed && !this.full; pass++) {
        const started = performance.now();
        const plan = await this.planSweep(channel);
        if (!plan) break;
        await this.task(() => this.applySweep(channel, plan));
        await sleep(SWEEP_PAUSE_FACTOR * (performance.now() - started));
      }
    }
  }

  private async planSweep(channel: string): Promise<SweepPlan | undefined> {
    const head = this.heads.get(channel);
    if (!head || this.closed) return undefined;
    const now = this.now();
    const own = this.options.channelRetention;
    const retention = (own && Object.hasOwn(own, channel) ? own[channel] : undefined) ?? this.options.retention ?? DEFAULT_RETENTION;
    const plan: SweepPlan = { first: head.first, expire: [] };
    const legacyBefore = this.tables.legacyBefore;
    // Retention by age and size, oldest first.
    let over = head.bytes - retention.maxBytes;
    // The first read is one event: mostly it is not due, and that ends the scan.
    let chunk = 1;
    retain: for (let from = head.first; from <= head.last && plan.expire.length < SWEEP_PASS_EVENTS; chunk = SWEEP_PASS_EVENTS) {
      const events = await this.read(channel, from, Math.min(chunk, SWEEP_PASS_EVENTS - plan.expire.length));
      if (events.length === 0 || this.closed) break;
      for (const event of events) {
        if (now - event.appendedAt <= retention.maxAgeMs && over <= 0) break retain;
        const size = recordSize(event);
        // A publish's entry in a dedup table stays there; the table is cleared whole.
        const ids = event.origin || event.appendedAt <= legacyBefore ? identity(event) : undefined;
        plan.expire.push({ sequence: event.sequence, size, dedupKey: ids && dedupKey(channel, ids.source, ids.id) });
        over -= size;
        from = event.sequence + 1;
      }
    }
    return plan.expire.length === 0 ? undefined : plan;
  }

  /** Applies a sweep plan to the live head; runs in the write loop. */
  private async applySweep(channel: string, plan: SweepPlan): Promise<void> {
    const head = this.heads.get(channel);
    if (!head || head.first !== plan.first || this.closed) return;
    const batch = this.db.batch();
    const removed = this.events.batch();
    const next = { ...head };
    // A dedup entry goes only if it still points at the event (no re-publish since).
    let forgotten = 0;
    const forget = (dk: string | undefined, sequence: number): void => {
      if (!dk) return;
      const v = this.db.getSync(dk);
      if (v !== undefined && Buffer.from(v).toString("utf8").startsWith(`${sequence}:`)) {
        batch.del(dk);
        forgotten++;
      }
    };
    for (const e of plan.expire) {
      // Events in the main database (see loadLegacy) are removed in the head's own write.
      (this.eventDb(channel, e.sequence) === this.db ? batch : removed).del(eventKey(channel, e.sequence));
      forget(e.dedupKey, e.sequence);
      next.bytes -= e.size;
      next.expired += 1;
      next.first = e.sequence + 1;
    }
    batch.put(headKey(channel), Buffer.from(JSON.stringify(next)));
    // The head first: a crash before the events' write leaves them below it, where nothing
    // reads and the next open removes them (see reconcile). The other way round, a reader
    // would find the head's first event gone.
    await batch.write();
    this.dedupFilter.deleted(forgotten);
    this.heads.set(channel, next);
    this.storedTotal -= head.bytes - next.bytes;
    if (next.expired > head.expired) this.observer.expired(channel, undefined, next.expired - head.expired);
    if (next.first !== head.first) for (const l of this.trimListeners) l(channel, next.first);
    try {
      await removed.write();
    } catch (e) {
      this.halfWritten = true;
      throw e;
    }
  }

  /**
   * Once the dedup table not written has not been for a whole window, clears it (a range
   * delete on LevelDB's thread: nothing per entry on this loop) and makes it the one written.
   * A crash before the switch is written clears it again on the next sweep.
   *
   * One call, not steps: each step's iterator would walk the deletions of the steps before
   * it, so clearing in steps costs several times the time and CPU of one call.
   */
  private async rotateDedupTables(): Promise<void> {
    if (this.closed || this.now() - this.tables.since < this.dedupWindowMs) return;
    const retired = 1 - this.tables.active;
    const prefix = dedupTablePrefix(retired);
    await this.db.clear({ gte: prefix, lt: prefixEnd(prefix) });
    this.dedupFilter.deleted(this.tableAdds[retired]!);
    this.tableAdds[retired] = 0;
    this.tableMayHold[retired] = false;
    if (this.closed) return;
    await this.task(async () => {
      const tables = { ...this.tables, active: retired, since: this.now() };
      await this.db.put(DEDUP_TABLES_KEY, Buffer.from(JSON.stringify(tables)));
      this.tables = tables;
    });
  }

  /**
   * Waits for queued appends to be written, then closes LevelDB. Appends after close are
   * refused with UNAVAILABLE. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.probing);
    const closing = new WeftError(status.UNAVAILABLE, Reason.LOG_CLOSED, "the log is closed");
    for (const write of this.stalled.splice(0)) write.reject(closing);
    await this.sweeping?.catch(() => {});
    await this.drained;
    this.tail.clear();
    // A failed write may have left one database ahead of the other: the next open repairs it.
    if (!this.halfWritten && this.unrepaired.size === 0 && !this.full) await this.db.put(CLOSED_KEY, Buffer.from("1"), { sync: true }).catch(() => {});
    await Promise.all([this.db.close(), this.events.close()]);
  }
}

const PROBE_VALUE = Buffer.from("1");

/**
 * Changes to group state, applied atomically by `write()` (through OriginLog.writeState,
 * which holds them back, in order, while the disk is full). Within an append group (see
 * PrepareListener) they go straight into the group's LevelDB batch instead.
 */
export class GroupBatch {
  private readonly ops: StateOp[] = [];
  private size = 0;
  /** Group records to put, by key, encoded once at write: an ack batch advances a cursor many times. */
  private groups: Map<string, GroupRecord> | undefined;
  /**
   * `within`: an append group's batch, which the log writes (see PrepareListener); this
   * batch then only adds to it, and is never written by itself.
   */
  constructor(
    private readonly log: OriginLog,
    private readonly within?: ChainedBatch,
  ) {}

  private put(key: string, value: Uint8Array): void {
    if (this.within) this.within.put(key, value);
    else this.ops.push({ type: "put", key, value });
  }

  private del(key: string): void {
    if (this.within) this.within.del(key);
    else this.ops.push({ type: "del", key });
  }

  /** Puts a group's record; when one batch puts the same group again, the last record wins. */
  putGroup(record: GroupRecord): this {
    const key = groupKey(record.channel, record.group);
    this.groups ??= new Map();
    if (!this.groups.has(key)) this.size++;
    this.groups.set(key, record);
    return this;
  }
  putAcked(channel: string, group: string, seq: number): this {
    this.put(ackedKey(channel, group, seq), EMPTY);
    this.size++;
    return this;
  }
  delAcked(channel: string, group: string, seq: number): this {
    this.del(ackedKey(channel, group, seq));
    this.size++;
    return this;
  }
  putInflight(channel: string, group: string, seq: number, attempt: number): this {
    this.put(inflightKey(channel, group, seq), attemptValue(attempt));
    this.size++;
    return this;
  }
  /** Records first attempts sent together: one entry for all of `seqs` (in-flight entries win over it). */
  putPump(channel: string, group: string, seqs: readonly number[]): this {
    const value = Buffer.allocUnsafe(seqs.length * 8);
    seqs.forEach((seq, i) => value.writeDoubleLE(seq, i * 8));
    this.put(pumpKey(channel, group, seqs[0]!), value);
    this.size++;
    return this;
  }
  /** Deletes a pump record once every sequence in it is done. */
  delPump(channel: string, group: string, firstSeq: number): this {
    this.del(pumpKey(channel, group, firstSeq));
    this.size++;
    return this;
  }
  delInflight(channel: string, group: string, seq: number): this {
    this.del(inflightKey(channel, group, seq));
    this.size++;
    return this;
  }
  get length(): number {
    return this.size;
  }
  async write(): Promise<void> {
    if (this.within) throw new Error("a GroupBatch within an append group is written with it");
    if (this.size === 0) return;
    this.stage();
    await this.log.writeState(this.ops);
  }
  /** Puts the group records into the batch (write() does it; the log does it for a batch within an append group). */
  stage(): void {
    if (!this.groups) return;
    for (const [key, record] of this.groups) this.put(key, Buffer.from(JSON.stringify(record)));
    this.groups = undefined;
  }
}

const EMPTY = new Uint8Array(0);

/** The sequences of a pump record (GroupBatch.putPump). */
function pumpSequences(value: Uint8Array): number[] {
  const buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  const out: number[] = [];
  for (let i = 0; i + 8 <= buf.length; i += 8) out.push(buf.readDoubleLE(i));
  return out;
}

/** In-flight record values by attempt, made once: LevelDB copies a value when it is put. */
const ATTEMPT_VALUES = Array.from({ length: 64 }, (_, i) => Buffer.from(String(i)));
const attemptValue = (attempt: number): Uint8Array => ATTEMPT_VALUES[attempt] ?? Buffer.from(String(attempt));

/**
 * The identity an event was deduplicated by: a relay copy's, a redriven dead letter's, or
 * the event's (source, id); undefined if it cannot be read.
 */
function identity(event: StoredEvent): { source: string; id: string } | undefined {
  if (event.origin) return relayIdentity(event.origin);
  if (event.onlyGroup === undefined) return parseIdentity(event.bytes);
  try {
    const from = fromBinary(EventSchema, event.bytes).attributes["weft.redrive.from"];
    return from === undefined ? undefined : redriveIdentity(event.onlyGroup, from);
  } catch {
    return undefined;
  }
}

function parseIdentity(bytes: Uint8Array): { source: string; id: string } | undefined {
  try {
    const e = fromBinary(EventSchema, bytes);
    return { source: e.source, id: e.id };
  } catch {
    return undefined;
  }
}
