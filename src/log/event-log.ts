import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { status } from "@grpc/grpc-js";
import { Reason, WeftError } from "../contract/errors.js";
import { NO_OBSERVER } from "../ops/observer.js";
import { ChannelLimit } from "./channel-limit.js";
import { Dedup } from "./dedup.js";
import { DiskWatch, logClosed } from "./disk-full.js";
import { EVENTS_SPLIT_KEY, LOG_ID_KEY } from "./keys.js";
import { RetentionSweep } from "./retention.js";
import { EventStore } from "./store.js";
import type { AppendEntry, AppendOptions, AppendResult, ChannelHead, DiskFull, EventLogOptions, StateOp, StateStore } from "./types.js";
import { WriteLoop } from "./write-loop.js";
import type { StoredEvent } from "./record.js";

export type { AppendEntry, AppendOptions, AppendResult, ChainedBatch, ChannelHead, DiskFull, EventLogOptions, Retention, StateOp, StateStore } from "./types.js";
export { LEVELDB_OPTIONS } from "./types.js";
export { EVENTS_DIR } from "./store.js";
export { DISK_PROBE_MS, isDiskFull } from "./disk-full.js";
export { MAX_APPEND_GROUP, MAX_APPEND_GROUP_BYTES } from "./write-loop.js";

/** What the log tells its readers, in the order it happens. */
export interface LogEvents {
  /** An append group was stored: `channel` has events up to `last` (also after a full disk, to wake readers). */
  appended: [channel: string, last: number];
  /** Retention removed the oldest events of `channel`; `first` is the new oldest. */
  trimmed: [channel: string, first: number];
}

/**
 * The event log: every event this sidecar stores, per channel, in LevelDB, plus the durable
 * state of the groups that read it. Its parts, one file each:
 * - store.ts: the two databases, heads, reads, and crash repair;
 * - write-loop.ts: group-committed appends (a resolved append means stored) and the tasks
 *   that change heads between them;
 * - dedup.ts: deduplication by (channel, source, id);
 * - retention.ts: removal of old events by age and size;
 * - disk-full.ts: refusing appends while the disk is full, and the state writes that wait.
 *
 * The groups' state (src/delivery/group-state.ts) is kept in the main database under keys
 * of its own, through the handle `state`, in writes of its own: an append's write holds
 * the log's state only, and the log never calls the layers above it while it writes.
 */
export class EventLog {
  /** Told of appends and trims (see LogEvents). */
  readonly emitter = new EventEmitter<LogEvents>();
  private readonly channelLimit: ChannelLimit;
  private readonly loop: WriteLoop;
  private readonly dedup: Dedup;
  private readonly disk: DiskWatch;
  private readonly retention: RetentionSweep;
  private sweeping: Promise<void> | undefined;
  private closed = false;

  private constructor(
    /** The log's directory. */
    readonly dir: string,
    private readonly store: EventStore,
    private readonly options: EventLogOptions,
    /**
     * Random, chosen when the log was created: a wiped data directory is a new log, whose
     * sequences start again at 1. Peers keep relay copies per (node, log id).
     */
    readonly id: bigint,
  ) {
    this.emitter.setMaxListeners(0);
    const now = options.now ?? Date.now;
    const observer = options.observer ?? NO_OBSERVER;
    const fsync = options.fsync ?? false;
    const log = this;
    this.channelLimit = new ChannelLimit(options.maxChannels ?? Infinity, observer);
    this.disk = new DiskWatch(
      dir,
      {
        main: store.main,
        events: store.events,
        fsync,
        repair: () => store.repair(fsync),
        get closed() {
          return log.closed;
        },
      },
      observer,
      now,
      (probe) => this.loop.task(probe),
      // A reader that failed while a database was opened again goes on.
      () => {
        for (const [channel, head] of store.heads) this.emitter.emit("appended", channel, head.last);
      },
    );
    const host = {
      main: store.main,
      store,
      observer,
      fsync,
      now,
      get closed() {
        return log.closed;
      },
      get diskFull() {
        return log.disk.isFull;
      },
      recordAt: (channel: string, sequence: number) => store.recordAt(channel, sequence),
      task: (run: () => Promise<void>) => this.loop.task(run),
    };
    this.dedup = new Dedup(host, options.dedupWindowMs ?? 10 * 60_000);
    this.loop = new WriteLoop({
      store,
      dedup: this.dedup,
      channels: this.channelLimit,
      disk: this.disk,
      observer,
      fsync,
      now,
      appended: (channel, last) => this.emitter.emit("appended", channel, last),
    });
    this.retention = new RetentionSweep(
      {
        ...host,
        dedup: this.dedup,
        trimmed: (channel, first) => this.emitter.emit("trimmed", channel, first),
        halfWritten: () => (store.halfWritten = true),
      },
      options.retention,
      options.channelRetention,
    );
  }

  /** Opens (creating if needed) the log in `dir`. Only one process may hold it. */
  static async open(dir: string, options: EventLogOptions = {}): Promise<EventLog> {
    const store = await EventStore.open(dir);
    try {
      let id = await store.main.get(LOG_ID_KEY);
      if (id === undefined) {
        id = randomBytes(8);
        await store.main.put(LOG_ID_KEY, id, { sync: true });
      }
      // Written by 0.2, which no longer reads it: every event is in the events' database.
      await store.main.del(EVENTS_SPLIT_KEY);
      await store.load();
      const log = new EventLog(dir, store, options, Buffer.from(id).readBigUInt64BE(0));
      for (const channel of store.heads.keys()) log.channelLimit.add(channel);
      await log.dedup.load();
      return log;
    } catch (e) {
      await store.close(false).catch(() => {});
      throw e;
    }
  }

