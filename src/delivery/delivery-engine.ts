import { Reason, exhausted } from "../contract/errors.js";
import type { AppendEntry, AppendResult, GroupRecord, OriginLog } from "../log/origin-log.js";
import type { Origin, StoredEvent } from "../log/record.js";
import { NO_OBSERVER, type Observer } from "../ops/observer.js";
import { GroupDispatcher, type MemberCredits, type MemberState } from "./group-dispatcher.js";
import { ReadAheadBudget } from "./read-ahead-budget.js";
import { DEFAULTS, type JoinSettings, type Joined, type MemberSink, type Membership, type StartAt } from "./types.js";

export interface DeliveryEngineOptions {
  /** How often deadlines and delayed retries are checked, in ms. Default 50. */
  tickMs?: number;
  /** Most events each group reads ahead into memory. Default 10000. */
  maxPendingPerGroup?: number;
  /** Most event bytes each group reads ahead into memory. Default 64 MiB. */
  maxPendingBytesPerGroup?: number;
  /**
   * Most event bytes all groups together hold in memory (read ahead, waiting or in flight):
   * a group past it reads less and waits for acks to give bytes back (see ReadAheadBudget).
   * Default: no limit beyond each group's own.
   */
  maxReadAheadBytes?: number;
  /**
   * Most groups of one channel. A join or ensure that would create one more is refused with
   * TOO_MANY_GROUPS; groups already stored all load. Default: no limit.
   */
  maxGroupsPerChannel?: number;
  /** Told about storage failures the engine survives, and in which group. Default: printed to stderr. */
  onError?: (error: unknown, channel: string, group: string) => void;
  /** Told about deliveries, acks, dead letters and expiry. */
  observer?: Observer;
  now?: () => number;
}

/** A group as peers learn of it: its settings, where it started, and when. */
export interface KnownGroup {
  channel: string;
  group: string;
  start: StartAt;
  maxAttempts: number;
  deadLetterChannel: string;
  /** Unix ms; 0 when unknown (a group stored without it). */
  createdAt: number;
}

/** What a group looks like from outside. */
export interface GroupStatus {
  channel: string;
  group: string;
  ackedThrough: number;
  backlog: number;
  /** Deliveries handed to members (or forwarded to peers) and not yet finished. */
  inflight: number;
  members: number;
  /** Events retention removed before the group finished them. */
  expiredUnacked: number;
}

/** A group in detail, for operators. */
export interface GroupDetail {
  /** The log channel: the event channel, or "CHANNEL~GROUP" for a relay group. */
  channel: string;
  group: string;
  /** For a relay group (copies peers forwarded here): the event channel; undefined otherwise. */
  relayOf: string | undefined;
  ackedThrough: number;
  backlog: number;
  /** Deliveries out now: to members here, or forwarded to peers. */
  inflight: number;
  /** Subscribe streams on this sidecar. */
  localMembers: number;
  /** Peers with members the group forwards to. */
  remoteMembers: number;
  maxAttempts: number;
  deadLetterChannel: string;
  expiredUnacked: number;
  /** Unix ms; 0 when unknown. */
  createdAt: number;
}

/**
 * Routes the events of the origin log to groups. One GroupDispatcher per (channel, group);
 * groups are durable: once created they receive every later event of their channel, with or
 * without members, until retention removes it.
 */
export class DeliveryEngine {
  private readonly groups = new Map<string, GroupDispatcher>();
  private readonly creating = new Map<string, Promise<GroupDispatcher>>();
  /** Groups per channel, those being created included (see maxGroupsPerChannel). */
  private readonly groupsOf = new Map<string, number>();
  private readonly unsubscribe: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private nextMemberId = 1;
  /** Groups with members on this sidecar: how many, and the latest settings. */
  private readonly local = new Map<string, { count: number; settings: JoinSettings }>();
  private readonly interestListeners = new Set<(settings: JoinSettings, present: boolean) => void>();
  private readonly relayListeners = new Set<(channel: string, group: string, origin: Origin) => void>();
  private readonly createdListeners = new Set<(group: KnownGroup) => void>();
  private readonly now: () => number;
  private readonly budget: ReadAheadBudget;

