import { Reason, notFound } from "../contract/errors.js";
import { checkChannel } from "../contract/validate.js";
import type { DeliveryEngine } from "../delivery/delivery-engine.js";
import type { GroupDetail } from "../delivery/types.js";
import type { EventLog } from "../log/event-log.js";
import type { PeerDetail } from "../mesh/mesh-node.js";
import { type DeadLetterPage, DeadLetters, type Redriven } from "./dead-letters.js";
import type { EventCounters, EventCounts } from "./event-counters.js";

/** A run of stored events of one log channel. */
export interface LogRange {
  /** Events retained. */
  events: number;
  /** Bytes the retained events take in the log. */
  bytes: number;
  /** The oldest retained sequence; 0 when nothing is retained. */
  oldestSequence: number;
  /** The newest sequence stored; 0 before the first. */
  newestSequence: number;
  /** When the oldest retained event was stored, Unix ms; undefined when nothing is retained. */
  oldestTime: number | undefined;
  /** When the newest retained event was stored, Unix ms; undefined when nothing is retained. */
  newestTime: number | undefined;
  /** Events retention removed, ever. */
  expired: number;
}

/** One channel at this sidecar. */
export interface ChannelView {
  channel: string;
  /** The channel's events here: published to this sidecar, and relay copies peers forwarded here. */
  log: LogRange;
  /** Its groups, by name, and how far behind each is on `log`. */
  groups: { group: string; backlog: number; inflight: number; members: number }[];
  /** The groups whose dead-letter channel this is. */
  deadLettersOf: { channel: string; group: string }[];
}

/** One group of a channel at this sidecar. */
export interface GroupView {
  group: string;
  ackedThrough: number;
  backlog: number;
  inflight: number;
  localMembers: number;
  remoteMembers: number;
  maxAttempts: number;
  deadLetterChannel: string;
  /** Events retention removed before the group finished them. */
  expired: number;
  /** Unix ms; undefined when unknown. */
  createdAt: number | undefined;
  /**
   * Of `backlog`, the relay copies held for the group (events other sidecars published,
   * forwarded for the group's members here); undefined when not counted (see groups()).
   */
  relayBacklog: number | undefined;
  /** Of `inflight`, deliveries of relay copies to members here. */
  relayInflight: number;
  /** Pending dead letters here (counted among at most 10 000 dead-letter channel events). */
  deadLetters: number;
  /** True when the dead letters were not all counted. */
  deadLettersMore: boolean;
}

/** One peer, as this sidecar sees it. */
export interface PeerView {
  nodeId: string;
  connected: boolean;
  /** The address dialed; "" when the peer dialed in. */
  address: string;
  softwareVersion: string;
  /** When the link came up (connected) or went down, Unix ms. */
  since: number;
  /** Events forwarded and not yet reported handled (the peer's lag). */
  inflight: number;
  groups: { channel: string; group: string; inflight: number }[];
}

/** The four counters, when they were read, and since when they count. */
export interface StatsView extends EventCounts {
  nodeId: string;
  /** Unix ms. */
  time: number;
  /** Unix ms. */
  startTime: number;
}

export interface SidecarAdminDeps {
  nodeId: string;
  log: EventLog;
  engine: DeliveryEngine;
  /** The mesh (MeshNode): its peers. */
  mesh: { describePeers(): PeerDetail[] };
  /** Counts the four rates (composed into the sidecar's observer). */
  counters: EventCounters;
  now?: () => number;
}

/**
 * The operator's view of one sidecar and the actions on it: channels, groups, peers, dead
 * letters (list, redrive, purge) and the four counters. The logic behind weft.v1.Admin, in
 * plain TypeScript: the gRPC service, the CLI (through it) and the dashboard call the same
 * methods, which check their input and throw WeftError (INVALID_ARGUMENT, NOT_FOUND, ...)
 * like the service API does.
 */
export class SidecarAdmin {
  readonly deadLetters: DeadLetters;
  private readonly now: () => number;

  constructor(private readonly deps: SidecarAdminDeps) {
    this.deadLetters = new DeadLetters(deps.log, deps.engine);
    this.now = deps.now ?? Date.now;
  }

  get nodeId(): string {
    return this.deps.nodeId;
  }

  /** Every channel with events (its own, or relay copies) or groups here, sorted by name. */
  async channels(): Promise<ChannelView[]> {
    const { log, engine } = this.deps;
    const details = engine.describeGroups();
    const names = new Set(log.channels());
    for (const d of details) names.add(d.channel);
    const out: ChannelView[] = [];
    for (const channel of [...names].sort()) {
      out.push({
        channel,
        log: await this.range(channel),
        groups: details
          .filter((d) => d.channel === channel)
          .sort(byGroup)
          .map((d) => ({ group: d.group, backlog: d.backlog, inflight: d.inflight, members: d.localMembers + d.remoteMembers })),
        deadLettersOf: details
          .filter((d) => d.deadLetterChannel === channel)
          .sort((a, b) => a.channel.localeCompare(b.channel) || a.group.localeCompare(b.group))
          .map((d) => ({ channel: d.channel, group: d.group })),
      });
    }
    return out;
  }

