import type { Histogram } from "prom-client";

/**
 * The series the observer counts on the path of every event, in plain numbers: prom-client
 * hashes and checks the labels of every `inc` and `observe`, which cost more than the rest
 * of an ack. The counts are taken (read and zeroed) when prom-client collects, at scrape.
 */
class Series<K extends string, L extends string> {
  constructor(
    readonly labels: Record<L, string>,
    readonly counts: Record<K, number>,
  ) {}

  /** The count since the last take, zeroed. */
  take(k: K): number {
    const n = this.counts[k];
    this.counts[k] = 0;
    return n;
  }
}

export type ChannelLabels = "channel" | "relay";
export type GroupLabels = "channel" | "group" | "relay";

export class ChannelSeries extends Series<"published" | "stored" | "storedBytes" | "dedup" | "expired", ChannelLabels> {
  constructor(labels: Record<ChannelLabels, string>) {
    super(labels, { published: 0, stored: 0, storedBytes: 0, dedup: 0, expired: 0 });
  }
}

export class GroupSeries extends Series<"delivered" | "redelivered" | "acked" | "deadLettered" | "expired", GroupLabels> {
  readonly toDelivery: Buckets;
  readonly toAck: Buckets;
  constructor(labels: Record<GroupLabels, string>, latencyBounds: readonly number[]) {
    super(labels, { delivered: 0, redelivered: 0, acked: 0, deadLettered: 0, expired: 0 });
    this.toDelivery = new Buckets(latencyBounds);
    this.toAck = new Buckets(latencyBounds);
  }
}

export class ChannelPeerSeries extends Series<"forwarded", "channel" | "peer"> {
  constructor(labels: Record<"channel" | "peer", string>) {
    super(labels, { forwarded: 0 });
  }
}

export class PeerLinkSeries extends Series<"changes", "peer" | "state"> {
  constructor(peer: string, state: "up" | "down") {
    super({ peer, state }, { changes: 0 });
  }
}

export class PeerSeries extends Series<"forwardedBytes", "peer"> {
  readonly channels = new Map<string, ChannelPeerSeries>();
  readonly up: PeerLinkSeries;
  readonly down: PeerLinkSeries;
  constructor(peer: string) {
    super({ peer }, { forwardedBytes: 0 });
    this.up = new PeerLinkSeries(peer, "up");
    this.down = new PeerLinkSeries(peer, "down");
  }
}

/** Every group series of a map by channel, then group (a group's own events' series, then its relay copies'). */
export function* allGroupSeries(byChannel: Map<string, Map<string, readonly (GroupSeries | undefined)[]>>): Iterable<GroupSeries> {
  for (const groups of byChannel.values()) for (const series of groups.values()) for (const s of series) if (s) yield s;
}

/** A histogram's counts: per bucket (not cumulative), sum and count. Never zeroed. */
export class Buckets {
  /** Indexed like the bounds (upper, inclusive); the last slot is above the last bound. */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

/**
 * A Prometheus histogram whose series are {@link Buckets} kept by their owner, exposed in
 * the shape prom-client's Registry reads from its own metrics (name, help, type, get):
 * observing costs a few comparisons, not a label hash.
 */
export class SeriesHistogram<L extends string> {
  readonly type = "histogram";
  readonly aggregator = "sum";

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly series: () => [Record<L, string>, Buckets][],
  ) {}

  /** For Registry.registerMetric, which takes prom-client's metric classes and reads only what this has. */
  asMetric(): Histogram<L> {
    return this as unknown as Histogram<L>;
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] }> {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const [labels, b] of this.series()) {
      let cumulative = 0;
      b.bounds.forEach((le, i) => {
        cumulative += b.counts[i] ?? 0;
        values.push({ labels: { ...labels, le }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { ...labels, le: "+Inf" }, value: b.count, metricName: `${this.name}_bucket` });
      values.push({ labels: { ...labels }, value: b.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...labels }, value: b.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {}
}
