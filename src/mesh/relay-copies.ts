// The receiver's side of the mesh: forwards in, stored as relay copies; their outcomes out
// to the origin.
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { Reason, WeftError, invalid } from "../contract/errors.js";
import { SEQUENCE_RULE } from "../contract/ranges.js";
import { type Limits, checkEvent, isName } from "../contract/validate.js";
import type { DeliveryEngine } from "../delivery/delivery-engine.js";
import { OutcomesSchema } from "../gen/weft/v1/peer_pb.js";
import type { HeldCopy } from "../delivery/types.js";
import type { Logger } from "../ops/logger.js";
import { readEvent } from "../wire/messages.js";
import { type ForwardedEvent, type GroupOutcomes, writeFrame, writeOutcomes, writeStored } from "../wire/peer-frames.js";
import { groupKey } from "./interest.js";
import type { PeerLink } from "./peer-link.js";

/** Most sequences in one outcomes frame. */
const MAX_OUTCOMES = 10_000;

/** What the receiving side asks of this sidecar's interest (groups by groupKey). */
export interface AdvertisedGroups {
  /** True while the group is advertised here with members. */
  has(key: string): boolean;
  /** True when `link` was told the group has members here. */
  advertisedOn(link: PeerLink, key: string): boolean;
}

export interface RelayCopiesOptions {
  engine: DeliveryEngine;
  limits: Limits;
  /** The largest frame this sidecar accepts from a peer, bytes: the most a forwarded event may be. */
  maxMessageBytes: number;
  interest: AdvertisedGroups;
  /** The link up now with the node, if any. */
  linkTo: (nodeId: string) => PeerLink | undefined;
  log: Logger;
}

type Outcome = "done" | "returned";
/** One group's outcomes waiting to go to one origin log. */
interface QueuedOutcomes {
  channel: string;
  group: string;
  done: number[];
  returned: number[];
  /** Given back after attempts here: sequences and attempts. */
  attempted: { sequence: number; attempts: number }[];
}

/**
 * The receiver's side of the mesh. Forwarded events are stored as relay copies: events of
 * their channel held for the group they were forwarded for (one per origin log, group and
 * sequence, however often a forward is retried), which that group's dispatcher delivers to
 * its local members like this sidecar's own events. Their outcomes are queued here and go
 * to the origin in outcome frames.
 */
export class RelayCopies {
  /** Queued outcomes, by origin node and log ("node/log"), then by groupKey. */
  private readonly outcomes = new Map<string, Map<string, QueuedOutcomes>>();
  private outcomesScheduled = false;

  constructor(private readonly options: RelayCopiesOptions) {}

  /**
   * A forward from the peer on `link`: its events are stored as relay copies, then the
   * peer is told the forward is stored. Every event is checked before any is stored: a bad
   * forward changes nothing. An event for a group withdrawn since it was advertised on the
   * link is given back, not stored.
   * @throws WeftError for an event that is not valid, or for a group never advertised on the link.
   */
  receive(link: PeerLink, forwardId: bigint, events: ForwardedEvent[]): void {
    const origin = link.nodeId;
    const originLog = link.peer!.logId.toString(16);
    const { interest, limits, maxMessageBytes } = this.options;
    const copies: HeldCopy[] = [];
    events.forEach((f, i) => {
      const field = `forward.events[${i}]`;
      if (!isName(f.channel) || !isName(f.group)) {
        throw invalid(Reason.INVALID_CHANNEL, `${field}.channel`, `${field} names channel ${JSON.stringify(f.channel.slice(0, 80))} and group ${JSON.stringify(f.group.slice(0, 80))}; both must follow the name grammar`);
      }
      if (f.sequence < 1) throw invalid(Reason.PROTOCOL_VIOLATION, `${field}.sequence`, `${field}.sequence must be ${SEQUENCE_RULE}`);
      if (f.attempt < 1) throw invalid(Reason.PROTOCOL_VIOLATION, `${field}.attempt`, `${field}.attempt is 0; use 1 to 4294967295`);
      let key: string;
      try {
        const event = readEvent(f.bytes);
        // The origin applied its publish limits; here an event need only fit in a frame
        // (sidecars with different max event sizes must not refuse each other's events).
        // "weft." attributes are allowed: the origin sidecar sets them (dead letters, redrives).
        checkEvent(event, f.bytes.length, { ...limits, maxEventBytes: maxMessageBytes }, { allowReserved: true });
        if (event.channel !== f.channel) throw new Error(`the event's channel ${JSON.stringify(event.channel)} is not ${JSON.stringify(f.channel)}`);
        key = event.key;
      } catch (e) {
        if (e instanceof WeftError) throw new WeftError(e.code, e.reason, `${field}: ${e.message}`, `${field}.event`);
        throw invalid(Reason.INVALID_EVENT, `${field}.event`, `${field}.event is not a valid weft.v1.Event: ${(e as Error).message}`);
      }
      const gk = groupKey(f.channel, f.group);
      if (!interest.has(gk)) {
        if (interest.advertisedOn(link, gk)) {
          // Withdrawn while the forward was on its way: given back, not stored.
          this.queueOutcome(origin, originLog, f.channel, f.group, "returned", f.sequence);
          return;
        }
        throw new WeftError(
          status.FAILED_PRECONDITION,
          Reason.NOT_ADVERTISED,
          `${field} is for ${f.channel}/${f.group}, which this sidecar never advertised on this link: forward only to groups in the receiver's interest`,
          `${field}.group`,
        );
      }
      // One relay copy per origin log, group and origin sequence, however often it is forwarded.
      copies.push({ channel: f.channel, group: f.group, origin: { node: origin, log: originLog, sequence: f.sequence }, key, bytes: f.bytes, attempt: f.attempt });
    });
    const answer = (): void => link.send(writeStored(forwardId));
    if (copies.length === 0) {
      answer();
      return;
    }
    this.options.engine.appendCopies(copies).then(
      (results) => {
        results.forEach((r, i) => {
          const c = copies[i]!;
          // A retried forward of an event already finished here: report it again.
          if (r.done) this.queueOutcome(origin, originLog, c.channel, c.group, "done", c.origin.sequence);
        });
        answer();
      },
      (e: unknown) => {
        if (e instanceof WeftError && e.reason === Reason.TOO_MANY_CHANNELS) {
          // The origin keeps what it forwarded, and forwards it again on the next link.
          this.options.log.warn({ peer: origin, reason: e.reason }, `refused a forward from ${origin}: ${e.message}`);
          link.fail(e);
          return;
        }
        link.fail(new WeftError(status.UNAVAILABLE, Reason.LOG_CLOSED, `relay copies could not be stored: ${(e as Error).message}`));
      },
    );
  }

