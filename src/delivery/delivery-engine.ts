import { Reason, exhausted } from "../contract/errors.js";
import type { GroupRecord, OriginLog } from "../log/origin-log.js";
import { GroupDispatcher, type MemberState } from "./group-dispatcher.js";
import { DEFAULTS, type JoinSettings, type Joined, type MemberSink, type Membership } from "./types.js";

export interface DeliveryEngineOptions {
  /** How often deadlines and delayed retries are checked, in ms. Default 50. */
  tickMs?: number;
  /** Most events each group reads ahead into memory. Default 10000. */
  maxPendingPerGroup?: number;
  /** Most event bytes each group reads ahead into memory. Default 64 MiB. */
  maxPendingBytesPerGroup?: number;
  /** Told about storage failures the engine survives. Default: printed to stderr. */
  onError?: (error: unknown) => void;
  now?: () => number;
}

/** What a group looks like from outside. */
export interface GroupStatus {
  channel: string;
  group: string;
  ackedThrough: number;
  backlog: number;
  members: number;
  /** Events retention removed before the group finished them. */
  expiredUnacked: number;
}

/**
 * Routes the events of the origin log to groups. One GroupDispatcher per (channel, group);
 * groups are durable: once created they receive every later event of their channel, with or
 * without members, until retention removes it.
 */
export class DeliveryEngine {
  private readonly groups = new Map<string, GroupDispatcher>();
  private readonly creating = new Map<string, Promise<GroupDispatcher>>();
  private readonly unsubscribe: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private nextMemberId = 1;
  private readonly now: () => number;

  constructor(
    private readonly log: OriginLog,
    private readonly options: DeliveryEngineOptions = {},
  ) {
    this.now = options.now ?? Date.now;
  }

  /** Loads every stored group and starts watching the log. */
  async start(): Promise<void> {
    for (const loaded of await this.log.loadGroups()) {
      const d = this.dispatcher(loaded.record, loaded.acked, loaded.inflight);
      this.groups.set(id(loaded.record.channel, loaded.record.group), d);
      // Retention may have moved past the cursor while the group was not listening.
      d.trimmed(this.log.head(d.channel).first);
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
   * The member receives deliveries through `sink` until it calls `leave()`.
   */
  async join(settings: JoinSettings, sink: MemberSink): Promise<Membership> {
    const { group: dispatcher, created } = await this.groupFor(settings);
    await dispatcher.configure(settings.maxAttempts, settings.deadLetterChannel);
    const member: MemberState = {
      id: this.nextMemberId++,
      sink,
      window: settings.maxInFlight,
      ackDeadlineMs: settings.ackDeadlineMs,
      inflight: 0,
      lastDeliveryId: 0,
      deliveries: new Map(),
      queue: [],
      gone: false,
    };
    const joined: Joined = {
      created,
      ackedThrough: dispatcher.ackedThrough,
      maxInFlight: settings.maxInFlight,
      ackDeadlineMs: settings.ackDeadlineMs,
      ...dispatcher.settings,
    };
    dispatcher.addMember(member);
    return {
      joined,
      ack: (ids) => {
        if (!member.gone) dispatcher.ack(member, ids);
      },
      nack: (ids, delayMs) => {
        if (!member.gone) dispatcher.nack(member, ids, delayMs);
      },
      extend: (ids, ms) => {
        if (!member.gone) dispatcher.extend(member, ids, ms);
      },
      credit: (credits) => {
        if (member.gone) return;
        if (member.window + credits > DEFAULTS.maxCredits) {
          throw exhausted(
            Reason.TOO_MANY_CREDITS,
            "credit.credits",
            `granting ${credits} more would make ${member.window + credits} in flight; at most ${DEFAULTS.maxCredits} are allowed`,
          );
        }
        dispatcher.grant(member, credits);
      },
      leave: (returned) => dispatcher.removeMember(member, returned),
    };
  }

  /** Every group, for operators and tests. */
  status(): GroupStatus[] {
    return [...this.groups.values()].map((d) => ({
      channel: d.channel,
      group: d.group,
      ackedThrough: d.ackedThrough,
      backlog: d.backlog,
      members: d.memberCount,
      expiredUnacked: d.expiredUnacked,
    }));
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
    try {
      const group = await creation;
      this.groups.set(key, group);
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
    };
    await this.log.groupBatch().putGroup(record).write();
    return this.dispatcher(record, [], []);
  }

  private dispatcher(record: GroupRecord, acked: number[], inflight: { sequence: number; attempt: number }[]): GroupDispatcher {
    return new GroupDispatcher(this.log, record, acked, inflight, {
      maxPending: this.options.maxPendingPerGroup ?? 10_000,
      maxPendingBytes: this.options.maxPendingBytesPerGroup ?? 64 * 1024 * 1024,
      now: this.now,
      onError: this.options.onError ?? ((e) => console.error(`weft: group ${record.channel}/${record.group}: ${(e as Error).message}`)),
    });
  }
}

const id = (channel: string, group: string): string => `${channel}!${group}`;
