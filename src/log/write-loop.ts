import type { WeftError } from "../contract/errors.js";
import type { Observer } from "../ops/observer.js";
import type { ChannelLimit } from "./channel-limit.js";
import type { Dedup, Lookup } from "./dedup.js";
import { type DiskWatch, isDiskFull } from "./disk-full.js";
import { eventKey, headKey } from "./keys.js";
import { type StoredEvent, encodeRecord, storedEvent } from "./record.js";
import type { EventStore } from "./store.js";
import { type AppendEntry, type AppendResult, type ChainedBatch, type ChannelHead, emptyHead } from "./types.js";

/**
 * An append group (one LevelDB write) ends at this many events or bytes of events. Larger
 * writes save little more, and every other write (a delivery's attempt, an ack) waits
 * behind the one in progress: a larger group makes deliveries wait longer.
 */
export const MAX_APPEND_GROUP = 10_000;
export const MAX_APPEND_GROUP_BYTES = 256 * 1024;

interface PendingAppend {
  entries: AppendEntry[];
  resolve: (results: AppendResult[]) => void;
  reject: (error: unknown) => void;
}

/** Work in the write loop other than appending; runs alone, where no group is prepared and unwritten. */
interface PendingTask {
  run: () => Promise<void>;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** An append group whose dedup entries are being looked up. */
interface LookedUp {
  group: PendingAppend[];
  lookup: Lookup;
}

/** An append group ready to write. */
interface Written {
  /** Its events, for the events' database. */
  eventBatch: ChainedBatch;
  /** Everything else (dedup entries, heads), for the main database. */
  batch: ChainedBatch;
  touched: Map<string, ChannelHead>;
  events: Map<string, StoredEvent[]>;
  /** Its new dedup entries: what the next group, looked up meanwhile, cannot see yet. */
  seen: Map<string, AppendResult>;
  results: AppendResult[][];
  /** Per pending append, the refusal that stored none of it (a channel past maxChannels). */
  refusals: (WeftError | undefined)[];
  /** Per channel, the relay copies among its new events (for the observer). */
  copies: Map<string, { count: number; bytes: number }>;
}

/** What the write loop works with. */
export interface WriteLoopHost {
  readonly store: EventStore;
  readonly dedup: Dedup;
  readonly channels: ChannelLimit;
  readonly disk: DiskWatch;
  readonly observer: Observer;
  readonly fsync: boolean;
  now(): number;
  /** A group was stored: `channel` has events up to `last`. */
  appended(channel: string, last: number): void;
}

const NO_COPIES = { count: 0, bytes: 0 } as const;

/** Writes an append group's two batches at once; fails if either failed, once both are done. */
async function writeBoth(events: ChainedBatch, rest: ChainedBatch, sync: boolean): Promise<void> {
  const [a, b] = await Promise.allSettled([events.write({ sync }), rest.write({ sync })]);
  if (a.status === "rejected") throw a.reason;
  if (b.status === "rejected") throw b.reason;
}

/**
 * The only writer of heads: append groups (group-committed: concurrent appends are written
 * together, in call order, one fsync per database) and tasks, one at a time.
 *
 * A group is two LevelDB writes, made at once: its events to the events' database, and its
 * dedup entries and heads to the main one. A crash can land between them; opening repairs
 * either half (see EventStore.reconcile). Nothing but the log's own state is in them.
 *
 * While a group is written, the next group's dedup entries are already looked up (a group's
 * lookup takes about as long as its write): that lookup cannot see what the group being
 * written adds, so the next group also checks that group's entries in memory.
 */
export class WriteLoop {
  private readonly queue: PendingAppend[] = [];
  private readonly tasks: PendingTask[] = [];
  private writing = false;
  private drained: Promise<void> = Promise.resolve();
  private markDrained: () => void = () => {};

  constructor(private readonly host: WriteLoopHost) {}

  /** Queues an append; resolves once stored, one result per entry. */
  append(entries: AppendEntry[]): Promise<AppendResult[]> {
    return new Promise((resolve, reject) => {
      this.queue.push({ entries, resolve, reject });
      this.start();
    });
  }

