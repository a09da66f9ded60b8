import { Session } from "node:inspector";
import { NO_OBSERVER, type Observer } from "./observer.js";

export interface BurstCollectorOptions {
  /** Collects the heap. Default: {@link collectAllGarbage}. */
  gc?: () => void;
  /** Bytes stored since the last collection that make a burst. Default 64 MiB. */
  burstBytes?: number;
  /** How long nothing must be stored before the collection, ms. Default 1 s. */
  quietMs?: number;
  /** The clock, ms. Tests may pass their own. */
  now?: () => number;
}

/**
 * Collects the V8 heap once a burst of appends is over, so that a sidecar gives back what
 * the burst left behind instead of holding it until V8 next collects on its own, which an
 * idle process may not do for minutes: after 1M events of 256 B, ~300 MiB RSS became ~185
 * (see docs/operations.md, Memory, for the rest).
 *
 * Its observer counts the bytes stored; `check()`, every `quietMs` once started, collects
 * when at least `burstBytes` were stored since the last collection and none for `quietMs`.
 * A collection takes ~10-30 ms of the loop, once a burst.
 */
export class BurstCollector {
  private stored = 0;
  private lastStoredAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly gc: () => void;
  private readonly burstBytes: number;
  private readonly quietMs: number;
  private readonly now: () => number;

  /** Tell it what is stored (compose it with the sidecar's other observers). */
  readonly observer: Observer = {
    ...NO_OBSERVER,
    stored: (_channel, _count, bytes) => {
      this.stored += bytes;
      this.lastStoredAt = this.now();
    },
  };

  constructor(options: BurstCollectorOptions = {}) {
    this.gc = options.gc ?? collectAllGarbage;
    this.burstBytes = options.burstBytes ?? 64 * 1024 * 1024;
    this.quietMs = options.quietMs ?? 1000;
    this.now = options.now ?? Date.now;
  }

  /** Checks every `quietMs` until `stop()`; the timer does not keep the process alive. */
  start(): void {
    this.timer ??= setInterval(() => this.check(), this.quietMs).unref();
  }

  /** Idempotent. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Collects if a burst is over; returns whether it did. */
  check(): boolean {
    if (this.stored < this.burstBytes || this.now() - this.lastStoredAt < this.quietMs) return false;
    this.stored = 0;
    this.gc();
    return true;
  }
}

/**
 * A full collection that also hands the heap's emptied pages back (V8's low-memory
 * collection), through an in-process inspector session: no flag, no port. `gc()` of
 * --expose-gc collects as much but keeps the pages.
 */
export function collectAllGarbage(): void {
  const session = new Session();
  session.connect();
  // Disconnecting inside the callback, while the session still dispatches, hangs the process.
  session.post("HeapProfiler.collectGarbage", () => setImmediate(() => session.disconnect()));
}
