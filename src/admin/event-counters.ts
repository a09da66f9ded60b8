import type { Observer } from "../ops/observer.js";

/** The four counters of an event system, at one moment. */
export interface EventCounts {
  /** Valid events publishers sent, duplicates included (generated). */
  published: number;
  /** Events appended to the log: published, relay copies, dead letters, redriven. */
  stored: number;
  /** Events forwarded to peers, once per forward (transmitted). */
  forwarded: number;
  /** Events acked by handlers here, relay copies included (processed). */
  acked: number;
}

/**
 * Counts the four rates of an event system as an Observer: compose it into the sidecar's
 * observer and read `counts()`. Counters start at 0 when it is made and only grow; rates
 * are differences of two readings over the time between them.
 */
export class EventCounters implements Observer {
  /** When counting started, Unix ms. */
  readonly startedAt: number;
  private readonly current: EventCounts = { published: 0, stored: 0, forwarded: 0, acked: 0 };

  constructor(now: () => number = Date.now) {
    this.startedAt = now();
  }

  /** A copy of the counters now. */
  counts(): EventCounts {
    return { ...this.current };
  }

  published(_channel: string, count: number): void {
    this.current.published += count;
  }
  stored(_channel: string, count: number): void {
    this.current.stored += count;
  }
  forwarded(_peer: string, _channel: string, _group: string, count: number): void {
    this.current.forwarded += count;
  }
  acked(): void {
    this.current.acked += 1;
  }
  deduplicated(): void {}
  delivered(): void {}
  deadLettered(): void {}
  expired(): void {}
  peerLink(): void {}
  peerGone(): void {}
  diskFull(): void {}
  refused(): void {}
}
