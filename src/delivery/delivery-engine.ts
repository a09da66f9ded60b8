import { EventEmitter } from "node:events";
import { Reason, exhausted } from "../contract/errors.js";
import type { AppendEntry, AppendResult, EventLog } from "../log/event-log.js";
import { type GroupRecord, GroupState, type LoadedGroup } from "./group-state.js";
import { relayIdentity } from "../log/record.js";
import { NO_OBSERVER, type Observer } from "../ops/observer.js";
import { attemptedCopies } from "./attempt-records.js";
import { GroupDispatcher, type MemberState } from "./group-dispatcher.js";
import { migrateRelayChannels } from "./migrate-relay-channels.js";
import { ReadAheadBudget } from "./read-ahead-budget.js";
import {
  DEFAULTS,
  type GroupDetail,
  type GroupStatus,
  type HeldCopy,
  type HeldCopyResult,
  type JoinSettings,
  type Joined,
  type KnownGroup,
  type MemberKind,
  type MemberSink,
  type Membership,
  type OriginRoute,
} from "./types.js";

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

/** What the engine tells the mesh, in the order it happens. */
interface EngineEvents {
  /** A group gained its first member on this sidecar (`present`), or lost its last. */
  interest: [settings: JoinSettings, present: boolean];
  /** A group was created here (by a join, or learnt from a peer). */
  groupCreated: [group: KnownGroup];
}

