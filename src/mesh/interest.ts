// This sidecar's interest as its peers learn it (advertise, linger, withdraw; a snapshot per
// link, then deltas), and weft.v1.GroupInterest both ways.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Reason, WeftError, invalid } from "../contract/errors.js";
import { MAX_ATTEMPTS, MAX_SEQUENCE, MAX_TIME_MS, SEQUENCE_RULE, TIME_MS_RULE, clamp } from "../contract/ranges.js";
import { isName } from "../contract/validate.js";
import type { DeliveryEngine } from "../delivery/delivery-engine.js";
import { joinSettings } from "../delivery/join-settings.js";
import type { JoinSettings, KnownGroup, StartAt } from "../delivery/types.js";
import { StartPosition_Kind, StartPositionSchema, SubscribeOpenSchema, type StartPosition } from "../gen/weft/v1/mesh_pb.js";
import type { GroupInterest } from "../gen/weft/v1/peer_pb.js";
import type { Logger } from "../ops/logger.js";
import { writeFrame } from "../wire/peer-frames.js";
import type { PeerLink } from "./peer-link.js";

/** The key of a group in the mesh's maps: channel and group, which names cannot confuse. */
export const groupKey = (channel: string, group: string): string => `${channel}!${group}`;

export interface LocalInterestOptions {
  engine: DeliveryEngine;
  /** How long a group stays advertised after its last member here left, ms. */
  lingerMs: number;
  /** How long a group whose relay copies were in flight at the last stop stays advertised, ms. */
  peerTimeoutMs: number;
  log: Logger;
  /** The links up now, each to be told of changes in this sidecar's interest. */
  links: () => Iterable<PeerLink>;
  /** Sends the queued outcomes of relay copies now (RelayCopies.flush). */
  flushOutcomes: () => void;
}

/**
 * This sidecar's own interest: the groups it advertises to its peers as having members
 * here (members now, or lingering after the last one left), and which of them each link
 * was told of. A link is told every group in one snapshot when it comes up, then deltas.
 * A group advertised on a link is one the peer may forward to on it.
 */
export class LocalInterest {
  /** The groups advertised with members (members here, or lingering). */
  private readonly advertised = new Map<string, JoinSettings>();
  private readonly lingering = new Map<string, NodeJS.Timeout>();
  /** Per link: the groups it was told have members here, ever (a forward for one withdrawn since is given back, not refused). */
  private readonly told = new WeakMap<PeerLink, Set<string>>();
  private readonly unsubscribe: (() => void)[] = [];

  constructor(private readonly options: LocalInterestOptions) {}

  /** Advertises the groups with members here and follows the engine's changes to them. */
  start(): void {
    const { engine } = this.options;
    for (const s of engine.interest()) this.advertised.set(groupKey(s.channel, s.group), s);
    // A group whose relay copies were in flight to members when the sidecar stopped stays
    // advertised with members for a peer timeout, so that its members can come back before
    // the origins give the copies to others. (Copies of a group withdrawn earlier had no
    // members, so nothing in flight: that group is not advertised again.)
    for (const r of engine.interrupted()) {
      const key = groupKey(r.channel, r.group);
      if (this.advertised.has(key)) continue;
      this.advertised.set(key, {
        channel: r.channel,
        group: r.group,
        start: { kind: "latest" },
        maxInFlight: 0,
        ackDeadlineMs: 0,
        maxAttempts: r.maxAttempts,
        deadLetterChannel: r.deadLetterChannel,
      });
      this.linger(key, this.options.peerTimeoutMs);
    }
    this.unsubscribe.push(
      engine.onInterest((settings, present) => {
        const key = groupKey(settings.channel, settings.group);
        if (present) this.advertise(key, settings);
        else this.linger(key, this.options.lingerMs);
      }),
      engine.onGroupCreated((g) => this.broadcast(this.interestOf([g], () => this.advertised.has(groupKey(g.channel, g.group))))),
    );
  }

  /** Stops following the engine and ends the lingering timers: nothing is withdrawn. */
  stop(): void {
    for (const u of this.unsubscribe) u();
    for (const t of this.lingering.values()) clearTimeout(t);
  }

  /** True while the group (by groupKey) is advertised with members. */
  has(key: string): boolean {
    return this.advertised.has(key);
  }

  /** True when `link` was ever told the group (by groupKey) has members here. */
  advertisedOn(link: PeerLink, key: string): boolean {
    return this.told.get(link)?.has(key) ?? false;
  }

