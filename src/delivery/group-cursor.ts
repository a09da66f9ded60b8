import type { GroupBatch, GroupRecord } from "./group-state.js";

/**
 * Where one group stands on its channel, as stored: every sequence up to `ackedThrough` is
 * done for the group, and so is each one acked above it (events finish out of order). Done
 * means acked, dead-lettered, skipped (another group's), or a relay copy given up. Changes
 * go into a GroupBatch, which the caller writes.
 */
export class GroupCursor {
  private current: GroupRecord;
  private readonly acked = new Set<number>();

  constructor(record: GroupRecord, acked: readonly number[]) {
    this.current = record;
    for (const s of acked) if (s > record.ackedThrough) this.acked.add(s);
  }

  /** The group's stored record (cursor, settings, creation, copy epoch). */
  get record(): GroupRecord {
    return this.current;
  }
  get ackedThrough(): number {
    return this.current.ackedThrough;
  }
  /** Sequences done above the cursor. */
  get ackedAbove(): number {
    return this.acked.size;
  }
  /** The epoch of the relay copies held for the group (see relayIdentity). */
  get copyEpoch(): number {
    return this.current.copyEpoch ?? 0;
  }

  isDone(seq: number): boolean {
    return seq <= this.current.ackedThrough || this.acked.has(seq);
  }

  /** Records `seq` done: the cursor moves past it and the acks above it, or it is acked above the cursor. */
  markDone(seq: number, batch: GroupBatch): void {
    const { channel, group } = this.current;
    if (seq === this.current.ackedThrough + 1) {
      let through = seq;
      while (this.acked.delete(through + 1)) {
        through++;
        batch.delAcked(channel, group, through);
      }
      this.current = { ...this.current, ackedThrough: through };
      batch.putGroup(this.current);
    } else {
      this.acked.add(seq);
      batch.putAcked(channel, group, seq);
    }
  }

  /** The group's settings change (the latest open wins); false when they are the same. */
  configure(maxAttempts: number, deadLetterChannel: string, batch: GroupBatch): boolean {
    if (maxAttempts === this.current.maxAttempts && deadLetterChannel === this.current.deadLetterChannel) return false;
    this.current = { ...this.current, maxAttempts, deadLetterChannel };
    batch.putGroup(this.current);
    return true;
  }

  /** The relay copies of the current epoch are given up: the next ones are of a new epoch. */
  nextEpoch(batch: GroupBatch): void {
    this.current = { ...this.current, copyEpoch: this.copyEpoch + 1 };
    batch.putGroup(this.current);
  }

  /**
   * Retention removed every event before `first`: the cursor moves to `first - 1`. `lost`
   * is told each sequence it passed that was not done (lost to the group, counted as
   * expired); returns how many.
   */
  trim(first: number, batch: GroupBatch, lost: (seq: number) => void): number {
    const { channel, group } = this.current;
    if (this.current.ackedThrough >= first - 1) return 0;
    let count = 0;
    for (let s = this.current.ackedThrough + 1; s < first; s++) {
      if (this.acked.delete(s)) {
        batch.delAcked(channel, group, s);
      } else {
        count++;
        lost(s);
      }
    }
    this.current = { ...this.current, ackedThrough: first - 1, expiredUnacked: this.current.expiredUnacked + count };
    batch.putGroup(this.current);
    return count;
  }
}
