// The origin's side of the mesh: a group behind a peer is a member of the local group; its
// deliveries go out as forward frames, and the peer's outcomes come back to it.
import { status } from "@grpc/grpc-js";
import { Reason, WeftError, invalid } from "../contract/errors.js";
import { MAX_SEQUENCE, SEQUENCE_RULE } from "../contract/ranges.js";
import type { DeliveryEngine } from "../delivery/delivery-engine.js";
import type { JoinSettings, Membership, OutgoingDelivery } from "../delivery/types.js";
import type { Interest, Outcomes } from "../gen/weft/v1/peer_pb.js";
import type { Logger } from "../ops/logger.js";
import type { Observer } from "../ops/observer.js";
import type { EventTracing } from "../ops/tracing.js";
import { type ForwardedEvent, MAX_FORWARD_EVENTS, writeForward } from "../wire/peer-frames.js";
import { groupKey, readGroupInterest } from "./interest.js";
import type { PeerLink } from "./peer-link.js";

/** Most bytes of events in one forward frame (a single larger event still goes, alone). */
const MAX_FORWARD_BYTES = 3 * 1024 * 1024;
/** A peer that does not say its limit takes gRPC's default. */
const DEFAULT_PEER_MESSAGE_BYTES = 4 * 1024 * 1024;
/** Room for the frame's own tags and lengths, and per event for its names, numbers and tags. */
const FRAME_OVERHEAD = 64;
const EVENT_OVERHEAD = 48;

/** A group behind a peer, as a member of this sidecar's group: the origin's side of forwarding. */
export interface RemoteGroup {
  key: string;
  settings: JoinSettings;
  membership: Membership | undefined;
  removed: boolean;
  /** Forwarded and not yet reported handled, by sequence. */
  readonly inflight: Map<number, OutgoingDelivery>;
}

/** A peer as forwarding sees it: its link now, and its groups, which outlive its links until the peer timeout. */
export interface ForwardingPeer {
  readonly nodeId: string;
  readonly link: PeerLink | undefined;
  /** By groupKey. */
  readonly groups: Map<string, RemoteGroup>;
}

export interface ForwardingOptions {
  engine: DeliveryEngine;
  /** Most events forwarded to one peer for one group and not yet handled there. */
  peerWindow: number;
  log: Logger;
  observer?: Observer | undefined;
  tracing?: EventTracing | undefined;
}

/**
 * The origin's side of the mesh. Each group behind a peer is a member of the local group
 * (one remote member per peer and group, within the peer window): the dispatcher chooses it
 * like any member, by credits and key, and its deliveries become forwards on the peer's
 * link, kept until the peer reports them handled (or given back, or the peer times out).
 * Nothing is forwarded on a link before the peer's interest snapshot arrived on it; what is
 * in flight then goes again once it has.
 */
export class Forwarding {
  /** Links on which the peer's interest snapshot arrived. */
  private readonly snapshots = new WeakSet<PeerLink>();
  private nextForwardId = 1;

  constructor(private readonly options: ForwardingOptions) {}

