import type { GroupBatch } from "./group-state.js";
import type { Entry, PumpRecord } from "./entry.js";

/**
 * The stored attempts of one group's deliveries, so that a restart redelivers with the next
 * attempt number instead of forgetting. First attempts made together are one pump record
 * (p!, the sequences), which each ack would otherwise have to delete one by one; later
 * attempts, and every attempt of an entry given back or restored, are an in-flight record
 * (f!) of their own, which wins over a pump record of the same event.
 */
export class AttemptRecords {
  constructor(
    private readonly channel: string,
    private readonly group: string,
  ) {}

  /** Stores the first attempts of `entries` (not yet recorded) in one pump record. */
  firsts(entries: readonly Entry[], batch: GroupBatch): void {
    if (entries.length === 0) return;
    const pump: PumpRecord = { first: entries[0]!.seq, remaining: entries.length };
    for (const e of entries) e.pump = pump;
    batch.putPump(this.channel, this.group, entries.map((e) => e.seq));
  }

  /** Stores the entry's current attempt as its own in-flight record. */
  record(entry: Entry, batch: GroupBatch): void {
    batch.putInflight(this.channel, this.group, entry.seq, entry.attempt);
    entry.recorded = true;
  }

  /** A delivery came back unhandled: its attempt no longer counts, and from now on its attempts are recorded one by one. */
  uncount(entry: Entry, batch: GroupBatch): void {
    entry.attempt--;
    if (entry.pump || entry.attempt > 0) {
      // A pump record says attempt 1: an in-flight record of its own says otherwise (and wins).
      this.leavePump(entry, batch);
      this.record(entry, batch);
    } else if (entry.recorded) {
      batch.delInflight(this.channel, this.group, entry.seq);
      entry.recorded = false;
    }
    entry.perEvent = true;
  }

  /** The entry had `attempts` in all (some made elsewhere): from now on its attempts are recorded one by one. */
  count(entry: Entry, attempts: number, batch: GroupBatch): void {
    entry.attempt = attempts;
    this.leavePump(entry, batch);
    this.record(entry, batch);
    entry.perEvent = true;
  }

  /** The entry is done for the group: its records go. */
  finished(entry: Entry, batch: GroupBatch): void {
    this.leavePump(entry, batch);
    if (entry.recorded) batch.delInflight(this.channel, this.group, entry.seq);
  }

  /** The entry is no longer counted by the pump record it was sent in; the record goes with its last entry. */
  leavePump(entry: Entry, batch: GroupBatch): void {
    const pump = entry.pump;
    if (!pump) return;
    entry.pump = undefined;
    if (--pump.remaining === 0) batch.delPump(this.channel, this.group, pump.first);
  }
}