  /**
   * Queues an outcome for the origin log that forwarded the event; queued outcomes go out
   * together on the next turn of the event loop. Outcomes name sequences, which a wiped
   * origin reuses: a report for another log than the one now behind the node is dropped,
   * never applied to the new log's events.
   */
  queueOutcome(origin: string, log: string, channel: string, group: string, kind: Outcome, sequence: number): void {
    this.queued(origin, log, channel, group)[kind].push(sequence);
  }

  /**
   * Queues, for the origin log that forwarded it, a copy given up after `attempts` (those
   * it was forwarded after, and those made here), which the origin counts. Sent with the
   * other outcomes, or at once by `flush()`.
   */
  queueAttempted(origin: string, log: string, channel: string, group: string, sequence: number, attempts: number): void {
    this.queued(origin, log, channel, group).attempted.push({ sequence, attempts });
  }

  private queued(origin: string, log: string, channel: string, group: string): QueuedOutcomes {
    const to = `${origin}/${log}`;
    let byGroup = this.outcomes.get(to);
    if (!byGroup) this.outcomes.set(to, (byGroup = new Map()));
    const key = groupKey(channel, group);
    let g = byGroup.get(key);
    if (!g) byGroup.set(key, (g = { channel, group, done: [], returned: [], attempted: [] }));
    if (!this.outcomesScheduled) {
      this.outcomesScheduled = true;
      setImmediate(() => this.flush());
    }
    return g;
  }

  /**
   * Sends queued outcomes to their origins now; an origin not linked now will forward again,
   * and hear again (or, for a copy given up, count the attempt when its peer timeout passes).
   */
  flush(): void {
    this.outcomesScheduled = false;
    for (const [to, byGroup] of this.outcomes) {
      const [origin = "", log = ""] = to.split("/");
      const link = this.options.linkTo(origin);
      if (!link?.open || link.peer!.logId.toString(16) !== log) continue;
      // Rare (a group withdrawn after deliveries here): written by protobuf-es.
      for (const g of byGroup.values()) {
        for (let i = 0; i < g.attempted.length; i += MAX_OUTCOMES) {
          const returnedAfterAttempts = g.attempted.slice(i, i + MAX_OUTCOMES).map((a) => ({ sequence: BigInt(a.sequence), attempts: a.attempts }));
          link.send(writeFrame({ case: "outcomes", value: create(OutcomesSchema, { groups: [{ channel: g.channel, group: g.group, returnedAfterAttempts }] }) }));
        }
      }
      let groups: GroupOutcomes[] = [];
      let count = 0;
      const send = (): void => {
        if (groups.length > 0) link.send(writeOutcomes(groups));
        groups = [];
        count = 0;
      };
      for (const g of byGroup.values()) {
        for (let i = 0; i < Math.max(g.done.length, g.returned.length); i += MAX_OUTCOMES) {
          const done = g.done.slice(i, i + MAX_OUTCOMES);
          const returned = g.returned.slice(i, i + MAX_OUTCOMES);
          groups.push({ channel: g.channel, group: g.group, done, returned });
          count += done.length + returned.length;
          if (count >= MAX_OUTCOMES) send();
        }
      }
      send();
    }
    this.outcomes.clear();
  }
}