  /**
   * The peer's interest: a group with members there becomes (or stays) a member here, one
   * without members stops being one and is created here (durable: its events are kept from
   * its creation on). Every entry is checked before any is applied.
   * @throws WeftError for a frame out of order or an entry a Subscribe open would refuse.
   */
  interest(peer: ForwardingPeer, link: PeerLink, interest: Interest): void {
    const snapshotted = this.snapshots.has(link);
    if (!interest.snapshot && !snapshotted) {
      throw new WeftError(status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION, "the first interest frame on a link must be a snapshot");
    }
    if (interest.snapshot && snapshotted) {
      throw new WeftError(status.INVALID_ARGUMENT, Reason.PROTOCOL_VIOLATION, "a link carries one interest snapshot, after hello; send deltas after it");
    }
    const entries = interest.groups.map((g, i) => ({ members: g.members, settings: readGroupInterest(g, `interest.groups[${i}]`, this.options.peerWindow) }));
    if (interest.snapshot) {
      this.snapshots.add(link);
      const keep = new Set(entries.filter((e) => e.members).map((e) => groupKey(e.settings.channel, e.settings.group)));
      for (const rg of [...peer.groups.values()]) if (!keep.has(rg.key)) this.removeRemote(peer, rg);
    }
    for (const { members, settings } of entries) {
      if (members) {
        this.addRemote(peer, settings);
        continue;
      }
      const rg = peer.groups.get(groupKey(settings.channel, settings.group));
      if (rg) this.removeRemote(peer, rg);
      // Durable: this sidecar keeps the group's events from its creation on, members or not.
      this.options.engine
        .ensure(settings)
        .catch((e: unknown) =>
          this.options.log.error(
            { peer: peer.nodeId, channel: settings.channel, group: settings.group, err: e },
            `cannot create ${settings.channel}/${settings.group} learnt from ${peer.nodeId}: ${(e as Error).message}`,
          ),
        );
    }
  }

  /**
   * The peer's outcomes for what was forwarded to it: done events are acked, returned ones
   * given back to the group (with the attempts made behind the peer, if it says so). Every
   * entry is checked before any is applied; reports for a group or event no longer in
   * flight to the peer are ignored.
   * @throws WeftError (INVALID_ARGUMENT) for a sequence out of range, or 0 attempts.
   */
  outcomes(peer: ForwardingPeer, outcomes: Outcomes): void {
    outcomes.groups.forEach((g, i) => {
      const attempted = g.returnedAfterAttempts.map((a) => a.sequence);
      for (const [name, seqs] of [["done", g.done], ["returned", g.returned], ["returned_after_attempts", attempted]] as const) {
        const j = seqs.findIndex((s) => s < 1n || s > BigInt(MAX_SEQUENCE));
        if (j >= 0) {
          const field = `outcomes.groups[${i}].${name}[${j}]${name === "returned_after_attempts" ? ".sequence" : ""}`;
          throw invalid(Reason.PROTOCOL_VIOLATION, field, `${field} is ${seqs[j]}; a sequence is ${SEQUENCE_RULE}`);
        }
      }
      const j = g.returnedAfterAttempts.findIndex((a) => a.attempts < 1);
      if (j >= 0) {
        const field = `outcomes.groups[${i}].returned_after_attempts[${j}].attempts`;
        throw invalid(Reason.PROTOCOL_VIOLATION, field, `${field} is 0; use 1 to 4294967295`);
      }
    });
    for (const g of outcomes.groups) {
      const rg = peer.groups.get(groupKey(g.channel, g.group));
      if (!rg?.membership) continue; // given back or timed out meanwhile: late reports are ignored
      const ids = (seqs: bigint[]): number[] => {
        const out: number[] = [];
        for (const s of seqs) {
          const d = rg.inflight.get(Number(s));
          if (!d) continue;
          rg.inflight.delete(Number(s));
          out.push(d.deliveryId);
        }
        return out;
      };
      const done = ids(g.done);
      if (done.length > 0) rg.membership.ack(done);
      const returned = ids(g.returned);
      if (returned.length > 0) rg.membership.giveBack(returned);
      const counted: number[] = [];
      const attempts: number[] = [];
      for (const a of g.returnedAfterAttempts) {
        const [deliveryId] = ids([a.sequence]);
        if (deliveryId === undefined) continue;
        counted.push(deliveryId);
        attempts.push(a.attempts);
      }
      if (counted.length > 0) rg.membership.giveBack(counted, attempts);
    }
  }

  /** The peer timed out: each of its members leaves, and what it had in flight counts as an attempt and goes to the others. */
  lose(peer: ForwardingPeer): void {
    for (const rg of peer.groups.values()) {
      rg.removed = true;
      rg.inflight.clear();
      rg.membership?.leave(false);
    }
  }