  /** The snapshot for a link that just came up: every group known here, each with whether it has members. */
  snapshot(link: PeerLink): GroupInterest[] {
    const told = new Set<string>();
    this.told.set(link, told);
    const groups = this.interestOf(this.options.engine.knownGroups(), (g) => this.advertised.has(groupKey(g.channel, g.group)));
    for (const g of groups) if (g.members) told.add(groupKey(g.channel, g.group));
    return groups;
  }

  private advertise(key: string, settings: JoinSettings): void {
    const timer = this.lingering.get(key);
    if (timer) clearTimeout(timer);
    this.lingering.delete(key);
    const known = this.advertised.has(key);
    this.advertised.set(key, settings);
    if (!known) this.broadcast(this.interestOf([this.known(settings)], () => true));
  }

  /** The group as peers learn of it (it exists once a member joined; settings otherwise). */
  private known(settings: JoinSettings): KnownGroup {
    return (
      this.options.engine.knownGroups().find((g) => g.channel === settings.channel && g.group === settings.group) ?? {
        channel: settings.channel,
        group: settings.group,
        start: settings.start,
        maxAttempts: settings.maxAttempts,
        deadLetterChannel: settings.deadLetterChannel,
        createdAt: 0,
      }
    );
  }

  /**
   * The group lost its last member here: it stays advertised for `ms`, then it is withdrawn
   * and its origins give what they forwarded here to the group's members elsewhere. The
   * relay copies held for it are given up (GroupDispatcher.release): done for the group here;
   * an origin that forwards one again later has it stored as a new copy. The origins are
   * told the attempts of copies that members here had, before the withdrawal, so that they
   * count them while the copies are still theirs in flight here.
   */
  private linger(key: string, ms: number): void {
    const previous = this.lingering.get(key);
    if (previous) clearTimeout(previous);
    const timer = setTimeout(() => {
      this.lingering.delete(key);
      const settings = this.advertised.get(key);
      if (!settings || this.options.engine.interest().some((s) => groupKey(s.channel, s.group) === key)) return;
      this.advertised.delete(key);
      this.options.engine.release(settings.channel, settings.group);
      this.options.flushOutcomes();
      this.broadcast(this.interestOf([this.known(settings)], () => false));
    }, ms);
    timer.unref();
    this.lingering.set(key, timer);
  }

  /**
   * The groups as interest entries, each with whether it has members behind this sidecar.
   * A group stored out of range (by an older release, or a hand-edited data directory) is
   * clamped or left out with an error logged (see `sendable`): encoding interest never
   * throws, and peers never refuse a link over a group this sidecar stored.
   */
  private interestOf(groups: readonly KnownGroup[], members: (g: KnownGroup) => boolean): GroupInterest[] {
    const out: GroupInterest[] = [];
    for (const g of groups) {
      const { group, problems } = sendable(g);
      if (problems.length > 0) {
        this.options.log.error(
          { channel: String(g.channel), group: String(g.group), problems },
          `group ${String(g.channel)}/${String(g.group)} is stored out of range (${problems.join("; ")}): ${group ? "peers learn it clamped" : "peers do not learn of it"}`,
        );
      }
      if (group) out.push(toGroupInterest(group, members(g)));
    }
    return out;
  }

  private broadcast(groups: GroupInterest[]): void {
    if (groups.length === 0) return;
    const frame = writeFrame({ case: "interest", value: { snapshot: false, groups } as never });
    for (const link of this.options.links()) {
      const told = this.told.get(link)!;
      for (const g of groups) if (g.members) told.add(groupKey(g.channel, g.group));
      link.send(frame);
    }
  }
}

/**
 * A peer's group as the settings of its member here, checked like a Subscribe open; the
 * window is the peer window. A group that started at "latest" where it was created starts
 * here at its creation time, so that events published here after it was created (and
 * before this sidecar heard of it) reach it.
 * @throws WeftError (INVALID_ARGUMENT) naming `field` for a group a Subscribe open would refuse.
 */
export function readGroupInterest(g: GroupInterest, field: string, peerWindow: number): JoinSettings {
  if (g.createdUnixMs < 0n || g.createdUnixMs > BigInt(MAX_TIME_MS)) {
    throw invalid(Reason.INVALID_START, `${field}.created_unix_ms`, `${field}.created_unix_ms is ${g.createdUnixMs}; use ${TIME_MS_RULE} in Unix ms, or 0 for unknown`);
  }
  const createdAt = Number(g.createdUnixMs) || undefined;
  const start =
    g.start?.kind === StartPosition_Kind.LATEST && createdAt !== undefined
      ? create(StartPositionSchema, { kind: StartPosition_Kind.TIME, time: timestampFromMs(createdAt) })
      : g.start;
  try {
    const settings = joinSettings(
      create(SubscribeOpenSchema, {
        channel: g.channel,
        group: g.group,
        start,
        maxInFlight: peerWindow,
        maxAttempts: g.maxAttempts,
        deadLetterChannel: g.deadLetterChannel,
      }),
    );
    return { ...settings, createdAt };
  } catch (e) {
    if (e instanceof WeftError) throw new WeftError(e.code, e.reason, `${field}: ${e.message}`, `${field}.${e.field.replace(/^open\./, "")}`);
    throw e;
  }
}

