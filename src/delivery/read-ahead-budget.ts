/**
 * The bytes of events every group of a sidecar holds in memory together: read ahead of
 * their cursors, waiting or in flight. Groups take from it as they read and give back as
 * events are done; a group that finds it spent reads less and waits, and reads on once
 * another group's acks (or retention) give bytes back.
 *
 * Two rules keep a group whose members never ack from starving the others:
 * - Past half the budget, a group reads only what its members have free credits for, not
 *   speculatively ahead: members without free credits (none acking) stop taking.
 * - A group that holds nothing may always read one event, budget or not, so an acking
 *   group moves on however much stalled groups hold: the total may pass the budget by at
 *   most one event per group that holds nothing else.
 */
export class ReadAheadBudget {
  private used = 0;
  private readonly waiting = new Set<() => void>();
  private notifying = false;

  constructor(
    /** The budget, bytes; Infinity for none. */
    readonly limit: number,
  ) {}

  /** Bytes held now, by every group together. */
  get bytes(): number {
    return this.used;
  }

  /** True past half the budget: groups read only for free credits. */
  get pressed(): boolean {
    return this.used * 2 > this.limit;
  }

  /**
   * Bytes a group holding `held` may read now: what is left of the budget, 1 (one event:
   * reads return at least one) when it is spent and the group holds nothing, else 0.
   */
  room(held: number): number {
    const free = this.limit - this.used;
    if (free > 0) return free;
    return held === 0 ? 1 : 0;
  }

  take(bytes: number): void {
    this.used += bytes;
  }

  /** Gives bytes back; groups waiting for room are woken (once, after this call's turn). */
  release(bytes: number): void {
    this.used -= bytes;
    if (this.waiting.size === 0 || this.notifying || this.used >= this.limit) return;
    this.notifying = true;
    queueMicrotask(() => {
      this.notifying = false;
      const woken = [...this.waiting];
      this.waiting.clear();
      for (const wake of woken) wake();
    });
  }

  /** Calls `wake` once the next time bytes are given back. */
  wait(wake: () => void): void {
    this.waiting.add(wake);
  }
}