  /**
   * Runs `run` in the write loop, so heads change in one place only: at the next point
   * between two append groups, ahead of the appends queued meanwhile (a group already looked
   * up is prepared after it, against the heads it leaves). Behind every queued append, the
   * dedup filter's snapshot would wait for all of them, and each of their ids would be looked
   * up in LevelDB meanwhile.
   */
  task(run: () => Promise<void>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.tasks.push({ run, resolve, reject });
      this.start();
    });
  }

  /** Settles once everything queued so far is written (or refused). */
  idle(): Promise<void> {
    return this.drained;
  }

  /**
   * An idle write loop starts after the current callback (a microtask), not in the loop's
   * next check phase: an event that comes alone is written without waiting for the other
   * I/O of the same turn. Appends that come while a group is written make the next group.
   */
  private start(): void {
    if (!this.writing) {
      this.writing = true;
      this.drained = new Promise((r) => (this.markDrained = r));
      queueMicrotask(() => void this.run());
    }
  }

  private async run(): Promise<void> {
    const { store, disk, channels } = this.host;
    let next: LookedUp | undefined;
    while (next || this.queue.length > 0 || this.tasks.length > 0) {
      // Here no group is prepared and unwritten; `next` is only looked up.
      if (disk.isFull && next) {
        // The probe (a task) may close the databases under its lookup; it is refused below anyway.
        this.queue.unshift(...next.group);
        next = undefined;
      }
      const task = this.tasks.shift();
      if (task) {
        await task.run().then(task.resolve, task.reject);
        continue;
      }
      if (disk.isFull) {
        // Refused at once, nothing written: the publisher hears now, not when there is room.
        const error = disk.error();
        for (const p of this.queue.splice(0)) p.reject(error);
        continue;
      }
      if (store.unrepaired.size > 0) {
        try {
          await store.repair(this.host.fsync);
        } catch (e) {
          if (isDiskFull(e)) {
            disk.failed(e);
          } else {
            // Left to the next open, which repairs what any crash leaves (see reconcile).
            store.halfWritten = true;
            store.unrepaired.clear();
          }
          continue;
        }
      }
      const current = next ?? this.lookUp(this.takeGroup(), undefined);
      next = undefined;
      let written: Written | undefined;
      try {
        written = this.prepare(current, await current.lookup.stored);
        if (this.queue.length > 0) next = this.lookUp(this.takeGroup(), written.seen);
        await writeBoth(written.eventBatch, written.batch, this.host.fsync);
      } catch (e) {
        channels.settle(undefined);
        if (written) for (const channel of written.touched.keys()) store.unrepaired.add(channel);
        const error = disk.failed(e);
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

  private lookUp(group: PendingAppend[], pending: Map<string, AppendResult> | undefined): LookedUp {
    return { group, lookup: this.host.dedup.lookUp(group, pending) };
  }

  /** Assigns sequences and builds the batches of a looked-up group (heads change once it is written). */
  private prepare({ group, lookup }: LookedUp, stored: (Uint8Array | undefined)[]): Written {
    const { store, dedup, channels } = this.host;
    const now = this.host.now();
    const eventBatch = store.events.batch();
    const batch = store.main.batch();
    const touched = new Map<string, ChannelHead>();
    const events = new Map<string, StoredEvent[]>();
    const seen = new Map<string, AppendResult>();
    const results: AppendResult[][] = [];
    const refusals: (WeftError | undefined)[] = [];
    const copies = new Map<string, { count: number; bytes: number }>();
    let k = 0;
    channels.startGroup();
    for (const p of group) {
      const out: AppendResult[] = [];
      const refusal = channels.admit(p.entries);
      refusals.push(refusal);
      if (refusal) {
        // None of it is stored: its lookups are passed over.
        for (let i = 0; i < p.entries.length; i++, k++) dedup.skip(lookup, k);
        results.push(out);
        continue;
      }
      for (const entry of p.entries) {
        const dk = lookup.keys[k]!;
        // Most entries were not looked up (the dedup filter knows they are new): no head read for them.
        const found = dedup.asked(lookup, k) ? dedup.found(lookup, stored, k, entry, (touched.get(entry.channel) ?? store.heads.get(entry.channel))?.first ?? 1, now) : undefined;
        k++;
        const earlier = seen.get(dk) ?? lookup.pending?.get(dk) ?? found;
        if (earlier) {
          out.push({ sequence: earlier.sequence, duplicate: true });
          this.host.observer.deduplicated(entry.channel, entry.origin !== undefined);
          continue;
        }
        let head = touched.get(entry.channel);
        if (!head) {
          head = store.heads.get(entry.channel) ?? emptyHead();
          head = { ...head };
          touched.set(entry.channel, head);
        }
        const sequence = head.last + 1;
        head.last = sequence;
        const record = encodeRecord(now, entry.key, entry.bytes, entry);
        head.bytes += record.length;
        if (entry.origin) {
          const c = copies.get(entry.channel);
          if (c) c.count++, (c.bytes += record.length);
          else copies.set(entry.channel, { count: 1, bytes: record.length });
        }
        eventBatch.put(eventKey(entry.channel, sequence), record);
        let list = events.get(entry.channel);
        if (!list) events.set(entry.channel, (list = []));
        list.push(storedEvent(entry.channel, sequence, now, entry.key, entry.bytes, record, entry));
        dedup.record(batch, dk, entry.origin !== undefined, sequence, now);
        const result = { sequence, duplicate: false };
        seen.set(dk, result);
        out.push(result);
      }
      results.push(out);
    }
    for (const [channel, head] of touched) batch.put(headKey(channel), Buffer.from(JSON.stringify(head)));
    return { eventBatch, batch, touched, events, seen, results, refusals, copies };
  }

  /** A group is stored: its heads become the store's, and readers hear of it. */
  private applied(written: Written): void {
    const { store, channels, observer } = this.host;
    channels.settle(written.touched.keys());
    for (const [channel, head] of written.touched) {
      const before = store.heads.get(channel);
      observer.stored(channel, head.last - (before?.last ?? 0), head.bytes - (before?.bytes ?? 0), written.copies.get(channel) ?? NO_COPIES);
      store.advance(channel, head, written.events.get(channel)!);
    }
    for (const [channel, head] of written.touched) this.host.appended(channel, head.last);
  }
}
