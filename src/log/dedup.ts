import type { BloomFilter } from "./bloom-filter.js";
import { DedupFilter } from "./dedup-filter.js";
import { logClosed } from "./disk-full.js";
import { DEDUP_PREFIX, DEDUP_TABLES_KEY, dedupIdentityOf, dedupKey, dedupTableKey, dedupTablePrefix, prefixEnd } from "./keys.js";
import { type StoredEvent, recordTime, relayIdentity } from "./record.js";
import type { AppendEntry, AppendResult, ChainedBatch, Db } from "./types.js";

/**
 * Up to this many dedup lookups in an append batch are made on the loop (getSync, a few µs
 * each) rather than in one getMany on LevelDB's threads, whose round trip and wake-up cost
 * more than that when events come one or two at a time.
 */
const SYNC_LOOKUPS = 8;
/** Dedup keys the filter's load reads per native call, and the bytes it may take. */
const DEDUP_LOAD_STEP = 2000;
const DEDUP_LOAD_BYTES = 256 * 1024;

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
}

/** The dedup entries of an append group being looked up (see Dedup.lookUp). */
export interface Lookup {
  /** The dedup identity of every entry, in order: its dedupKey. */
  keys: string[];
  /**
   * For each key looked up, the entry (an index into keys, ascending) it may hold a duplicate
   * of: where the dedup filter may hold the entry's identity, its keys in both dedup tables,
   * or a relay copy's entry.
   */
  askedFor: number[];
  /** What LevelDB holds for each key asked. */
  stored: Promise<(Uint8Array | undefined)[]>;
  /** The entries of the group being written while this one was looked up. */
  pending: Map<string, AppendResult> | undefined;
  /** The next index into askedFor (advanced as the group is prepared). */
  at: number;
}

/** What Dedup needs of the log. */
export interface DedupHost {
  readonly main: Db;
  readonly closed: boolean;
  now(): number;
  /** The stored record of one event, read on this thread. */
  recordAt(channel: string, sequence: number): Uint8Array | undefined;
  /** Runs `run` in the write loop, between two append groups. */
  task(run: () => Promise<void>): Promise<void>;
}

/**
 * Deduplication of appends by (channel, source, id): a publish's (or a redrive's, or a dead
 * letter's) entry lives in the dedup tables for one to two windows; a relay copy's lives as
 * long as the copy (retention removes both). A dedup entry counts only while the event it names is
 * stored with the entry's append time (see duplicateOf), so an entry whose event a crash
 * lost never hides a new one.
 */
export class Dedup {
  private tables: DedupTables = { active: 0, since: 0 };
  /** Entries written to each dedup table since the log was opened (for the dedup filter's count). */
  private readonly tableAdds = [0, 0];
  /**
   * Whether each dedup table may hold an entry: a lookup skips one that holds none (a new
   * log's second table, or one just cleared). Until the dedup filter has loaded, every id
   * is looked up, and asking an empty table too would double those lookups and the memory
   * they take.
   */
  private readonly tableMayHold = [true, true];
  private readonly filter = new DedupFilter((into) => this.loadKeys(into));

  constructor(
    private readonly host: DedupHost,
    private readonly windowMs: number,
  ) {}

  /** Reads which table is written (a new log starts its first now). */
  async load(): Promise<void> {
    const { main } = this.host;
    const tables = await main.get(DEDUP_TABLES_KEY);
    if (tables !== undefined) {
      const { active, since } = JSON.parse(Buffer.from(tables).toString("utf8")) as DedupTables;
      this.tables = { active, since };
    } else {
      this.tables = { active: 0, since: this.host.now() };
      await main.put(DEDUP_TABLES_KEY, Buffer.from(JSON.stringify(this.tables)));
    }
    for (const table of [0, 1]) {
      const prefix = dedupTablePrefix(table);
      this.tableMayHold[table] = (await main.keys({ gte: prefix, lt: prefixEnd(prefix), limit: 1 }).all()).length > 0;
    }
  }

  /**
   * Starts looking up the dedup entries of a group's events that the dedup filter may hold
   * (most ids are new, and it knows): in one getMany on LevelDB's threads (a getSync per
   * event would take this loop's time, and this loop also delivers), or with getSync for a
   * few. `pending` is what the group written meanwhile adds.
   */
  lookUp(group: readonly { entries: readonly AppendEntry[] }[], pending: Map<string, AppendResult> | undefined): Lookup {
    const keys: string[] = [];
    const askedFor: number[] = [];
    const ask: string[] = [];
    for (const { entries } of group) for (const entry of entries) {
      const key = dedupKey(entry.channel, entry.source, entry.id);
      // The filter holds identities: a table's entry is added as its dedupKey.
      if (this.filter.mayHold(key)) {
        if (entry.origin !== undefined) {
          askedFor.push(keys.length), ask.push(key);
        } else {
          for (let table = 0; table < 2; table++) {
            if (this.tableMayHold[table]) askedFor.push(keys.length), ask.push(dedupTableKey(table, key));
          }
        }
      }
      keys.push(key);
    }
    const { main } = this.host;
    const stored = ask.length <= SYNC_LOOKUPS ? Promise.resolve(ask.map((k) => main.getSync(k))) : main.getMany(ask);
    // A failed lookup is the write's failure; until then it must not count as unhandled.
    stored.catch(() => {});
    return { keys, askedFor, stored, pending, at: 0 };
  }

  /** True when entry `k` was looked up (the dedup filter may hold its identity). */
  asked(lookup: Lookup, k: number): boolean {
    return lookup.askedFor[lookup.at] === k;
  }

