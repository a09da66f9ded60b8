import type { EventCounts } from "../admin/index.js";

/** The four rates over one sampling interval, events per second. */
export interface RateSample extends EventCounts {
  /** The end of the interval, Unix ms. */
  time: number;
}

/**
 * Counters of one channel and its groups, read at one moment: what the drain estimate
 * needs. Keys of `acked` are "CHANNEL GROUP" (names never contain a space).
 */
export interface GroupCounts {
  /** Events published per channel (generated). */
  published: Map<string, number>;
  /** Events finished per (channel, group) on this sidecar's log, relay copies included (processed). */
  acked: Map<string, number>;
}

/** Per-second rates of a channel and its groups, over the drain window. */
export interface GroupRates {
  /** Seconds the rates were measured over; 0 before two samples exist. */
  seconds: number;
  /** Published per second on `channel`. */
  published(channel: string): number;
  /** Processed per second by `group` of `channel`. */
  acked(channel: string, group: string): number;
}

export interface RateHistoryOptions {
  /** The four counters now (EventCounters.counts, through SidecarAdmin.stats). */
  read: () => EventCounts;
  /** Per-channel and per-group counters now, for the drain estimate; none when omitted. */
  readGroups?: () => Promise<GroupCounts>;
  /** Samples kept: 300 at one a second is the last five minutes. */
  capacity?: number;
  /** How often to sample, ms. */
  intervalMs?: number;
  /** Samples of group counters the drain rates are measured over (10: the last 10 s). */
  groupWindow?: number;
  now?: () => number;
}

/**
 * The four rates of a sidecar over the last minutes, kept in the sidecar so that a page
 * opened now shows them at once: a ring buffer of per-second rates, each the difference of
 * two readings of the counters divided by the time between them. Alongside, a short window
 * of per-channel published and per-group acked counters, for the dashboard's drain estimate.
 *
 * `start()` samples every `intervalMs` on an unref'd timer; `stop()` ends it (idempotent).
 * `sample()` takes one sample now (tests call it directly).
 */
export class RateHistory {
  readonly capacity: number;
  readonly intervalMs: number;
  private readonly ring: (RateSample | undefined)[];
  private next = 0;
  private size = 0;
  private last: { time: number; counts: EventCounts } | undefined;
  private readonly groupWindow: { time: number; counts: GroupCounts }[] = [];
  private readonly groupWindowSize: number;
  private timer: NodeJS.Timeout | undefined;
  private sampling = false;
  private readonly now: () => number;

  constructor(private readonly options: RateHistoryOptions) {
    this.capacity = options.capacity ?? 300;
    this.intervalMs = options.intervalMs ?? 1000;
    this.groupWindowSize = (options.groupWindow ?? 10) + 1;
    this.now = options.now ?? Date.now;
    this.ring = new Array<RateSample | undefined>(this.capacity);
  }

  /** Samples now, then every `intervalMs` until `stop()`. Idempotent. */
  start(): void {
    if (this.timer) return;
    void this.sample();
    this.timer = setInterval(() => void this.sample(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops sampling; the samples taken stay readable. Idempotent. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * Reads the counters and records the rates since the last reading (the first reading
   * records nothing). A sample taken while the previous one still reads the group counters
   * is skipped.
   */
  async sample(): Promise<void> {
    if (this.sampling) return;
    this.sampling = true;
    try {
      const time = this.now();
      const counts = this.options.read();
      if (this.last && time > this.last.time) {
        const seconds = (time - this.last.time) / 1000;
        const rate = (k: keyof EventCounts): number => Math.max(0, counts[k] - this.last!.counts[k]) / seconds;
        this.ring[this.next] = { time, published: rate("published"), stored: rate("stored"), forwarded: rate("forwarded"), acked: rate("acked") };
        this.next = (this.next + 1) % this.capacity;
        this.size = Math.min(this.size + 1, this.capacity);
      }
      this.last = { time, counts };
      if (this.options.readGroups) {
        const groups = await this.options.readGroups();
        this.groupWindow.push({ time, counts: groups });
        if (this.groupWindow.length > this.groupWindowSize) this.groupWindow.shift();
      }
    } finally {
      this.sampling = false;
    }
  }

  /** The samples kept, oldest first. */
  samples(): RateSample[] {
    const out: RateSample[] = [];
    for (let i = 0; i < this.size; i++) out.push(this.ring[(this.next - this.size + i + this.capacity) % this.capacity]!);
    return out;
  }

  /** Per-channel published and per-group processed rates over the drain window. */
  groupRates(): GroupRates {
    const first = this.groupWindow[0];
    const last = this.groupWindow[this.groupWindow.length - 1];
    const seconds = first && last && last.time > first.time ? (last.time - first.time) / 1000 : 0;
    const per = (a: Map<string, number> | undefined, b: Map<string, number> | undefined, key: string): number =>
      seconds === 0 ? 0 : Math.max(0, (b?.get(key) ?? 0) - (a?.get(key) ?? 0)) / seconds;
    return {
      seconds,
      published: (channel) => per(first?.counts.published, last?.counts.published, channel),
      acked: (channel, group) => per(first?.counts.acked, last?.counts.acked, `${channel} ${group}`),
    };
  }
}

/**
 * Seconds until a backlog drains at the current rates: backlog ÷ (processed − published),
 * when that is positive; undefined ("not draining") otherwise. 0 for no backlog.
 */
export function drainSeconds(backlog: number, processedPerSecond: number, publishedPerSecond: number): number | undefined {
  if (backlog <= 0) return 0;
  const net = processedPerSecond - publishedPerSecond;
  return net > 0 ? backlog / net : undefined;
}
