import type { Registry } from "prom-client";
import type { EventCounts, SidecarAdmin } from "../admin/index.js";
import { type GroupCounts, type RateHistory, type RateSample, drainSeconds } from "./rate-history.js";

/** Dead letters shown per group on the dashboard (the oldest; the count says how many in all). */
export const DEAD_LETTERS_SHOWN = 20;

/** What the dashboard shows of one sidecar: the body of GET /api/overview. */
export interface Overview {
  nodeId: string;
  version: string;
  /** Unix ms. */
  time: number;
  /** Undefined when ready; else why not (as /readyz says). */
  notReady: string | undefined;
  /** The four counters since `startTime` (Unix ms). */
  counters: EventCounts & { startTime: number };
  /** Peers known, with their link state. */
  peers: { nodeId: string; connected: boolean; address: string; since: number; inflight: number }[];
  /** The four rates, per second, oldest first, one sample each `intervalMs`. */
  rates: { intervalMs: number; capacity: number; samples: RateSample[] };
  /** Seconds the per-group rates (and so the drain estimates) are measured over. */
  drainWindowSeconds: number;
  channels: ChannelRow[];
  deadLetters: DeadLetterGroup[];
}

export interface ChannelRow {
  channel: string;
  /** Events of the channel retained here (relay copies included), and their bytes. */
  events: number;
  bytes: number;
  /** Published per second on this sidecar (over the drain window). */
  publishedPerSecond: number;
  groups: GroupRow[];
  /** The groups this is the dead-letter channel of, as "CHANNEL/GROUP". */
  deadLettersOf: string[];
}

export interface GroupRow {
  group: string;
  members: number;
  backlog: number;
  inflight: number;
  /** Events the group finished per second (over the drain window). */
  processedPerSecond: number;
  /** backlog ÷ (processed − published), seconds; 0 when there is no backlog; null when not draining. */
  drainSeconds: number | null;
  deadLetters: number;
  /** More dead letters than were counted. */
  deadLettersMore: boolean;
}

export interface DeadLetterGroup {
  channel: string;
  group: string;
  deadLetterChannel: string;
  count: number;
  more: boolean;
  /** The oldest pending ones, at most DEAD_LETTERS_SHOWN. */
  letters: { sequence: number; time: number; id: string; source: string; reason: string; attempts: string }[];
}

/** What an overview is made from. */
export interface OverviewSources {
  admin: SidecarAdmin;
  history: RateHistory;
  version: string;
  notReady: () => string | undefined;
}

/** Reads the sidecar now and makes an overview. */
export async function buildOverview({ admin, history, version, notReady }: OverviewSources): Promise<Overview> {
  const stats = admin.stats();
  const rates = history.groupRates();
  const channels: ChannelRow[] = [];
  const deadLetters: DeadLetterGroup[] = [];
  for (const c of await admin.channels()) {
    // Group details (with dead-letter counts) only where there are groups; a channel can go
    // away between the two reads (retention), and is then left out.
    const groups = c.groups.length === 0 ? [] : await admin.groups(c.channel, { countCopies: false }).catch(() => undefined);
    if (!groups) continue;
    const published = rates.published(c.channel);
    const rows = groups.map((g): GroupRow => {
      const processed = rates.acked(c.channel, g.group);
      return {
        group: g.group,
        members: g.localMembers + g.remoteMembers,
        backlog: g.backlog,
        inflight: g.inflight,
        processedPerSecond: processed,
        drainSeconds: drainSeconds(g.backlog, processed, published) ?? null,
        deadLetters: g.deadLetters,
        deadLettersMore: g.deadLettersMore,
      };
    });
    channels.push({
      channel: c.channel,
      events: c.log.events,
      bytes: c.log.bytes,
      publishedPerSecond: published,
      groups: rows,
      deadLettersOf: c.deadLettersOf.map((d) => `${d.channel}/${d.group}`),
    });
    for (const g of groups) {
      if (g.deadLetters === 0) continue;
      const page = await admin.listDeadLetters(c.channel, g.group, { limit: DEAD_LETTERS_SHOWN }).catch(() => undefined);
      if (!page) continue;
      deadLetters.push({
        channel: c.channel,
        group: g.group,
        deadLetterChannel: page.deadLetterChannel,
        count: g.deadLetters,
        more: g.deadLettersMore,
        letters: page.deadLetters.map((d) => ({
          sequence: d.sequence,
          time: d.time,
          id: d.event.id,
          source: d.event.source,
          reason: d.event.attributes["weft.dead_letter.reason"] ?? "",
          attempts: d.event.attributes["weft.dead_letter.attempts"] ?? "",
        })),
      });
    }
  }
  return {
    nodeId: stats.nodeId,
    version,
    time: stats.time,
    notReady: notReady(),
    counters: { published: stats.published, stored: stats.stored, forwarded: stats.forwarded, acked: stats.acked, startTime: stats.startTime },
    peers: admin.peers().map((p) => ({ nodeId: p.nodeId, connected: p.connected, address: p.address, since: p.since, inflight: p.inflight })),
    rates: { intervalMs: history.intervalMs, capacity: history.capacity, samples: history.samples() },
    drainWindowSeconds: rates.seconds,
    channels,
    deadLetters,
  };
}

/**
 * Per-channel published and per-group processed counters, read from the sidecar's
 * Prometheus registry (weft_events_published_total, and weft_events_acked_total of the
 * group's own events and of the relay copies held for it, as its backlog counts both): the
 * same counts /metrics serves, not a second count.
 */
export async function groupCountsFromMetrics(registry: Registry): Promise<GroupCounts> {
  const published = new Map<string, number>();
  const acked = new Map<string, number>();
  const p = await registry.getSingleMetric("weft_events_published_total")?.get();
  for (const v of p?.values ?? []) published.set(String(v.labels.channel), v.value);
  const a = await registry.getSingleMetric("weft_events_acked_total")?.get();
  for (const v of a?.values ?? []) {
    const key = `${v.labels.channel} ${v.labels.group}`;
    acked.set(key, (acked.get(key) ?? 0) + v.value);
  }
  return { published, acked };
}