  /** Passes over entry `k`'s lookups (an append refused whole). */
  skip(lookup: Lookup, k: number): void {
    while (lookup.askedFor[lookup.at] === k) lookup.at++;
  }

  /**
   * The earlier append entry `k` duplicates, from what LevelDB held (`stored`), or undefined.
   * `first`: the channel's oldest retained sequence.
   */
  found(lookup: Lookup, stored: (Uint8Array | undefined)[], k: number, entry: AppendEntry, first: number, now: number): AppendResult | undefined {
    let found: AppendResult | undefined;
    for (; lookup.askedFor[lookup.at] === k; lookup.at++) found ??= this.duplicateOf(entry.channel, stored[lookup.at], now, entry.origin !== undefined, first);
    return found;
  }

  /**
   * The earlier append a stored dedup entry points to, if it is within the window and still
   * stored: the event at its sequence must be the one appended at the entry's time. An entry
   * whose events were lost in a crash between the group's two writes names a sequence that
   * holds nothing, or, once used again, another event (see EventStore.reconcile).
   */
  private duplicateOf(channel: string, value: Uint8Array | undefined, now: number, relay: boolean, first: number): AppendResult | undefined {
    if (value === undefined) return undefined;
    const [seq, at] = Buffer.from(value).toString("utf8").split(":").map(Number);
    // A relay copy's entry lasts as long as the copy: retention removes both together. A
    // publish's entry stays in its table after retention removed the event: re-publishing it
    // then stores it again.
    if (seq === undefined || at === undefined || seq < first || (!relay && now - at >= this.windowMs)) return undefined;
    const event = this.host.recordAt(channel, seq);
    if (event === undefined || recordTime(event) !== at) return undefined;
    return { sequence: seq, duplicate: true };
  }

  /** Puts the dedup entry of a new event (identity `key`, a dedupKey) into `batch`. */
  record(batch: ChainedBatch, key: string, relay: boolean, sequence: number, now: number): void {
    const active = this.tables.active;
    batch.put(relay ? key : dedupTableKey(active, key), Buffer.from(`${sequence}:${now}`));
    this.filter.add(key);
    if (!relay) {
      this.tableAdds[active]!++;
      this.tableMayHold[active] = true;
    }
  }

  /**
   * Puts the deletion of the dedup entry of an event retention removes into `batch`, if it
   * has one of its own (see ownDedupKey) that still names it (no re-append since).
   */
  forget(batch: ChainedBatch, event: { dedupKey: string | undefined; sequence: number }): boolean {
    if (!event.dedupKey) return false;
    const v = this.host.main.getSync(event.dedupKey);
    if (v === undefined || !Buffer.from(v).toString("utf8").startsWith(`${event.sequence}:`)) return false;
    batch.del(event.dedupKey);
    return true;
  }

  /** Entries deleted from LevelDB (they stay in the filter: a "maybe" more). */
  deleted(count: number): void {
    this.filter.deleted(count);
  }

  /**
   * Once the dedup table not written has not been for a whole window, clears it (a range
   * delete on LevelDB's thread: nothing per entry on this loop) and makes it the one written.
   * A crash before the switch is written clears it again on the next sweep.
   *
   * One call, not steps: each step's iterator would walk the deletions of the steps before
   * it, so clearing in steps costs several times the time and CPU of one call.
   */
  async rotate(): Promise<void> {
    const { host } = this;
    if (host.closed || host.now() - this.tables.since < this.windowMs) return;
    const retired = 1 - this.tables.active;
    const prefix = dedupTablePrefix(retired);
    await host.main.clear({ gte: prefix, lt: prefixEnd(prefix) });
    this.filter.deleted(this.tableAdds[retired]!);
    this.tableAdds[retired] = 0;
    this.tableMayHold[retired] = false;
    if (host.closed) return;
    await host.task(async () => {
      const tables = { active: retired, since: host.now() };
      await host.main.put(DEDUP_TABLES_KEY, Buffer.from(JSON.stringify(tables)));
      this.tables = tables;
    });
  }

  /**
   * Adds every stored dedup key to `into` (for the dedup filter), from a snapshot taken in
   * the write loop between groups: every key written after it is added as it is prepared.
   */
  private async loadKeys(into: BloomFilter): Promise<void> {
    const { main } = this.host;
    const snapshot = () => main.keys({ gte: DEDUP_PREFIX, lt: prefixEnd(DEDUP_PREFIX), fillCache: false, highWaterMarkBytes: DEDUP_LOAD_BYTES });
    let iterator: ReturnType<typeof snapshot> | undefined;
    await this.host.task(async () => {
      iterator = snapshot();
    });
    try {
      for (;;) {
        if (this.host.closed) throw logClosed();
        const keys = await iterator!.nextv(DEDUP_LOAD_STEP);
        if (keys.length === 0) return;
        for (const key of keys) into.add(dedupIdentityOf(key));
      }
    } finally {
      await iterator!.close();
    }
  }

  /** Settles once the dedup filter's load under way, if any, has ended. */
  settled(): Promise<void> {
    return this.filter.settled();
  }
}

/**
 * The dedup entry of its own that a stored event has, which retention removes with it: a
 * relay copy's; undefined for any other event (its entry is in a dedup table, cleared whole).
 */
export function ownDedupKey(event: StoredEvent): string | undefined {
  if (!event.origin) return undefined;
  const ids = relayIdentity(event.origin, event.onlyGroup, event.copyEpoch);
  return dedupKey(event.channel, ids.source, ids.id);
}
