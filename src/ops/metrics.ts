import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { OutgoingDelivery } from "../delivery/types.js";
import type { GroupStatus } from "../delivery/delivery-engine.js";
import type { ChannelHead } from "../log/origin-log.js";
import type { StoredEvent } from "../log/record.js";
import type { PeerStatus } from "../mesh/mesh-node.js";
import type { Observer } from "./observer.js";

/**
 * What the scrape-time gauges read: the parts of a running sidecar that know where things
 * stand now (backlogs, in-flight deliveries, peer links, log sizes).
 */
export interface MetricsSources {
  log: { channels(): string[]; head(channel: string): ChannelHead };
  engine: { status(): Pick<GroupStatus, "channel" | "group" | "backlog" | "inflight" | "members">[] };
  mesh: { status(): Pick<PeerStatus, "nodeId" | "connected" | "inflight">[] };
}

/** Seconds, from 1 ms to 30 min: a live event takes milliseconds, a backlog drained late takes minutes. */
export const LATENCY_BUCKETS: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800];

type ChannelLabels = "channel" | "relay";
type GroupLabels = "channel" | "group" | "relay";

/**
 * The Prometheus metrics of one sidecar, and the {@link Observer} that counts them.
 *
 * Every sidecar has its own registry (several sidecars in one process do not mix their
 * series); the process metrics (`process_*`, `nodejs_*`) are one registry per process, shown
 * by every sidecar in it. Counters move as the observer is told; gauges are read from the
 * sidecar at scrape time once {@link watch} has been given its parts.
 *
 * Labels are bounded: `channel` is an event channel ("CHANNEL~GROUP" relay copies are
 * labelled by CHANNEL, with `relay="true"`), `group` a consumer group, `peer` a node id.
 * No label is per event, per delivery or per client.
 */
export class SidecarMetrics implements Observer {
  /** This sidecar's own series. */
  readonly registry = new Registry();

  private readonly publishedTotal: Counter<"channel">;
  private readonly storedTotal: Counter<ChannelLabels>;
  private readonly storedBytesTotal: Counter<ChannelLabels>;
  private readonly dedupTotal: Counter<ChannelLabels>;
  private readonly forwardedTotal: Counter<"channel" | "peer">;
  private readonly forwardedBytesTotal: Counter<"peer">;
  private readonly deliveredTotal: Counter<GroupLabels>;
  private readonly redeliveredTotal: Counter<GroupLabels>;
  private readonly ackedTotal: Counter<GroupLabels>;
  private readonly deadLetteredTotal: Counter<GroupLabels>;
  private readonly expiredTotal: Counter<ChannelLabels>;
  private readonly groupExpiredTotal: Counter<GroupLabels>;
  private readonly peerLinkTotal: Counter<"peer" | "state">;
  private readonly toDelivery: Histogram<GroupLabels>;
  private readonly toAck: Histogram<GroupLabels>;

  /** Label children by key: looking a child up once per series keeps the hot path cheap. */
  private readonly children = new Map<object, Map<string, { inc(n?: number): void }>>();
  private readonly timers = new Map<object, Map<string, { observe(v: number): void }>>();
  private readonly split = new Map<string, { channel: string; relay: "true" | "false" }>();
  private sources: MetricsSources | undefined;
  private readonly now: () => number;

  constructor(options: { nodeId: string; version: string; now?: () => number }) {
    const registers = [this.registry];
    this.now = options.now ?? Date.now;
    const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> =>
      new Counter<L>({ name, help, labelNames, registers });
    const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[], collect: (g: Gauge<L>) => void): Gauge<L> => {
      const g: Gauge<L> = new Gauge<L>({
        name,
        help,
        labelNames,
        registers,
        collect: () => {
          g.reset();
          if (this.sources) collect(g);
        },
      });
      return g;
    };
    const group = ["channel", "group", "relay"] as const;
    const channel = ["channel", "relay"] as const;

    new Gauge({ name: "weft_info", help: "Always 1; the labels say which sidecar and software this is.", labelNames: ["node_id", "version"], registers }).set(
      { node_id: options.nodeId, version: options.version },
      1,
    );

    // The four rates.
    this.publishedTotal = counter("weft_events_published_total", "Valid events publishers sent to this sidecar, duplicates included (generated).", ["channel"]);
    this.storedTotal = counter("weft_events_stored_total", "Events appended to this sidecar's log, duplicates excluded; relay=\"true\" for copies peers forwarded here (stored).", channel);
    this.forwardedTotal = counter("weft_events_forwarded_total", "Events this sidecar forwarded to peers for their groups' members, re-forwards included (transmitted).", ["channel", "peer"]);
    this.ackedTotal = counter(
      "weft_events_acked_total",
      "Events a group finished on this sidecar's log: acked by a member here, or (relay=\"false\") reported done by the peer it was forwarded to (processed).",
      group,
    );

