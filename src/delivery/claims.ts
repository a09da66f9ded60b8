import type { StoredEvent } from "../log/record.js";
import { type MemberState, type PumpRecord, orderKey } from "./entry.js";

/** What a group offers the choice of the events that go at once (see Claims.choose). */
export interface ClaimView {
  group: string;
  members: Iterable<MemberState>;
  /** How much more the group may read ahead; undefined when full. */
  room: { events: number; bytes: number } | undefined;
  /** True when an earlier event of this order (origin and key) is held. */
  ordered(order: string): boolean;
  /** True for a relay copy the group no longer keeps (see GroupDispatcher.stale). */
  stale(event: StoredEvent): boolean;
}

/**
 * The events whose first attempt was stored with their append, in one pump record, before
 * the group read them (GroupDispatcher.claim): when read, each takes that record, and goes
 * without a write of its own.
 */
export class Claims {
  private readonly claimed = new Map<number, PumpRecord>();

  /**
   * Of a group's new events, the sequences that will go at once: within its members' free
   * credits (copies within its local members'), its read-ahead room, and per-key order; an
   * event for another group, or a copy no local member has room for (and the later events
   * of its key behind it), waits.
   */
  static choose(events: readonly StoredEvent[], view: ClaimView): number[] {
    let free = 0;
    let freeLocal = 0;
    for (const m of view.members) {
      const room = Math.max(0, m.window - m.deliveries.size);
      free += room;
      if (m.kind.kind === "local") freeLocal += room;
    }
    const room = view.room;
    if (!room) return [];
    const limit = Math.min(free, room.events);
    const seqs: number[] = [];
    const orders = new Set<string>();
    let bytes = 0;
    for (const event of events) {
      if (seqs.length >= limit || bytes + event.bytes.length > room.bytes) break;
      if (event.onlyGroup !== undefined && event.onlyGroup !== view.group) continue;
      const order = orderKey(event);
      // A copy forwarded after attempts elsewhere has each attempt recorded on its own.
      if (event.origin && (freeLocal === 0 || view.stale(event) || event.priorAttempts)) {
        if (order) orders.add(order);
        continue;
      }
      if (order) {
        // Behind an earlier event of its key: it waits, and its attempt is stored when it goes.
        if (view.ordered(order) || orders.has(order)) continue;
        orders.add(order);
      }
      if (event.origin) freeLocal--;
      seqs.push(event.sequence);
      bytes += event.bytes.length;
    }
    return seqs;
  }

  /** The pump record holding `seqs` was stored. */
  add(seqs: readonly number[]): void {
    const pump = { first: seqs[0]!, remaining: seqs.length };
    for (const seq of seqs) this.claimed.set(seq, pump);
  }

  /** Takes the pump record of `seq` as it is read; undefined when it has none. */
  take(seq: number): PumpRecord | undefined {
    const pump = this.claimed.get(seq);
    if (pump) this.claimed.delete(seq);
    return pump;
  }

  /** Retention removed everything before `first`. */
  trim(first: number): void {
    for (const seq of this.claimed.keys()) if (seq < first) this.claimed.delete(seq);
  }
}
