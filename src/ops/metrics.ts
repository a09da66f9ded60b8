import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import type { ObservedDelivery, ObservedEvent, Observer, StoredCopies } from "./observer.js";
import { ChannelPeerSeries, ChannelSeries, GroupSeries, type PeerLinkSeries, PeerSeries, SeriesHistogram, allGroupSeries, type GroupLabels } from "./series.js";

/**
 * What the scrape-time gauges read: the parts of a running sidecar that know where things
 * stand now (backlogs, in-flight deliveries, peer links, log sizes).
 */
export interface MetricsSources {
  /** The event log: its channels, and for each the retained range and its bytes. */
  log: { channels(): string[]; head(channel: string): { first: number; last: number; bytes: number } };
  /**
   * The delivery engine: where each group stands (`inflightCopies`: of its deliveries in
   * flight, those of relay copies), and the bytes read ahead of all cursors.
   */
  engine: { status(): { channel: string; group: string; backlog: number; inflight: number; inflightCopies: number; members: number }[]; readonly readAheadBytes: number };
  /** The mesh: each peer, whether its link is up, and its events in flight. */
  mesh: { status(): { nodeId: string; connected: boolean; inflight: number }[] };
  /** Bytes of request messages each listener has received in part. */
  receiving?: () => { listener: string; bytes: number }[];
}

/** Seconds, from 1 ms to 30 min: a live event takes milliseconds, a backlog drained late takes minutes. */
export const LATENCY_BUCKETS: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800];


/**
 * The Prometheus metrics of one sidecar, and the {@link Observer} that counts them.
 *
 * Every sidecar has its own registry (several sidecars in one process do not mix their
 * series); the process metrics (`process_*`, `nodejs_*`) are one registry per process, shown
 * by every sidecar in it. Counters move as the observer is told; gauges are read from the
 * sidecar at scrape time once {@link watch} has been given its parts.
 *
 * Labels are bounded: `channel` is an event channel, `group` a consumer group, `peer` a
 * node id the mesh knows (a peer's series go when the mesh forgets it, see peerGone), and
 * `relay` says whether the events counted are relay copies (copies of events other sidecars
 * published, ObservedEvent.origin): "true" for them, "false" for this sidecar's own events.
 * Series of a whole channel or group that cannot tell the two apart (backlog, members, log
 * size, retention) are `relay="false"` and count the relay copies the channel holds too.
 * No label is per event, per delivery or per client.
 */
export class SidecarMetrics implements Observer {
  /** This sidecar's own series. */
  readonly registry = new Registry();

  /** The hot path's counts, by channel (and group, and peer) and relay, read into prom-client at scrape. */
  private readonly channelSeries = new Map<string, [own: ChannelSeries, relay: ChannelSeries]>();
  private readonly groupSeries = new Map<string, Map<string, GroupSeries[]>>();
  private readonly peerSeries = new Map<string, PeerSeries>();
  private sources: MetricsSources | undefined;
  private readonly now: () => number;
  /** Drops a peer's series from every counter labelled by peer (the gauges are read afresh at each scrape). */
  private readonly removePeerSeries: (p: PeerSeries) => void;
  /** Requests refused for a limit, by reason (see refused). */
  private readonly refusals = new Map<string, number>();
  /** Whether the log's disk is full now (see diskFull). */
  private diskIsFull = false;

