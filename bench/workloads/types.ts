/**
 * The shape every workload of `npm run bench` returns: one row of the table and of
 * bench/results/latest.json. A Weft row names its ceiling row (measured in the same run),
 * and the table shows the ratio.
 */
export interface BenchRow {
  /** "W1", "W1-ceiling", "W6-1k-1hop", "J", ... */
  id: string;
  /** What was measured, in a few words. */
  title: string;
  eventsPerSecond?: number;
  megabytesPerSecond?: number;
  /** Latencies in milliseconds (publish to delivery unless the title says otherwise). */
  p50Ms?: number;
  p99Ms?: number;
  p999Ms?: number;
  /** Resident memory of the sidecar process(es) measured, MiB (peak where it matters). */
  rssMiB?: number;
  /** The id of the row this one is compared with (its ceiling), if any. */
  ceiling?: string;
  /**
   * What the comparison with the ceiling is about: "rate" (default) divides events/s;
   * "latency" (rows at a fixed load, W6) shows the p99 the row adds to its ceiling's.
   */
  compare?: "rate" | "latency";
  /** Other figures worth keeping (drain rate, time to first delivery after restart, ...). */
  extra?: Record<string, number | string>;
  /** Set when the workload could not run here (e.g. nats-server not installed), with why. */
  skipped?: string;
}

/** What every workload is given. */
export interface BenchOptions {
  /** Seconds-long smoke instead of a real measurement (CI keeps the bench working with it). */
  quick: boolean;
  /** A scratch directory for data; removed by the harness afterwards. */
  scratch: string;
}

export type Workload = (options: BenchOptions) => Promise<BenchRow[]>;