function toGroupInterest(g: KnownGroup, members: boolean): GroupInterest {
  return {
    $typeName: "weft.v1.GroupInterest",
    channel: g.channel,
    group: g.group,
    start: toStartPosition(g.start),
    maxAttempts: g.maxAttempts,
    deadLetterChannel: g.deadLetterChannel,
    members,
    createdUnixMs: BigInt(Math.round(g.createdAt)),
  };
}

/**
 * `g` within what a peer accepts in a GroupInterest (the checks of a Subscribe open, and
 * src/contract/ranges.ts), with what was wrong: numbers out of range are clamped (a creation
 * time out of range is sent as unknown), a bad dead-letter channel is sent as empty (the
 * receiver's default), and a group with a bad name, or a start or max attempts that are not
 * numbers at all, is undefined: it cannot be sent.
 */
export function sendable(g: KnownGroup): { group: KnownGroup | undefined; problems: string[] } {
  const problems: string[] = [];
  if (typeof g.channel !== "string" || typeof g.group !== "string" || !isName(g.channel) || !isName(g.group)) {
    return { group: undefined, problems: ["its channel or group breaks the name grammar"] };
  }
  const maxAttempts = clamp(g.maxAttempts, 1, MAX_ATTEMPTS);
  if (maxAttempts === undefined) return { group: undefined, problems: [`max attempts ${String(g.maxAttempts)} is not a number`] };
  if (maxAttempts !== g.maxAttempts) problems.push(`max attempts ${g.maxAttempts} sent as ${maxAttempts} (1 to ${MAX_ATTEMPTS})`);
  let deadLetterChannel = g.deadLetterChannel;
  if (typeof deadLetterChannel !== "string" || (deadLetterChannel !== "" && (!isName(deadLetterChannel) || deadLetterChannel === g.channel))) {
    problems.push(`dead-letter channel ${JSON.stringify(deadLetterChannel)} sent as the default`);
    deadLetterChannel = "";
  }
  let createdAt = g.createdAt;
  if (clamp(createdAt, 0, MAX_TIME_MS) !== createdAt) {
    problems.push(`creation time ${String(createdAt)} ms sent as unknown (${TIME_MS_RULE})`);
    createdAt = 0;
  }
  let start: StartAt;
  const stored = g.start as Partial<Record<string, unknown>> | undefined;
  switch (stored?.kind) {
    case "latest":
    case "earliest":
      start = { kind: stored.kind };
      break;
    case "sequence": {
      const sequence = clamp(stored.sequence, 1, MAX_SEQUENCE);
      if (sequence === undefined) return { group: undefined, problems: [...problems, `start sequence ${String(stored.sequence)} is not a number`] };
      if (sequence !== stored.sequence) problems.push(`start sequence ${String(stored.sequence)} sent as ${sequence} (${SEQUENCE_RULE})`);
      start = { kind: "sequence", sequence };
      break;
    }
    case "time": {
      const time = clamp(stored.time, 0, MAX_TIME_MS);
      if (time === undefined) return { group: undefined, problems: [...problems, `start time ${String(stored.time)} ms is not a number`] };
      if (time !== stored.time) problems.push(`start time ${String(stored.time)} ms sent as ${time} (${TIME_MS_RULE})`);
      start = { kind: "time", time };
      break;
    }
    default:
      return { group: undefined, problems: [...problems, `start ${JSON.stringify(stored)} is not a start position`] };
  }
  return { group: { channel: g.channel, group: g.group, start, maxAttempts, deadLetterChannel, createdAt }, problems };
}

function toStartPosition(start: StartAt): StartPosition {
  const base = { $typeName: "weft.v1.StartPosition", sequence: 0n, time: undefined } as const;
  switch (start.kind) {
    case "latest":
      return { ...base, kind: StartPosition_Kind.LATEST };
    case "earliest":
      return { ...base, kind: StartPosition_Kind.EARLIEST };
    case "sequence":
      return { ...base, kind: StartPosition_Kind.SEQUENCE, sequence: BigInt(start.sequence) };
    case "time":
      return { ...base, kind: StartPosition_Kind.TIME, time: timestampFromMs(start.time) };
  }
}
