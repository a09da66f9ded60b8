import type { Entry, MemberState } from "./entry.js";

/**
 * The entries of one group that wait on the clock: deliveries sent to a local member, due
 * back by its ack deadline, and retries held for a nack's delay. `due` is each entry's time;
 * a peer member's deliveries have none (they end by the peer's report).
 */
export class Deadlines {
  private readonly timed = new Set<Entry>();

  /** A delivery left with a deadline (entry.due). */
  add(entry: Entry): void {
    this.timed.add(entry);
  }

  /** The entry no longer waits on the clock (acked, sent again, or done). */
  delete(entry: Entry): void {
    this.timed.delete(entry);
  }

  /** A retry held until `delayMs` after `now`. */
  delay(entry: Entry, now: number, delayMs: number): void {
    entry.state = "delayed";
    entry.due = now + delayMs;
    this.timed.add(entry);
  }

  /** Moves the deadline of the member's deliveries `ids` to `now + extensionMs`; unknown ids and a peer's deliveries are left alone. */
  extend(member: MemberState, ids: readonly number[], now: number, extensionMs: number): void {
    for (const id of ids) {
      const entry = member.deliveries.get(id);
      if (entry && Number.isFinite(entry.due)) entry.due = now + extensionMs;
    }
  }

  /** The entries whose time came by `now`: deliveries past their deadline, and delayed retries that are due. */
  due(now: number): Entry[] {
    const out: Entry[] = [];
    for (const entry of this.timed) if (entry.due <= now) out.push(entry);
    return out;
  }
}