  constructor(options: { nodeId: string; version: string; now?: () => number }) {
    const registers = [this.registry];
    this.now = options.now ?? Date.now;
    // Counters move in plain numbers on the hot path (prom-client hashes the labels of every
    // inc), and are added to prom-client's series when read: at scrape, or by the dashboard.
    const counter = <L extends string, S extends { labels: Record<string, string> }>(
      name: string,
      help: string,
      labelNames: readonly L[],
      series: () => Iterable<S>,
      take: (s: S) => number,
    ): Counter<L> => {
      const pick = (labels: Record<string, string>): Record<L, string> => Object.fromEntries(labelNames.map((n) => [n, labels[n] ?? ""])) as Record<L, string>;
      const c: Counter<L> = new Counter<L>({
        name,
        help,
        labelNames,
        registers,
        collect: () => {
          for (const s of series()) {
            const n = take(s);
            if (n > 0) c.inc(pick(s.labels), n);
          }
        },
      });
      return c;
    };
    const channels = (): Iterable<ChannelSeries> => [...this.channelSeries.values()].flat();
    const groups = (): Iterable<GroupSeries> => allGroupSeries(this.groupSeries);
    const peers = (): Iterable<PeerSeries> => this.peerSeries.values();
    const channelPeers = (): Iterable<ChannelPeerSeries> => [...this.peerSeries.values()].flatMap((p) => [...p.channels.values()]);
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

    counter(
      "weft_limit_refusals_total",
      "Requests refused for a limit of this sidecar, by reason: TOO_MANY_CHANNELS, TOO_MANY_GROUPS, TOO_MANY_PEERS, RECEIVE_BUDGET.",
      ["reason"],
      () => [...this.refusals].map(([reason]) => ({ labels: { reason } })),
      (s) => {
        const n = this.refusals.get(s.labels.reason) ?? 0;
        this.refusals.set(s.labels.reason, 0);
        return n;
      },
    );

    // The four rates.
    counter("weft_events_published_total", "Valid events publishers sent to this sidecar, duplicates included (generated).", ["channel"], channels, (s) => s.take("published"));
    counter("weft_events_stored_total", "Events appended to this sidecar's log, duplicates excluded; relay=\"true\" for copies peers forwarded here (stored).", channel, channels, (s) => s.take("stored"));
    const forwarded = counter("weft_events_forwarded_total", "Events this sidecar forwarded to peers for their groups' members, re-forwards included (transmitted).", ["channel", "peer"], channelPeers, (s) => s.take("forwarded"));
    counter(
      "weft_events_acked_total",
      "Events a group finished on this sidecar's log: acked by a member here, or (relay=\"false\") reported done by the peer it was forwarded to (processed).",
      group,
      groups,
      (s) => s.take("acked"),
    );

    counter("weft_events_stored_bytes_total", "Bytes of the records appended to this sidecar's log.", channel, channels, (s) => s.take("storedBytes"));
    counter("weft_dedup_hits_total", "Re-published (source, id) pairs acked with their original sequence and not stored again.", channel, channels, (s) => s.take("dedup"));
    const forwardedBytes = counter("weft_peer_forwarded_bytes_total", "Event bytes forwarded to each peer.", ["peer"], peers, (s) => s.take("forwardedBytes"));
    counter("weft_deliveries_total", "Deliveries handed to members (to a peer's link, at the origin, for groups behind it), redeliveries included.", group, groups, (s) => s.take("delivered"));
    counter("weft_redeliveries_total", "Deliveries with attempt > 1: after a nack, a missed ack deadline or a lost member.", group, groups, (s) => s.take("redelivered"));
    counter("weft_dead_letters_total", "Events a group moved to its dead-letter channel after max attempts.", group, groups, (s) => s.take("deadLettered"));
    counter("weft_events_expired_total", "Events retention removed from this sidecar's log.", channel, channels, (s) => s.take("expired"));
    counter("weft_group_events_expired_total", "Events retention removed before the group finished them (lost to the group, never silently).", group, groups, (s) => s.take("expired"));
    const links = (): Iterable<PeerLinkSeries> => [...this.peerSeries.values()].flatMap((p) => [p.up, p.down]);
    const linkChanges = counter("weft_peer_link_changes_total", 'Peer links that came up (state="up") or went down (state="down").', ["peer", "state"], links, (s) => s.take("changes"));
    this.removePeerSeries = (p) => {
      for (const c of p.channels.values()) forwarded.remove(c.labels);
      forwardedBytes.remove(p.labels);
      for (const l of [p.up, p.down]) linkChanges.remove(l.labels);
    };

    this.registry.registerMetric(
      new SeriesHistogram<GroupLabels>(
        "weft_publish_to_delivery_seconds",
        "From storing an event in this sidecar's log to its first delivery to a member of the group (at the origin, for groups behind a peer: to the forward).",
        () => [...groups()].map((s) => [s.labels, s.toDelivery]),
      ).asMetric(),
    );
    this.registry.registerMetric(
      new SeriesHistogram<GroupLabels>(
        "weft_publish_to_ack_seconds",
        "From storing an event in this sidecar's log to the group finishing it (at the origin, for groups behind a peer: the peer's report).",
        () => [...groups()].map((s) => [s.labels, s.toAck]),
      ).asMetric(),
    );

    gauge("weft_group_backlog", "Events of the channel the group has not finished: stored but not yet acked or dead-lettered (relay copies held here included).", group, (g) => {
      for (const s of this.sources!.engine.status()) g.inc(labels(s.channel, s.group, false), s.backlog);
    });
    gauge("weft_group_inflight", "Deliveries handed to members (or forwarded to peers) and not yet finished; relay=\"true\" for deliveries of relay copies.", group, (g) => {
      for (const s of this.sources!.engine.status()) {
        g.inc(labels(s.channel, s.group, false), s.inflight - s.inflightCopies);
        g.inc(labels(s.channel, s.group, true), s.inflightCopies);
      }
    });
    gauge("weft_group_members", "Members of the group behind this sidecar: Subscribe streams, and one per peer link with members.", group, (g) => {
      for (const s of this.sources!.engine.status()) g.inc(labels(s.channel, s.group, false), s.members);
    });
    gauge("weft_read_ahead_bytes", "Bytes of events all groups hold in memory together (read ahead of their cursors, waiting or in flight); maxReadAheadBytes bounds it.", [], (g) => {
      g.set(this.sources!.engine.readAheadBytes);
    });
    gauge("weft_partial_message_bytes", "Bytes of request messages a listener (service or peer) has received in part; maxPartialMessageBytes bounds each.", ["listener"], (g) => {
      for (const r of this.sources!.receiving?.() ?? []) g.set({ listener: r.listener }, r.bytes);
    });
    gauge("weft_peer_up", "1 while the link with the peer is up, 0 while it is down (the peer is known, dialed or waiting out its timeout).", ["peer"], (g) => {
      for (const p of this.sources!.mesh.status()) g.set({ peer: p.nodeId }, p.connected ? 1 : 0);
    });
    gauge("weft_peer_inflight", "Events forwarded to the peer and not yet reported handled there.", ["peer"], (g) => {
      for (const p of this.sources!.mesh.status()) g.set({ peer: p.nodeId }, p.inflight);
    });
    gauge("weft_log_bytes", "Bytes of the records this sidecar's log retains (the log's size on disk, before LevelDB's own overhead and compression), relay copies included.", channel, (g) => {
      const log = this.sources!.log;
      for (const c of log.channels()) g.inc({ channel: c, relay: "false" }, log.head(c).bytes);
    });
    gauge("weft_log_disk_full", "1 while the disk of this sidecar's log is full (publishes refused with DISK_FULL, /readyz 503), else 0.", [], (g) => {
      g.set(this.diskIsFull ? 1 : 0);
    });
    gauge("weft_log_events", "Events this sidecar's log retains, relay copies included.", channel, (g) => {
      const log = this.sources!.log;
      for (const c of log.channels()) {
        const h = log.head(c);
        g.inc({ channel: c, relay: "false" }, Math.max(0, h.last - h.first + 1));
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
    this.channel(channel)[0].counts.published += count;
  }

  stored(channel: string, count: number, bytes: number, copies: StoredCopies): void {
    const [own, relay] = this.channel(channel);
    own.counts.stored += count - copies.count;
    own.counts.storedBytes += bytes - copies.bytes;
    relay.counts.stored += copies.count;
    relay.counts.storedBytes += copies.bytes;
  }

  deduplicated(channel: string, relay: boolean): void {
    this.channel(channel)[relay ? 1 : 0].counts.dedup++;
  }

  forwarded(peer: string, channel: string, _group: string, count: number, bytes: number): void {
    const p = this.peer(peer);
    p.counts.forwardedBytes += bytes;
    let c = p.channels.get(channel);
    if (!c) p.channels.set(channel, (c = new ChannelPeerSeries({ channel, peer })));
    c.counts.forwarded += count;
  }

  delivered(channel: string, group: string, deliveries: readonly ObservedDelivery[]): void {
    const now = this.now();
    let own: GroupSeries | undefined;
    let relay: GroupSeries | undefined;
    for (const d of deliveries) {
      const s = d.event.origin ? (relay ??= this.group(channel, group, true)) : (own ??= this.group(channel, group, false));
      s.counts.delivered++;
      if (d.attempt > 1) s.counts.redelivered++;
      else s.toDelivery.observe(seconds(now, d.event));
    }
  }

  acked(channel: string, group: string, event: ObservedEvent): void {
    const s = this.group(channel, group, event.origin !== undefined);
    s.counts.acked++;
    s.toAck.observe(seconds(this.now(), event));
  }

  deadLettered(channel: string, group: string, event: ObservedEvent): void {
    this.group(channel, group, event.origin !== undefined).counts.deadLettered++;
  }

  expired(channel: string, group: string | undefined, count: number): void {
    if (count <= 0) return;
    if (group === undefined) this.channel(channel)[0].counts.expired += count;
    else this.group(channel, group, false).counts.expired += count;
  }

  peerLink(peer: string, up: boolean): void {
    const p = this.peer(peer);
    (up ? p.up : p.down).counts.changes++;
  }

  diskFull(_dir: string, full: boolean): void {
    this.diskIsFull = full;
  }

  refused(reason: string): void {
    this.refusals.set(reason, (this.refusals.get(reason) ?? 0) + 1);
  }

  /** A peer the mesh forgot leaves /metrics: peer ids a client invents cannot grow it without bound. */
  peerGone(peer: string): void {
    const p = this.peerSeries.get(peer);
    if (!p) return;
    this.peerSeries.delete(peer);
    this.removePeerSeries(p);
  }

  // ---- series ----

  /** A channel's series: its own events, and the relay copies it holds. */
  private channel(channel: string): [ChannelSeries, ChannelSeries] {
    let s = this.channelSeries.get(channel);
    if (!s) this.channelSeries.set(channel, (s = [new ChannelSeries({ channel, relay: "false" }), new ChannelSeries({ channel, relay: "true" })]));
    return s;
  }

  /**
   * A group's series of this sidecar's own events, or of the relay copies held for it: made
   * when first counted, so that a group without copies has no relay series (a histogram
   * shows every series it has).
   */
  private group(channel: string, group: string, relay: boolean): GroupSeries {
    let byGroup = this.groupSeries.get(channel);
    if (!byGroup) this.groupSeries.set(channel, (byGroup = new Map()));
    let pair = byGroup.get(group);
    if (!pair) byGroup.set(group, (pair = []));
    const i = relay ? 1 : 0;
    return (pair[i] ??= new GroupSeries(labels(channel, group, relay), LATENCY_BUCKETS));
  }

  private peer(peer: string): PeerSeries {
    let s = this.peerSeries.get(peer);
    if (!s) this.peerSeries.set(peer, (s = new PeerSeries(peer)));
    return s;
  }

}

const labels = (channel: string, group: string, relay: boolean): Record<GroupLabels, string> => ({ channel, group, relay: relay ? "true" : "false" });

/** Seconds since the event was stored in this log; never negative (clocks may step back). */
function seconds(now: number, event: ObservedEvent): number {
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