    this.storedBytesTotal = counter("weft_events_stored_bytes_total", "Bytes of the records appended to this sidecar's log.", channel);
    this.dedupTotal = counter("weft_dedup_hits_total", "Re-published (source, id) pairs acked with their original sequence and not stored again.", channel);
    this.forwardedBytesTotal = counter("weft_peer_forwarded_bytes_total", "Event bytes forwarded to each peer.", ["peer"]);
    this.deliveredTotal = counter("weft_deliveries_total", "Deliveries handed to members (to a peer's link, at the origin, for groups behind it), redeliveries included.", group);
    this.redeliveredTotal = counter("weft_redeliveries_total", "Deliveries with attempt > 1: after a nack, a missed ack deadline or a lost member.", group);
    this.deadLetteredTotal = counter("weft_dead_letters_total", "Events a group moved to its dead-letter channel after max attempts.", group);
    this.expiredTotal = counter("weft_events_expired_total", "Events retention removed from this sidecar's log.", channel);
    this.groupExpiredTotal = counter("weft_group_events_expired_total", "Events retention removed before the group finished them (lost to the group, never silently).", group);
    this.peerLinkTotal = counter("weft_peer_link_changes_total", 'Peer links that came up (state="up") or went down (state="down").', ["peer", "state"]);

    const buckets = [...LATENCY_BUCKETS];
    this.toDelivery = new Histogram({
      name: "weft_publish_to_delivery_seconds",
      help: "From storing an event in this sidecar's log to its first delivery to a member of the group (at the origin, for groups behind a peer: to the forward).",
      labelNames: group,
      buckets,
      registers,
    });
    this.toAck = new Histogram({
      name: "weft_publish_to_ack_seconds",
      help: "From storing an event in this sidecar's log to the group finishing it (at the origin, for groups behind a peer: the peer's report).",
      labelNames: group,
      buckets,
      registers,
    });

