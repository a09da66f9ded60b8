import { Session } from "node:inspector";
import { loadMallocTrim } from "./malloc-trim.js";
import { NO_OBSERVER, type Observer } from "./observer.js";

export interface BurstCollectorOptions {
  /** Collects the heap, then calls `done`. Default: {@link collectAllGarbage}. */
  gc?: (done: () => void) => void;
  /**
   * Hands malloc's free memory back to the system, after the collection freed the burst's
   * buffers. Default: glibc's malloc_trim where it can be called ({@link loadMallocTrim});
   * null for none.
   */
  trim?: (() => void) | null;
  /** How long after the collection the trim runs, ms (V8 frees buffers' memory just after a collection). Default 100. */
  trimDelayMs?: number;
  /**
   * What makes a burst: bytes stored since the last collection, or as much growth of the
   * resident memory since it (or since `start()`). Default 64 MiB.
   */
  burstBytes?: number;
  /** How long nothing must be stored before the collection, ms. Default 1 s. */
  quietMs?: number;
  /** The clock, ms. Tests may pass their own. */
  now?: () => number;
  /** The process's resident memory, bytes. Default: process.memoryUsage.rss(). */
  rss?: () => number;
}

/**
 * Collects the V8 heap once a burst of appends is over, then trims malloc, so that a sidecar
 * gives back what the burst left behind instead of holding it: an idle V8 may not collect
 * for minutes, and glibc keeps most of what was freed (docs/operations.md, Memory).
 *
 * Its observer counts the bytes stored; `check()`, four times per `quietMs` once started,
 * collects when nothing was stored for `quietMs` after a burst: at least `burstBytes` stored
 * since the last collection, or some stored and the resident memory grown by `burstBytes`
 * since then. It trims `trimDelayMs` after. The growth matters when a burst pauses for
 * `quietMs` (LevelDB stalling writes while it compacts): the collection in the pause starts
 * the count again, and the rest of the burst may store less than `burstBytes` while the
 * memory grows as much again. The collection and the trim each hold the loop, so they run
 * once a burst.
 */
export class BurstCollector {
  private stored = 0;
  private lastStoredAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly gc: (done: () => void) => void;
  private readonly trim: (() => void) | undefined;
  private readonly trimDelayMs: number;
  private trimTimer: NodeJS.Timeout | undefined;
  private readonly burstBytes: number;
  private readonly quietMs: number;
  private readonly now: () => number;
  private readonly rss: () => number;
  /** The resident memory after the last collection (and trim), or at `start()`, bytes. */
  private baseline: number;

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
    this.trim = options.trim === null ? undefined : (options.trim ?? loadMallocTrim());
    this.trimDelayMs = options.trimDelayMs ?? 100;
    this.burstBytes = options.burstBytes ?? 64 * 1024 * 1024;
    this.quietMs = options.quietMs ?? 1000;
    this.now = options.now ?? Date.now;
    this.rss = options.rss ?? process.memoryUsage.rss;
    this.baseline = this.rss();
  }

  /** Checks four times per `quietMs` until `stop()`; the timer does not keep the process alive. */
  start(): void {
    if (this.timer) return;
    this.baseline = this.rss();
    this.timer = setInterval(() => this.check(), this.quietMs / 4).unref();
  }

  /** Idempotent. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    clearTimeout(this.trimTimer);
    this.trimTimer = undefined;
  }

  /** Collects if a burst is over; returns whether it did. */
  check(): boolean {
    if (this.stored === 0 || this.now() - this.lastStoredAt < this.quietMs) return false;
    if (this.stored < this.burstBytes && this.rss() - this.baseline < this.burstBytes) return false;
    this.stored = 0;
    this.gc(() => {
      const trim = this.trim;
      if (!trim) {
        this.baseline = this.rss();
        return;
      }
      clearTimeout(this.trimTimer);
      this.trimTimer = setTimeout(() => {
        this.trimTimer = undefined;
        trim();
        this.baseline = this.rss();
      }, this.trimDelayMs).unref();
    });
    return true;
  }
}

/**
 * A full collection that also hands the heap's emptied pages back (V8's low-memory
 * collection), through an in-process inspector session: no flag, no port. `gc()` of
 * --expose-gc collects as much but keeps the pages.
 */
export function collectAllGarbage(done: () => void = () => {}): void {
  const session = new Session();
  session.connect();
  // Disconnecting inside the callback, while the session still dispatches, hangs the process.
  session.post("HeapProfiler.collectGarbage", () =>
    setImmediate(() => {
      session.disconnect();
      done();
    }),
  );
}