  /**
   * The groups of `channel` here, sorted by name. With `countCopies` (the default), each
   * group's relay copies not yet done are counted, reading the part of the log the group
   * has not read yet: the cost grows with an idle group's backlog.
   * @throws WeftError INVALID_ARGUMENT (INVALID_CHANNEL), NOT_FOUND (CHANNEL_NOT_FOUND) for a
   *   channel with no events or groups here.
   */
  async groups(channel: string, options: { countCopies?: boolean } = {}): Promise<GroupView[]> {
    checkChannel(channel, "channel");
    const { engine, log } = this.deps;
    const own = engine
      .describeGroups()
      .filter((d) => d.channel === channel)
      .sort(byGroup);
    if (own.length === 0 && !log.channels().includes(channel)) {
      throw notFound(Reason.CHANNEL_NOT_FOUND, "channel", `this sidecar has no events, relay copies or groups of channel ${JSON.stringify(channel)}; list its channels with ListChannels (weft channels)`);
    }
    const out: GroupView[] = [];
    for (const d of own) {
      const dead = await this.deadLetters.count(channel, d.group);
      const copies = (options.countCopies ?? true) ? await engine.copiesPending(channel, d.group) : undefined;
      out.push(groupView(d, copies, dead));
    }
    return out;
  }

  /** Every peer known (linked, or lost and waiting out the peer timeout), sorted by node id. */
  peers(): PeerView[] {
    return this.deps.mesh
      .describePeers()
      .map((p) => ({
        nodeId: p.nodeId,
        connected: p.connected,
        address: p.address,
        softwareVersion: p.softwareVersion,
        since: p.since,
        inflight: p.inflight,
        groups: [...p.forwarding].sort((a, b) => a.channel.localeCompare(b.channel) || a.group.localeCompare(b.group)),
      }))
      .sort((a, b) => a.nodeId.localeCompare(b.nodeId));
  }

  /** A page of a group's pending dead letters (see DeadLetters.list). */
  listDeadLetters(channel: string, group: string, options: { after?: number; limit?: number } = {}): Promise<DeadLetterPage> {
    return this.deadLetters.list(channel, group, options);
  }

  /** Redrives dead letters to their group only (see DeadLetters.redrive). */
  redrive(channel: string, group: string, options: { sequences?: readonly number[]; limit?: number } = {}): Promise<{ redriven: Redriven[]; more: boolean }> {
    return this.deadLetters.redrive(channel, group, options);
  }

  /** Purges dead letters (see DeadLetters.purge); resolves with how many. */
  purge(channel: string, group: string, options: { sequences?: readonly number[] } = {}): Promise<number> {
    return this.deadLetters.purge(channel, group, options);
  }

  /** The four counters now. */
  stats(): StatsView {
    return { nodeId: this.deps.nodeId, time: this.now(), startTime: this.deps.counters.startedAt, ...this.deps.counters.counts() };
  }

  private async range(logChannel: string): Promise<LogRange> {
    const head = this.deps.log.head(logChannel);
    const events = Math.max(0, head.last - head.first + 1);
    if (events === 0) return { ...emptyRange(), newestSequence: head.last, expired: head.expired };
    const [oldest, newest] = await this.deps.log.get(logChannel, [head.first, head.last]);
    return {
      events,
      bytes: head.bytes,
      oldestSequence: head.first,
      newestSequence: head.last,
      oldestTime: oldest?.appendedAt,
      newestTime: newest?.appendedAt,
      expired: head.expired,
    };
  }
}

function groupView(d: GroupDetail, copies: number | undefined, dead: { count: number; more: boolean }): GroupView {
  return {
    group: d.group,
    ackedThrough: d.ackedThrough,
    backlog: d.backlog,
    inflight: d.inflight,
    localMembers: d.localMembers,
    remoteMembers: d.remoteMembers,
    maxAttempts: d.maxAttempts,
    deadLetterChannel: d.deadLetterChannel,
    expired: d.expiredUnacked,
    createdAt: d.createdAt || undefined,
    relayBacklog: copies,
    relayInflight: d.inflightCopies,
    deadLetters: dead.count,
    deadLettersMore: dead.more,
  };
}

const byGroup = (a: { group: string }, b: { group: string }): number => a.group.localeCompare(b.group);

function emptyRange(): LogRange {
  return { events: 0, bytes: 0, oldestSequence: 0, newestSequence: 0, oldestTime: undefined, newestTime: undefined, expired: 0 };
}