    gauge("weft_group_backlog", "Events of the channel the group has not finished: stored but not yet acked or dead-lettered.", group, (g) => {
      for (const s of this.sources!.engine.status()) g.inc(this.groupLabels(s.channel, s.group), s.backlog);
    });
    gauge("weft_group_inflight", "Deliveries handed to members (or forwarded to peers) and not yet finished.", group, (g) => {
      for (const s of this.sources!.engine.status()) g.inc(this.groupLabels(s.channel, s.group), s.inflight);
    });
    gauge("weft_group_members", "Members of the group behind this sidecar: Subscribe streams, and one per peer link with members.", group, (g) => {
      for (const s of this.sources!.engine.status()) g.inc(this.groupLabels(s.channel, s.group), s.members);
    });
    gauge("weft_peer_up", "1 while the link with the peer is up, 0 while it is down (the peer is known, dialed or waiting out its timeout).", ["peer"], (g) => {
      for (const p of this.sources!.mesh.status()) g.set({ peer: p.nodeId }, p.connected ? 1 : 0);
    });
    gauge("weft_peer_inflight", "Events forwarded to the peer and not yet reported handled there.", ["peer"], (g) => {
      for (const p of this.sources!.mesh.status()) g.set({ peer: p.nodeId }, p.inflight);
    });
    gauge("weft_log_bytes", "Bytes of the records this sidecar's log retains (the log's size on disk, before LevelDB's own overhead and compression).", channel, (g) => {
      const log = this.sources!.log;
      for (const c of log.channels()) g.inc(this.channelLabels(c), log.head(c).bytes);
    });
    gauge("weft_log_events", "Events this sidecar's log retains.", channel, (g) => {
      const log = this.sources!.log;
      for (const c of log.channels()) {
        const h = log.head(c);
        g.inc(this.channelLabels(c), Math.max(0, h.last - h.first + 1));
      }
    });
  }

  /** From now on the gauges read where things stand from `sources` at every scrape. */
  watch(sources: MetricsSources): void {
    this.sources = sources;
  }

  /** The exposition's content type (Prometheus text format 0.0.4). */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Every series of this sidecar and of its process, in Prometheus text format. */
  async render(): Promise<string> {
    return Registry.merge([this.registry, processRegistry()]).metrics();
  }

  // ---- Observer ----

  published(channel: string, count: number): void {
    if (count > 0) this.child(this.publishedTotal, channel, () => ({ channel })).inc(count);
  }

  stored(channel: string, count: number, bytes: number): void {
    if (count > 0) this.child(this.storedTotal, channel, () => this.channelLabels(channel)).inc(count);
    if (bytes > 0) this.child(this.storedBytesTotal, channel, () => this.channelLabels(channel)).inc(bytes);
  }

  deduplicated(channel: string): void {
    this.child(this.dedupTotal, channel, () => this.channelLabels(channel)).inc();
  }

  forwarded(peer: string, channel: string, _group: string, count: number, bytes: number): void {
    if (count > 0) this.child(this.forwardedTotal, `${channel}\0${peer}`, () => ({ channel, peer })).inc(count);
    if (bytes > 0) this.child(this.forwardedBytesTotal, peer, () => ({ peer })).inc(bytes);
  }

  delivered(channel: string, group: string, deliveries: readonly OutgoingDelivery[]): void {
    if (deliveries.length === 0) return;
    const key = `${channel}\0${group}`;
    const labels = (): Record<GroupLabels, string> => this.groupLabels(channel, group);
    this.child(this.deliveredTotal, key, labels).inc(deliveries.length);
    const now = this.now();
    let redelivered = 0;
    for (const d of deliveries) {
      if (d.attempt > 1) redelivered++;
      else this.timer(this.toDelivery, key, labels).observe(seconds(now, d.event));
    }
    if (redelivered > 0) this.child(this.redeliveredTotal, key, labels).inc(redelivered);
  }

  acked(channel: string, group: string, event: StoredEvent): void {
    const key = `${channel}\0${group}`;
    const labels = (): Record<GroupLabels, string> => this.groupLabels(channel, group);
    this.child(this.ackedTotal, key, labels).inc();
    this.timer(this.toAck, key, labels).observe(seconds(this.now(), event));
  }

  deadLettered(channel: string, group: string): void {
    this.child(this.deadLetteredTotal, `${channel}\0${group}`, () => this.groupLabels(channel, group)).inc();
  }

  expired(channel: string, group: string | undefined, count: number): void {
    if (count <= 0) return;
    if (group === undefined) this.child(this.expiredTotal, channel, () => this.channelLabels(channel)).inc(count);
    else this.child(this.groupExpiredTotal, `${channel}\0${group}`, () => this.groupLabels(channel, group)).inc(count);
  }

  peerLink(peer: string, up: boolean): void {
    const state = up ? "up" : "down";
    this.child(this.peerLinkTotal, `${peer}\0${state}`, () => ({ peer, state })).inc();
  }

  // ---- labels ----

  /** The labels of a log channel: its event channel, and whether it holds relay copies. */
  private channelLabels(logChannel: string): Record<ChannelLabels, string> {
    let labels = this.split.get(logChannel);
    if (!labels) {
      const tilde = logChannel.indexOf("~");
      labels = tilde < 0 ? { channel: logChannel, relay: "false" } : { channel: logChannel.slice(0, tilde), relay: "true" };
      this.split.set(logChannel, labels);
    }
    return { ...labels };
  }

  private groupLabels(logChannel: string, group: string): Record<GroupLabels, string> {
    const { channel, relay } = this.channelLabels(logChannel);
    return { channel, group, relay };
  }

  private child<L extends string>(metric: Counter<L>, key: string, labels: () => Record<L, string>): { inc(n?: number): void } {
    let byKey = this.children.get(metric);
    if (!byKey) this.children.set(metric, (byKey = new Map()));
    let c = byKey.get(key);
    if (!c) byKey.set(key, (c = metric.labels(labels())));
    return c;
  }

  private timer<L extends string>(metric: Histogram<L>, key: string, labels: () => Record<L, string>): { observe(v: number): void } {
    let byKey = this.timers.get(metric);
    if (!byKey) this.timers.set(metric, (byKey = new Map()));
    let t = byKey.get(key);
    if (!t) byKey.set(key, (t = metric.labels(labels())));
    return t;
  }
}

/** Seconds since the event was stored in this log; never negative (clocks may step back). */
function seconds(now: number, event: StoredEvent): number {
  return Math.max(0, now - event.appendedAt) / 1000;
}

let processMetrics: Registry | undefined;

/** The process's own metrics (CPU, memory, event loop, GC): one registry per process. */
function processRegistry(): Registry {
  if (!processMetrics) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
    // Gauges named like counters: Prometheus's naming rules (and `promtool check metrics`)
    // reserve "_total" for counters. nodejs_active_handles and its kin say the same.
    for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) {
      processMetrics.removeSingleMetric(name);
    }
  }
  return processMetrics;
}