  constructor(
    private readonly log: OriginLog,
    private readonly options: DeliveryEngineOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.budget = new ReadAheadBudget(options.maxReadAheadBytes ?? Infinity);
  }

  /** Bytes of events every group holds in memory now (read ahead, waiting or in flight). */
  get readAheadBytes(): number {
    return this.budget.bytes;
  }

  /** Loads every stored group and starts watching the log. */
  async start(): Promise<void> {
    for (const loaded of await this.log.loadGroups()) {
      const d = this.dispatcher(loaded.record, loaded.acked, loaded.inflight);
      this.groups.set(id(loaded.record.channel, loaded.record.group), d);
      this.countGroup(loaded.record.channel, 1);
      // Retention may have moved past the cursor while the group was not listening.
      d.trimmed(this.log.head(d.channel).first);
    }
    this.unsubscribe.push(
      this.log.onAppend((channel) => {
        for (const d of this.groups.values()) if (d.channel === channel) d.wake();
      }),
      // First attempts of events that go at once are stored with the events (GroupDispatcher.claim).
      this.log.onPrepare((channel, events, attempts) => {
        let settles: ((stored: boolean) => void)[] | undefined;
        for (const d of this.groups.values()) {
          if (d.channel !== channel) continue;
          const settle = d.claim(events, attempts);
          if (settle) (settles ??= []).push(settle);
        }
        return settles && ((stored) => settles.forEach((settle) => settle(stored)));
      }),
      this.log.onTrim((channel, first) => {
        for (const d of this.groups.values()) if (d.channel === channel) d.trimmed(first);
      }),
    );
    this.timer = setInterval(() => {
      for (const d of this.groups.values()) d.tick();
    }, this.options.tickMs ?? 50);
    this.timer.unref();
  }

  /**
   * Joins a member to a group, creating the group at its start position if it is new.
   * The member receives deliveries through `sink` until it calls `leave()`.
   *
   * A local member (a Subscribe stream) receives the group's events from this sidecar's
   * log and the relay copies peers forwarded to this sidecar for the group, within one
   * window of credits. A remote member (`remote`: a peer link standing for the group's
   * members behind that peer) receives only this sidecar's own events, never relay copies
   * (forwarded events are not forwarded again), and its deliveries have no deadline: they
   * end when the peer reports them handled or gives them back.
   *
   * The member's max attempts and dead-letter channel become the group's (the latest join
   * wins), unless `configure` is false and the group existed before this join.
   */
  async join(settings: JoinSettings, sink: MemberSink, options: { remote?: boolean; configure?: boolean } = {}): Promise<Membership> {
    const remote = options.remote ?? false;
    const relay = remote ? undefined : { ...settings, channel: relayChannel(settings.channel, settings.group), start: { kind: "earliest" } as const };
    // Both groups fit, or neither is created.
    this.makeRoom(relay ? [settings, relay] : [settings]);
    const own = await this.groupFor(settings);
    const dispatchers = [own.group];
    if (relay) dispatchers.push((await this.groupFor(relay)).group);
    // A member that may not change the group's settings keeps those of a group it did not create.
    const configure = own.created || (options.configure ?? true);
    if (configure) for (const d of dispatchers) await d.configure(settings.maxAttempts, settings.deadLetterChannel);
    const credits: MemberCredits = { window: settings.maxInFlight, inflight: 0, lastDeliveryId: 0, released: () => {} };
    const id = this.nextMemberId++;
    const members = dispatchers.map((d): [GroupDispatcher, MemberState] => [
      d,
      { id, sink, credits, ackDeadlineMs: remote ? Infinity : settings.ackDeadlineMs, deliveries: new Map(), queue: [], gone: false },
    ]);
    if (members.length > 1) {
      // A credit freed in one dispatcher may be used by the others.
      let scheduled = false;
      credits.released = () => {
        if (scheduled) return;
        scheduled = true;
        queueMicrotask(() => {
          scheduled = false;
          for (const [d, m] of members) if (!m.gone) d.kick();
        });
      };
    }
    const joined: Joined = {
      created: own.created,
      ackedThrough: own.group.ackedThrough,
      maxInFlight: settings.maxInFlight,
      ackDeadlineMs: settings.ackDeadlineMs,
      ...own.group.settings,
    };
    for (const [d, m] of members) d.addMember(m);
    if (!remote) this.countLocal(settings, 1);
    let left = false;
    const each = (f: (d: GroupDispatcher, m: MemberState) => void): void => {
      for (const [d, m] of members) if (!m.gone) f(d, m);
    };
    return {
      joined,
      ack: (ids) => each((d, m) => d.ack(m, ids)),
      nack: (ids, delayMs) => each((d, m) => d.nack(m, ids, delayMs)),
      giveBack: (ids) => each((d, m) => d.giveBack(m, ids)),
      extend: (ids, ms) => each((d, m) => d.extend(m, ids, ms)),
      credit: (more) => {
        if (left) return;
        if (credits.window + more > DEFAULTS.maxCredits) {
          throw exhausted(
            Reason.TOO_MANY_CREDITS,
            "credit.credits",
            `granting ${more} more would make ${credits.window + more} in flight; at most ${DEFAULTS.maxCredits} are allowed`,
          );
        }
        credits.window += more;
        each((d) => d.kick());
      },
      leave: (returned) => {
        if (left) return;
        left = true;
        each((d, m) => d.removeMember(m, returned));
        if (!remote) this.countLocal(settings, -1);
      },
    };
  }