/**
 * Routes the events of the log to groups. One GroupDispatcher per (channel, group), for the
 * channel's events whatever their origin: this sidecar's own, and the relay copies held here
 * for the group (appendCopies). Groups are durable: once created they receive every later
 * event of their channel, with or without members, until retention removes it.
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
  private route: OriginRoute | undefined;
  /** Tells the mesh what it advertises to peers (see EngineEvents). */
  private readonly emitter = new EventEmitter<EngineEvents>();
  private readonly now: () => number;
  private readonly budget: ReadAheadBudget;
  /** The groups' cursors, acks and attempts, in the log's main database. */
  readonly state: GroupState;

  constructor(
    private readonly log: EventLog,
    private readonly options: DeliveryEngineOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.budget = new ReadAheadBudget(options.maxReadAheadBytes ?? Infinity);
    this.state = new GroupState(log.state);
  }

  /** Bytes of events every group holds in memory now (read ahead, waiting or in flight). */
  get readAheadBytes(): number {
    return this.budget.bytes;
  }

  /** Loads every stored group and starts watching the log. */
  async start(): Promise<void> {
    let groups = await this.state.loadGroups();
    await this.state.clampMarks(groups, (channel) => this.log.head(channel).last);
    if (await migrateRelayChannels(this.log, this.state, groups)) groups = await this.state.loadGroups();
    this.log.keepChannels(groups.map((g) => g.record.channel));
    for (const loaded of groups) {
      const d = this.dispatcher(loaded);
      this.groups.set(id(loaded.record.channel, loaded.record.group), d);
      this.countGroup(loaded.record.channel, 1);
      // Retention may have moved past the cursor while the group was not listening.
      d.trimmed(this.log.head(d.channel).first);
      // The relay copies in flight at the stop (see interrupted).
      d.interruptedCopies = await attemptedCopies(this.log, loaded, (s) => d.isDone(s));
    }
    this.unsubscribe.push(
      this.log.onAppend((channel) => {
        for (const d of this.groups.values()) if (d.channel === channel) d.wake();
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
   * The member receives deliveries through `sink` until it calls `leave()`, within its own
   * credits (`settings.maxInFlight`, raised by `credit`).
   *
   * A local member (a Subscribe stream) receives the group's events: this sidecar's own and
   * the relay copies held here for the group. A peer member (`peer`: the link to the peer
   * sidecar of that node id, standing for the group's members behind it) receives this
   * sidecar's own events only, never relay copies (forwarded events are not forwarded
   * again), and its deliveries have no deadline: they end when the peer reports them
   * handled or gives them back.
   *
   * The member's max attempts and dead-letter channel become the group's (the latest join
   * wins), unless `configure` is false and the group existed before this join.
   */
  async join(settings: JoinSettings, sink: MemberSink, options: { peer?: string; configure?: boolean } = {}): Promise<Membership> {
    this.makeRoom([settings]);
    const own = await this.groupFor(settings);
    const d = own.group;
    // A member that may not change the group's settings keeps those of a group it did not create.
    if (own.created || (options.configure ?? true)) await d.configure(settings.maxAttempts, settings.deadLetterChannel);
    const kind: MemberKind = options.peer === undefined ? { kind: "local", ackDeadlineMs: settings.ackDeadlineMs } : { kind: "peer", node: options.peer };
    const m: MemberState = { id: this.nextMemberId++, sink, kind, window: settings.maxInFlight, lastDeliveryId: 0, deliveries: new Map(), queue: [], gone: false };
    const joined: Joined = {
      created: own.created,
      ackedThrough: d.ackedThrough,
      maxInFlight: settings.maxInFlight,
      ackDeadlineMs: settings.ackDeadlineMs,
      ...d.settings,
    };
    d.addMember(m);
    if (kind.kind === "local") this.countLocal(settings, 1);
    return {
      joined,
      ack: (ids) => {
        if (!m.gone) d.ack(m, ids);
      },
      nack: (ids, delayMs) => {
        if (!m.gone) d.nack(m, ids, delayMs);
      },
      giveBack: (ids, attempts) => {
        if (!m.gone) d.giveBack(m, ids, attempts);
      },
      extend: (ids, ms) => {
        if (!m.gone) d.extend(m, ids, ms);
      },
      credit: (more) => {
        if (m.gone) return;
        if (m.window + more > DEFAULTS.maxCredits) {
          throw exhausted(
            Reason.TOO_MANY_CREDITS,
            "credit.credits",
            `granting ${more} more would make ${m.window + more} in flight; at most ${DEFAULTS.maxCredits} are allowed`,
          );
        }
        m.window += more;
        d.kick();
      },
      leave: (returned) => {
        if (m.gone) return;
        d.removeMember(m, returned);
        if (kind.kind === "local") this.countLocal(settings, -1);
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

  /** Every group of this sidecar, as peers learn of them. */
  knownGroups(): KnownGroup[] {
    return [...this.groups.values()].map((d) => this.known(d));
  }

  /** Told when a group is created. */
  onGroupCreated(listener: (group: KnownGroup) => void): () => void {
    this.emitter.on("groupCreated", listener);
    return () => this.emitter.off("groupCreated", listener);
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
    this.emitter.on("interest", listener);
    return () => this.emitter.off("interest", listener);
  }

  /**
   * Sets where what concerns the origins of relay copies goes (the mesh): the outcome of
   * each copy done here, and whether the copies held for a group are still kept. One route;
   * a later call replaces it.
   */
  routeOrigins(route: OriginRoute): void {
    this.route = route;
  }

  /**
   * Stores copies of events other sidecars published, each held here for one group of its
   * channel (the mesh forwarded it for that group's members here), in one append. The group
   * receives them like its own events, through its local members only; every other group of
   * the channel skips them, now or when it reads them (a group created later too). A copy is
   * stored once however often it is forwarded (see relayIdentity); resolves once stored.
   * Stored past the storage quota: the mesh had accepted the event.
   */
  async appendCopies(copies: readonly HeldCopy[]): Promise<HeldCopyResult[]> {
    const entries = copies.map((c): AppendEntry => {
      const copyEpoch = this.groups.get(id(c.channel, c.group))?.copyEpoch ?? 0;
      const copy = { origin: c.origin, onlyGroup: c.group, copyEpoch, priorAttempts: c.attempt - 1 };
      return { channel: c.channel, ...relayIdentity(c.origin, c.group, copyEpoch), key: c.key, bytes: c.bytes, ...copy };
    });
    const results = await this.log.append(entries);
    this.skipForOthers(entries, results);
    return results.map((r, i) => {
      const c = copies[i]!;
      const done = r.duplicate && (this.groups.get(id(c.channel, c.group))?.isDone(r.sequence) ?? false);
      return { sequence: r.sequence, duplicate: r.duplicate, done };
    });
  }

  /**
   * The groups that had relay copies in flight to members here when the sidecar stopped:
   * their members were here then, and will likely come back (see LocalInterest.start). Those
   * copies are not done yet.
   */
  interrupted(): { channel: string; group: string; maxAttempts: number; deadLetterChannel: string }[] {
    const out: { channel: string; group: string; maxAttempts: number; deadLetterChannel: string }[] = [];
    for (const d of this.groups.values()) if (d.interruptedCopies.length > 0) out.push({ channel: d.channel, group: d.group, ...d.settings });
    return out;
  }

  /**
   * This sidecar stopped keeping the relay copies it holds for the group (the mesh withdrew
   * the group, and its origins took back what they had forwarded): they are given up.
   */
  release(channel: string, group: string): void {
    this.groups.get(id(channel, group))?.release();
  }

  /** The relay copies held for a group and not done here (counted by reading the log past what the group read). */
  async copiesPending(channel: string, group: string): Promise<number> {
    return (await this.groups.get(id(channel, group))?.copiesPending()) ?? 0;
  }

  private countLocal(settings: JoinSettings, delta: 1 | -1): void {
    const key = id(settings.channel, settings.group);
    const current = this.local.get(key);
    const count = (current?.count ?? 0) + delta;
    if (count > 0) this.local.set(key, { count, settings: delta > 0 ? settings : current!.settings });
    else this.local.delete(key);
    if (count === 1 && delta > 0) this.emitter.emit("interest", settings, true);
    if (count === 0) this.emitter.emit("interest", current!.settings, false);
  }

  /** Every group, for operators and tests. */
  status(): GroupStatus[] {
    return [...this.groups.values()].map((d) => {
      const { channel, group, ackedThrough, backlog, inflight, inflightCopies, localMembers, remoteMembers, expiredUnacked } = d.detail();
      return { channel, group, ackedThrough, backlog, inflight, inflightCopies, members: localMembers + remoteMembers, expiredUnacked };
    });
  }

  /** Every group in detail, for operators. */
  describeGroups(): GroupDetail[] {
    return [...this.groups.values()].map((d) => d.detail());
  }

  /**
   * Appends events to `channel` addressed to `group` only (redriven dead letters): the
   * group receives them like any event of the channel, here or forwarded to its members
   * behind peers; every other group of the channel skips them, now or when it reads them
   * (a group created later too). Deduplicated like any append; resolves once stored.
   */
  async appendForGroup(channel: string, group: string, entries: Omit<AppendEntry, "channel" | "origin" | "onlyGroup" | "copyEpoch">[]): Promise<AppendResult[]> {
    const addressed = entries.map((e) => ({ ...e, channel, onlyGroup: group }));
    const results = await this.log.append(addressed);
    this.skipForOthers(addressed, results);
    return results;
  }

  /** Every group of an appended event's channel but the one it is addressed to skips it at once (see GroupDispatcher.skip). */
  private skipForOthers(entries: readonly AppendEntry[], results: readonly AppendResult[]): void {
    const channels = new Set(entries.map((e) => e.channel));
    const groups = [...this.groups.values()].filter((d) => channels.has(d.channel));
    if (groups.length === 0) return;
    results.forEach((r, i) => {
      const e = entries[i]!;
      if (r.duplicate) return;
      for (const d of groups) if (d.channel === e.channel && d.group !== e.onlyGroup) d.skip(r.sequence);
    });
  }

  /** The stored settings of a group this sidecar has; undefined for a group it does not. */
  groupSettings(channel: string, group: string): { maxAttempts: number; deadLetterChannel: string } | undefined {
    return this.groups.get(id(channel, group))?.settings;
  }

  /**
   * Stops timers and dispatching; in-flight state stays in the log for the next start, which
   * may count one attempt too many for events that had not gone (as after a crash).
   */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    for (const u of this.unsubscribe) u();
    for (const d of this.groups.values()) d.close();
  }

  /** Stops as `stop` does, then writes each group's exact attempts: the next start counts none too many. */
  async close(): Promise<void> {
    this.stop();
    await Promise.all([...this.groups.values()].map((d) => d.settle()));
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
      this.emitter.emit("groupCreated", this.known(group));
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
    await this.state.batch().putGroup(record).write();
    return this.dispatcher({ record, acked: [], inflight: [], mark: ackedThrough });
  }

  private dispatcher(loaded: LoadedGroup): GroupDispatcher {
    const { record } = loaded;
    return new GroupDispatcher(this.log, loaded, {
      copyDone: (event) => {
        if (event.origin) this.route?.done(record.channel, record.group, event.origin);
      },
      copyReturned: (event, attempts) => {
        if (event.origin) this.route?.returned(record.channel, record.group, event.origin, attempts);
      },
      keepsCopies: () => this.route?.keeps(record.channel, record.group) ?? true,
      observer: this.options.observer ?? NO_OBSERVER,
      state: this.state,
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
