/**
 * The shape shared by a Weft stream workload and its raw grpc-js ceiling, so both do the same
 * work per event: how many events, how they are chunked and windowed, and how the
 * publish-to-delivery latency is taken (a `t` attribute holding `performance.now()` at
 * publish, read back by a subscriber in the same process).
 */

/** At most this many payload bytes per run: 64 KiB events come in thousands, not 100k. */
const MAX_RUN_BYTES = 256 * 2 ** 20;
const MAX_RUN_BYTES_QUICK = 16 * 2 ** 20;

export interface StreamShape {
  events: number;
  payloadBytes: number;
  /** Events per publishMany call (and per raw chunk). */
  chunk: number;
  /** Chunks awaited at once. */
  window: number;
  /** The publisher's maxOutstanding. */
  maxOutstanding: number;
  /** Most events per publish request (the client's default maxBatch). */
  maxBatch: number;
  /** Most unacked deliveries per subscriber. */
  maxInFlight: number;
  /** Whether each process handles an unmeasured run of half the events first (not in --quick). */
  warmUp: boolean;
}

/** The shape for `events` events of `payloadBytes` (fewer when the events are large). */
export function streamShape(events: number, payloadBytes: number, quick: boolean): StreamShape {
  const n = Math.max(100, Math.min(events, Math.floor((quick ? MAX_RUN_BYTES_QUICK : MAX_RUN_BYTES) / payloadBytes)));
  const chunk = Math.max(1, Math.min(1000, Math.floor(4 * 2 ** 20 / payloadBytes)));
  return {
    events: n,
    payloadBytes,
    chunk,
    window: 16,
    maxOutstanding: Math.max(chunk, Math.min(20_000, Math.floor(64 * 2 ** 20 / payloadBytes))),
    maxBatch: 500,
    maxInFlight: Math.max(64, Math.min(5000, Math.floor(32 * 2 ** 20 / payloadBytes))),
    warmUp: !quick,
  };
}

/** What one stream run measured, from the first publish to the last delivery acked. */
export interface StreamResult {
  /** Deliveries (summed over subscribers) per second. */
  eventsPerSecond: number;
  /** Payload megabytes (10^6) delivered per second. */
  megabytesPerSecond: number;
  /** Events acked to the publisher per second. */
  publishPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
}

/** Collects publish-to-delivery latencies and turns a run into a StreamResult. */
export class LatencyRecorder {
  private readonly samples: Float64Array;
  private count = 0;

  constructor(capacity: number) {
    this.samples = new Float64Array(capacity);
  }

  /** Records a delivery whose `t` attribute was `sentAt`. */
  record(sentAt: string | undefined): void {
    if (sentAt === undefined || this.count >= this.samples.length) return;
    this.samples[this.count++] = performance.now() - Number(sentAt);
  }

  result(delivered: number, payloadBytes: number, published: number, startMs: number, publishedMs: number, doneMs: number): StreamResult {
    const sorted = this.samples.subarray(0, this.count).sort();
    const at = (q: number): number => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!);
    const seconds = (doneMs - startMs) / 1000;
    return {
      eventsPerSecond: delivered / seconds,
      megabytesPerSecond: (delivered * payloadBytes) / 1e6 / seconds,
      publishPerSecond: published / ((publishedMs - startMs) / 1000),
      p50Ms: at(0.5),
      p99Ms: at(0.99),
      p999Ms: at(0.999),
    };
  }
}