  /**
   * Makes sure a group exists (creating it at its start position if new), without joining
   * it: an origin keeps events for a group it learnt of from a peer, members or not.
   */
  async ensure(settings: JoinSettings): Promise<void> {
    this.makeRoom([settings]);
    await this.groupFor(settings);
  }

  /**
   * Checks that the groups among `wanted` that do not exist yet may be created, and holds
   * their channels in the log (maxChannels), so that nothing between here and their
   * creation can take the room.
   * @throws WeftError TOO_MANY_GROUPS or TOO_MANY_CHANNELS (RESOURCE_EXHAUSTED); nothing changed.
   */
  private makeRoom(wanted: readonly { channel: string; group: string }[]): void {
    const max = this.options.maxGroupsPerChannel ?? Infinity;
    const fresh = wanted.filter((w) => !this.groups.has(id(w.channel, w.group)) && !this.creating.has(id(w.channel, w.group)));
    for (const w of fresh) {
      const count = this.groupsOf.get(w.channel) ?? 0;
      if (count >= max) {
        this.options.observer?.refused(Reason.TOO_MANY_GROUPS);
        throw exhausted(
          Reason.TOO_MANY_GROUPS,
          "open.group",
          `channel ${w.channel} has ${count} groups and its limit (maxGroupsPerChannel) is ${max}; group ${w.group} would be a new one: join an existing group, or raise maxGroupsPerChannel`,
        );
      }
    }
    if (fresh.length > 0) this.log.holdChannels(fresh.map((w) => w.channel));
  }

  private countGroup(channel: string, delta: 1 | -1): void {
    const n = (this.groupsOf.get(channel) ?? 0) + delta;
    if (n > 0) this.groupsOf.set(channel, n);
    else this.groupsOf.delete(channel);
  }

  /** Every group of this sidecar (not the relay groups), as peers learn of them. */
  knownGroups(): KnownGroup[] {
    const out: KnownGroup[] = [];
    for (const d of this.groups.values()) if (channelOfRelay(d.channel, d.group) === undefined) out.push(this.known(d));
    return out;
  }

  /** Told when a group is created. */
  onGroupCreated(listener: (group: KnownGroup) => void): () => void {
    this.createdListeners.add(listener);
    return () => this.createdListeners.delete(listener);
  }

  private known(d: GroupDispatcher): KnownGroup {
    const r = d.stored;
    return {
      channel: r.channel,
      group: r.group,
      start: r.start ?? { kind: "latest" },
      maxAttempts: r.maxAttempts,
      deadLetterChannel: r.deadLetterChannel,
      createdAt: r.createdAt ?? 0,
    };
  }