  /** @internal For tests that reach the databases. */
  get db(): EventStore["main"] {
    return this.store.main;
  }
  /** @internal For tests that reach the databases. */
  get events(): EventStore["events"] {
    return this.store.events;
  }

  /** Called after each append batch with every channel that grew and its new last sequence. */
  onAppend(listener: (channel: string, last: number) => void): () => void {
    this.emitter.on("appended", listener);
    return () => this.emitter.off("appended", listener);
  }

  /** The part of the main database lent to the groups' state (see StateStore). */
  get state(): StateStore {
    const log = this;
    return {
      db: this.store.main,
      write: (ops, wait) => this.writeState(ops, wait),
      get closed() {
        return log.closed;
      },
    };
  }

  /** Holds channels that stored groups read, whatever maxChannels says (they were held when the groups were made). */
  keepChannels(channels: Iterable<string>): void {
    for (const c of channels) this.channelLimit.add(c);
  }

  /** Called when retention removed the oldest events of a channel; `first` is the new oldest. */
  onTrim(listener: (channel: string, first: number) => void): () => void {
    this.emitter.on("trimmed", listener);
    return () => this.emitter.off("trimmed", listener);
  }

  /** The channel's head; an empty head for a channel never written. */
  head(channel: string): ChannelHead {
    return this.store.head(channel);
  }

  /** Every channel that has ever had an event. */
  channels(): string[] {
    return [...this.store.heads.keys()];
  }

  /** How many channels the log holds (see EventLogOptions.maxChannels). */
  get channelCount(): number {
    return this.channelLimit.count;
  }

  /**
   * Holds `channels` for groups that read them (a group is created on each), counting them
   * against maxChannels whether or not they have events yet: a channel held for a group
   * takes its peers' forwards for the group without ever being refused. All of them or none.
   * @throws WeftError TOO_MANY_CHANNELS (RESOURCE_EXHAUSTED) when they would pass the limit.
   */
  holdChannels(channels: readonly string[]): void {
    this.channelLimit.hold(channels);
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
    if (this.closed) return Promise.reject(logClosed());
    if (this.disk.isFull) return Promise.reject(this.disk.error());
    const quota = this.options.maxStoredBytes ?? 0;
    const stored = this.store.storedTotal;
    if (options.quota && quota > 0 && stored >= quota) {
      return Promise.reject(
        new WeftError(
          status.RESOURCE_EXHAUSTED,
          Reason.STORAGE_QUOTA,
          `the log holds ${stored} bytes of events, its quota (maxStoredBytes) is ${quota}; publish again once retention has removed old events, or raise the quota`,
        ),
      );
    }
    return this.loop.append(entries);
  }

  /**
   * Reads up to `limit` events of `channel` starting at sequence `from`, in order, stopping
   * once `maxBytes` of event bytes are read (always at least one event).
   */
  read(channel: string, from: number, limit: number, maxBytes = Infinity): Promise<StoredEvent[]> {
    return this.store.read(channel, from, limit, maxBytes);
  }

  /** Reads the given sequences of `channel`; undefined where retention removed one. */
  get(channel: string, sequences: number[]): Promise<(StoredEvent | undefined)[]> {
    return this.store.get(channel, sequences);
  }

  /** The first retained sequence stored at or after `time` (Unix ms); last + 1 if none. */
  sequenceAtTime(channel: string, time: number): number {
    return this.store.sequenceAtTime(channel, time);
  }

  /** Removes a channel whole: its events, head and dedup entries (see delivery/migrate-relay-channels.ts). */
  dropChannel(channel: string): Promise<void> {
    if (this.closed) return Promise.reject(logClosed());
    return this.loop.task(() => this.store.drop(channel));
  }

  /** Writes state changes in one LevelDB write (see DiskWatch.writeState); `state.write` is this. */
  writeState(ops: StateOp[], wait = true): Promise<void> {
    return this.disk.writeState(ops, wait);
  }

  // ---- a full disk ----

  /**
   * Set while the disk is full: from the first write that failed for it until a probe finds
   * both databases writable again (see DiskWatch). Meanwhile appends are refused with
   * DISK_FULL, and nothing that was acked is lost: it is all on disk.
   */
  get diskFull(): DiskFull | undefined {
    return this.disk.state;
  }

  /** Bytes of the retained events of every channel: what `maxStoredBytes` bounds. */
  get storedBytes(): number {
    return this.store.storedTotal;
  }

  /** @internal For tests: settles once the dedup filter's load under way, if any, has ended. */
  dedupFilterSettled(): Promise<void> {
    return this.dedup.settled();
  }

  /**
   * Applies retention (see RetentionSweep); `trimmed` tells of every channel whose first
   * sequence moved. One sweep at a time; close() waits for it.
   */
  sweep(): Promise<void> {
    this.sweeping ??= this.retention
      .run()
      .catch((e: unknown) => {
        throw this.disk.failed(e);
      })
      .finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  /**
   * Waits for queued appends to be written, then closes LevelDB. Appends after close are
   * refused with UNAVAILABLE. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.disk.close();
    await this.sweeping?.catch(() => {});
    await this.loop.idle();
    // A failed write may have left one database ahead of the other: the next open repairs it.
    const store = this.store;
    await store.close(!store.halfWritten && store.unrepaired.size === 0 && !this.disk.isFull);
  }
}