  private addRemote(peer: ForwardingPeer, settings: JoinSettings): void {
    const key = groupKey(settings.channel, settings.group);
    const existing = peer.groups.get(key);
    if (existing) {
      // Known from before the link dropped: what is still in flight goes again (the peer
      // stores it once, and reports again what it already finished).
      this.forward(peer, existing, [...existing.inflight.values()].sort((a, b) => a.event.sequence - b.event.sequence));
      return;
    }
    const rg: RemoteGroup = { key, settings, membership: undefined, removed: false, inflight: new Map() };
    peer.groups.set(key, rg);
    this.options.engine
      .join(
        settings,
        {
          send: (deliveries) => {
            if (rg.removed) return;
            for (const d of deliveries) rg.inflight.set(d.event.sequence, d);
            this.forward(peer, rg, deliveries);
          },
        },
        { peer: peer.nodeId },
      )
      .then(
        (m) => {
          if (rg.removed) m.leave(true);
          else rg.membership = m;
        },
        (e: unknown) => {
          peer.groups.delete(key);
          this.options.log.error(
            { peer: peer.nodeId, channel: settings.channel, group: settings.group, reason: (e as Partial<WeftError>).reason },
            `cannot forward ${settings.channel}/${settings.group} to ${peer.nodeId}: ${(e as Error).message}`,
          );
        },
      );
  }

  /** The peer has no members of the group any more: what it had in flight goes to the others, uncounted. */
  private removeRemote(peer: ForwardingPeer, rg: RemoteGroup): void {
    rg.removed = true;
    peer.groups.delete(rg.key);
    rg.inflight.clear();
    rg.membership?.leave(true);
  }

  private forward(peer: ForwardingPeer, rg: RemoteGroup, deliveries: readonly OutgoingDelivery[]): void {
    const link = peer.link;
    if (!link?.open || !this.snapshots.has(link) || deliveries.length === 0) return; // resent after the next snapshot
    // Frames stay within what the peer accepts (names, numbers and tags take the overhead).
    const limit = Math.min(MAX_FORWARD_BYTES, (link.peer!.maxMessageBytes || DEFAULT_PEER_MESSAGE_BYTES) - FRAME_OVERHEAD);
    const perEvent = rg.settings.channel.length + rg.settings.group.length + EVENT_OVERHEAD;
    let batch: ForwardedEvent[] = [];
    let bytes = 0;
    const flush = (): void => {
      if (batch.length === 0) return;
      link.send(writeForward(this.nextForwardId++, batch));
      this.options.tracing?.forwarding(peer.nodeId, batch);
      this.options.observer?.forwarded(peer.nodeId, rg.settings.channel, rg.settings.group, batch.length, bytes);
      batch = [];
      bytes = 0;
    };
    for (const d of deliveries) {
      const size = d.event.bytes.length + perEvent;
      if (size > limit) {
        this.unsendable(peer, rg, d, limit);
        continue;
      }
      if (batch.length === MAX_FORWARD_EVENTS || bytes + size > limit) flush();
      batch.push({ channel: rg.settings.channel, group: rg.settings.group, sequence: d.event.sequence, attempt: d.attempt, bytes: d.event.bytes });
      bytes += size;
    }
    flush();
  }

  /**
   * An event larger than the peer accepts: it cannot go there. It is refused like a nack
   * (an attempt), so it goes to another member or, at max attempts, to the dead letters.
   */
  private unsendable(peer: ForwardingPeer, rg: RemoteGroup, d: OutgoingDelivery, limit: number): void {
    rg.inflight.delete(d.event.sequence);
    this.options.log.warn(
      { peer: peer.nodeId, channel: rg.settings.channel, group: rg.settings.group, sequence: d.event.sequence, bytes: d.event.bytes.length, limit },
      `${rg.settings.channel}#${d.event.sequence} (${d.event.bytes.length} bytes) is too large for ${peer.nodeId}, which accepts frames of ${limit} bytes; refused for ${rg.settings.group} there (raise maxMessageBytes on ${peer.nodeId})`,
    );
    setImmediate(() => {
      if (!rg.removed) rg.membership?.nack([d.deliveryId], 0);
    });
  }
}