  /** The groups with members on this sidecar (Subscribe streams, not peers), with their latest settings. */
  interest(): JoinSettings[] {
    return [...this.local.values()].map((l) => l.settings);
  }

  /** Told when a group gains its first or loses its last member on this sidecar. */
  onInterest(listener: (settings: JoinSettings, present: boolean) => void): () => void {
    this.interestListeners.add(listener);
    return () => this.interestListeners.delete(listener);
  }

  /**
   * Told when a relay copy is done for its group here (acked or dead-lettered), with the
   * event's channel, the group and where it came from: the origin waits for this report.
   */
  onRelayDone(listener: (channel: string, group: string, origin: Origin) => void): () => void {
    this.relayListeners.add(listener);
    return () => this.relayListeners.delete(listener);
  }

  /** True when the relay copy stored at `sequence` is done for the group here. */
  relayDone(channel: string, group: string, sequence: number): boolean {
    return this.groups.get(id(relayChannel(channel, group), group))?.isDone(sequence) ?? false;
  }

  /**
   * The groups holding relay copies not yet done here that had deliveries in flight when
   * the sidecar stopped: their members were here then, and will likely come back.
   */
  relayBacklog(): { channel: string; group: string; backlog: number; maxAttempts: number; deadLetterChannel: string }[] {
    const out: { channel: string; group: string; backlog: number; maxAttempts: number; deadLetterChannel: string }[] = [];
    for (const d of this.groups.values()) {
      const channel = channelOfRelay(d.channel, d.group);
      if (channel !== undefined && d.backlog > 0 && d.inflightAtStart > 0) out.push({ channel, group: d.group, backlog: d.backlog, ...d.settings });
    }
    return out;
  }

  private countLocal(settings: JoinSettings, delta: 1 | -1): void {
    const key = id(settings.channel, settings.group);
    const current = this.local.get(key);
    const count = (current?.count ?? 0) + delta;
    if (count > 0) this.local.set(key, { count, settings: delta > 0 ? settings : current!.settings });
    else this.local.delete(key);
    if (count === 1 && delta > 0) for (const l of this.interestListeners) l(settings, true);
    if (count === 0) for (const l of this.interestListeners) l(current!.settings, false);
  }

  /** Every group, for operators and tests. */
  status(): GroupStatus[] {
    return [...this.groups.values()].map((d) => ({
      channel: d.channel,
      group: d.group,
      ackedThrough: d.ackedThrough,
      backlog: d.backlog,
      inflight: d.inflight,
      members: d.memberCount,
      expiredUnacked: d.expiredUnacked,
    }));
  }

  /** Every group in detail, relay groups included (`relayOf`), for operators. */
  describeGroups(): GroupDetail[] {
    return [...this.groups.values()].map((d) => {
      const r = d.stored;
      const kinds = d.memberKinds;
      return {
        channel: d.channel,
        group: d.group,
        relayOf: channelOfRelay(d.channel, d.group),
        ackedThrough: d.ackedThrough,
        backlog: d.backlog,
        inflight: d.inflight,
        localMembers: kinds.local,
        remoteMembers: kinds.remote,
        maxAttempts: r.maxAttempts,
        deadLetterChannel: r.deadLetterChannel,
        expiredUnacked: d.expiredUnacked,
        createdAt: r.createdAt ?? 0,
      };
    });
  }

  /**
   * Appends events to `channel` addressed to `group` only (redriven dead letters): the
   * group receives them like any event of the channel, here or forwarded to its members
   * behind peers; every other group of the channel skips them, now or when it reads them
   * (a group created later too). Deduplicated like any append; resolves once stored.
   */
  async appendForGroup(channel: string, group: string, entries: Omit<AppendEntry, "channel" | "origin" | "onlyGroup">[]): Promise<AppendResult[]> {
    const results = await this.log.append(entries.map((e) => ({ ...e, channel, onlyGroup: group })));
    for (const d of this.groups.values()) {
      if (d.channel !== channel || d.group === group) continue;
      for (const r of results) if (!r.duplicate) d.skip(r.sequence);
    }
    return results;
  }

