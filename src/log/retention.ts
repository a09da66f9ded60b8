import { setTimeout as sleep } from "node:timers/promises";
import type { Observer } from "../ops/observer.js";
import { type Dedup, ownDedupKey } from "./dedup.js";
import { eventKey, headKey } from "./keys.js";
import { recordSize } from "./record.js";
import type { EventStore } from "./store.js";
import type { Retention } from "./types.js";

const DEFAULT_RETENTION: Retention = { maxAgeMs: 7 * 24 * 3600_000, maxBytes: 1024 ** 3 };
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

/** What one sweep pass found to remove, planned outside the write loop. */
interface SweepPlan {
  /** The channel's first sequence when the plan was made; the plan is void if it moved. */
  first: number;
  /** Events retention removes, oldest first, with their size and their own dedup entry (see ownDedupKey). */
  expire: { sequence: number; size: number; dedupKey: string | undefined }[];
}

/** What retention needs of the log. */
export interface RetentionHost {
  readonly store: EventStore;
  readonly dedup: Dedup;
  readonly observer: Observer;
  readonly closed: boolean;
  /** Whether the disk is full: a sweep's writes would fail too. */
  readonly diskFull: boolean;
  now(): number;
  /** Runs `run` in the write loop, between two append groups. */
  task(run: () => Promise<void>): Promise<void>;
  /** Retention removed the oldest events of `channel`; `first` is the new oldest. */
  trimmed(channel: string, first: number): void;
  /** A removal of events failed after their head was written (see EventStore.halfWritten). */
  halfWritten(): void;
}

/**
 * Retention: removes each channel's oldest events while they are older than max age or the
 * channel is over max bytes (counted in `expired`), and clears the dedup table past the
 * window. Each pass is planned with reads outside the write loop and applied inside it, so
 * appends are never overwritten.
 */
export class RetentionSweep {
  constructor(
    private readonly host: RetentionHost,
    private readonly retention: Retention | undefined,
    private readonly channelRetention: Record<string, Retention> | undefined,
  ) {}

  async run(): Promise<void> {
    const { host } = this;
    // Its writes would fail too; it runs again at the next interval after the disk has room.
    if (host.diskFull) return;
    await host.dedup.rotate();
    for (const channel of [...host.store.heads.keys()]) {
      for (let pass = 0; pass < MAX_SWEEP_PASSES && !host.closed && !host.diskFull; pass++) {
        const started = performance.now();
        const plan = await this.plan(channel);
        if (!plan) break;
        await host.task(() => this.apply(channel, plan));
        await sleep(SWEEP_PAUSE_FACTOR * (performance.now() - started));
      }
    }
  }

  private retentionOf(channel: string): Retention {
    const own = this.channelRetention;
    return (own && Object.hasOwn(own, channel) ? own[channel] : undefined) ?? this.retention ?? DEFAULT_RETENTION;
  }

  private async plan(channel: string): Promise<SweepPlan | undefined> {
    const { store, closed } = this.host;
    const head = store.heads.get(channel);
    if (!head || closed) return undefined;
    const now = this.host.now();
    const retention = this.retentionOf(channel);
    const plan: SweepPlan = { first: head.first, expire: [] };
    // Retention by age and size, oldest first.
    let over = head.bytes - retention.maxBytes;
    // The first read is one event: mostly it is not due, and that ends the scan.
    let chunk = 1;
    retain: for (let from = head.first; from <= head.last && plan.expire.length < SWEEP_PASS_EVENTS; chunk = SWEEP_PASS_EVENTS) {
      const events = await store.read(channel, from, Math.min(chunk, SWEEP_PASS_EVENTS - plan.expire.length));
      if (events.length === 0 || this.host.closed) break;
      for (const event of events) {
        if (now - event.appendedAt <= retention.maxAgeMs && over <= 0) break retain;
        const size = recordSize(event);
        plan.expire.push({ sequence: event.sequence, size, dedupKey: ownDedupKey(event) });
        over -= size;
        from = event.sequence + 1;
      }
    }
    return plan.expire.length === 0 ? undefined : plan;
  }

  /** Applies a sweep plan to the live head; runs in the write loop. */
  private async apply(channel: string, plan: SweepPlan): Promise<void> {
    const { store, dedup, observer } = this.host;
    const head = store.heads.get(channel);
    if (!head || head.first !== plan.first || this.host.closed) return;
    const batch = store.main.batch();
    const removed = store.events.batch();
    const next = { ...head };
    let forgotten = 0;
    for (const e of plan.expire) {
      removed.del(eventKey(channel, e.sequence));
      if (dedup.forget(batch, e)) forgotten++;
      next.bytes -= e.size;
      next.expired += 1;
      next.first = e.sequence + 1;
    }
    batch.put(headKey(channel), Buffer.from(JSON.stringify(next)));
    // The head first: a crash before the events' write leaves them below it, where nothing
    // reads and the next open removes them (see EventStore.reconcile). The other way round,
    // a reader would find the head's first event gone.
    await batch.write();
    dedup.deleted(forgotten);
    store.trim(channel, next);
    if (next.expired > head.expired) observer.expired(channel, undefined, next.expired - head.expired);
    if (next.first !== head.first) this.host.trimmed(channel, next.first);
    try {
      await removed.write();
    } catch (e) {
      this.host.halfWritten();
      throw e;
    }
  }
}