  /** The stored settings of a group this sidecar has; undefined for a group it does not. */
  groupSettings(channel: string, group: string): { maxAttempts: number; deadLetterChannel: string } | undefined {
    return this.groups.get(id(channel, group))?.settings;
  }

  /** Stops timers and dispatching; in-flight state stays in the log for the next start. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    for (const u of this.unsubscribe) u();
    for (const d of this.groups.values()) d.close();
  }

  private async groupFor(settings: JoinSettings): Promise<{ group: GroupDispatcher; created: boolean }> {
    const key = id(settings.channel, settings.group);
    const existing = this.groups.get(key);
    if (existing) return { group: existing, created: false };
    const pending = this.creating.get(key);
    if (pending) return { group: await pending, created: false };
    const creation = this.create(settings);
    this.creating.set(key, creation);
    this.countGroup(settings.channel, 1);
    try {
      let group: GroupDispatcher;
      try {
        group = await creation;
      } catch (e) {
        this.countGroup(settings.channel, -1);
        throw e;
      }
      this.groups.set(key, group);
      if (channelOfRelay(group.channel, group.group) === undefined) for (const l of this.createdListeners) l(this.known(group));
      return { group, created: true };
    } finally {
      this.creating.delete(key);
    }
  }

  private async create(settings: JoinSettings): Promise<GroupDispatcher> {
    const head = this.log.head(settings.channel);
    let ackedThrough: number;
    const start = settings.start;
    switch (start.kind) {
      case "latest":
        ackedThrough = head.last;
        break;
      case "earliest":
        ackedThrough = head.first - 1;
        break;
      case "sequence":
        ackedThrough = Math.min(Math.max(start.sequence, head.first) - 1, head.last);
        break;
      case "time":
        ackedThrough = this.log.sequenceAtTime(settings.channel, start.time) - 1;
        break;
    }
    const record: GroupRecord = {
      channel: settings.channel,
      group: settings.group,
      ackedThrough,
      maxAttempts: settings.maxAttempts,
      deadLetterChannel: settings.deadLetterChannel,
      expiredUnacked: 0,
      createdAt: settings.createdAt ?? this.now(),
      start: settings.start,
    };
    await this.log.groupBatch().putGroup(record).write();
    return this.dispatcher(record, [], []);
  }

  private dispatcher(record: GroupRecord, acked: number[], inflight: { sequence: number; attempt: number }[]): GroupDispatcher {
    const eventChannel = channelOfRelay(record.channel, record.group);
    const onDone =
      eventChannel === undefined
        ? undefined
        : (event: StoredEvent) => {
            if (event.origin) for (const l of this.relayListeners) l(eventChannel, record.group, event.origin);
          };
    return new GroupDispatcher(this.log, record, acked, inflight, {
      onDone,
      observer: this.options.observer ?? NO_OBSERVER,
      maxPending: this.options.maxPendingPerGroup ?? 10_000,
      maxPendingBytes: this.options.maxPendingBytesPerGroup ?? 64 * 1024 * 1024,
      budget: this.budget,
      now: this.now,
      onError: (e) => {
        if (this.options.onError) this.options.onError(e, record.channel, record.group);
        else console.error(`weft: group ${record.channel}/${record.group}: ${(e as Error).message}`);
      },
    });
  }
}

const id = (channel: string, group: string): string => `${channel}!${group}`;

/**
 * The log channel where a sidecar keeps the relay copies of `channel`'s events that peers
 * forwarded to its members of `group`. '~' is outside the name grammar, so no published
 * channel can be one.
 */
export const relayChannel = (channel: string, group: string): string => `${channel}~${group}`;

/** The event channel of a relay channel of `group`; undefined for any other channel. */
function channelOfRelay(channel: string, group: string): string | undefined {
  const suffix = `~${group}`;
  return channel.endsWith(suffix) ? channel.slice(0, -suffix.length) : undefined;
}
