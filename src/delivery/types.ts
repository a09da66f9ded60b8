import { MAX_NAME_LENGTH, isName } from "../contract/validate.js";
import { fnv1a } from "./hash.js";
import type { Origin, StoredEvent } from "../log/record.js";

/** One attempt to hand one event to one member, as the member's stream sends it. */
export interface OutgoingDelivery {
  deliveryId: number;
  attempt: number;
  /** Unix ms after which the delivery is redelivered unless acked or extended. */
  deadline: number;
  event: StoredEvent;
}

/** Where a member's deliveries go: its Subscribe stream, or a peer link. */
export interface MemberSink {
  /** Sends a batch of deliveries. Never called with more than the member's free credits. */
  send(deliveries: OutgoingDelivery[]): void;
}

/**
 * What a member of a group is. A local member is a Subscribe stream on this sidecar: its
 * deliveries end by its ack, nack or give-back, or at their deadline. A peer member is the
 * link to a peer sidecar with members of the group, standing for all of them: its
 * deliveries become forwards and end when the peer reports them done or gives them back
 * (or the peer times out), never at a deadline. Relay copies (events other sidecars
 * published, StoredEvent.origin) go to local members only: forwarded events are never
 * forwarded again.
 */
export type MemberKind = { readonly kind: "local"; readonly ackDeadlineMs: number } | { readonly kind: "peer"; readonly node: string };

/**
 * Where the delivery engine sends what concerns the origins of relay copies (the mesh). Set
 * once (DeliveryEngine.routeOrigins); without one, copies are kept and their outcomes go
 * nowhere.
 */
export interface OriginRoute {
  /**
   * A relay copy is done for its group here (acked, or dead-lettered): its origin, which
   * waits for the outcome to move its own cursor, is told. Called once per copy and group.
   */
  done(channel: string, group: string, origin: Origin): void;
  /**
   * A relay copy was given up here after deliveries that were not acked (the group lost its
   * members here and was withdrawn): its origin, which takes it back, is told the attempts
   * it had, to count them. Called before the withdrawal reaches the origin.
   */
  returned(channel: string, group: string, origin: Origin, attempts: number): void;
  /**
   * True while this sidecar keeps the relay copies it holds for the group: it advertises
   * members of the group to its peers (members here, lingering, or expected back after a
   * restart). Once it withdrew the group, its origins took back what they forwarded here.
   */
  keeps(channel: string, group: string): boolean;
}

/** Where a new group starts. */
export type StartAt =
  | { kind: "latest" }
  | { kind: "earliest" }
  | { kind: "sequence"; sequence: number }
  | { kind: "time"; time: number };

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

/** A group in detail, for operators. */
export interface GroupDetail {
  channel: string;
  group: string;
  ackedThrough: number;
  /** Events of the channel the group has not finished here: its own, and relay copies held for it. */
  backlog: number;
  /** Deliveries out now: to members here, or forwarded to peers. */
  inflight: number;
  /** Of `inflight`, deliveries of relay copies (events other sidecars published) to members here. */
  inflightCopies: number;
  /** Subscribe streams on this sidecar. */
  localMembers: number;
  /** Peers with members the group forwards to. */
  remoteMembers: number;
  maxAttempts: number;
  deadLetterChannel: string;
  /** Events retention removed before the group finished them. */
  expiredUnacked: number;
  /** Unix ms; 0 when unknown. */
  createdAt: number;
}

/** What a group looks like from outside: GroupDetail's counts, its members together. */
export type GroupStatus = Pick<GroupDetail, "channel" | "group" | "ackedThrough" | "backlog" | "inflight" | "inflightCopies" | "expiredUnacked"> & {
  members: number;
};

/** A copy of an event another sidecar published, to be held here for one group of its channel. */
export interface HeldCopy {
  channel: string;
  group: string;
  origin: Origin;
  key: string;
  /** The event's bytes, as its origin stored them. */
  bytes: Uint8Array;
  /** The forward's attempt: the group's deliveries of the event so far, this one included. */
  attempt: number;
}

/** What became of a copy given to appendCopies. */
export interface HeldCopyResult {
  sequence: number;
  /** It was held here already (a forward sent again). */
  duplicate: boolean;
  /** It is done for its group here already: its origin must hear so again. */
  done: boolean;
}

/** What a member asks for when it joins; defaults are already applied. */
export interface JoinSettings {
  channel: string;
  group: string;
  start: StartAt;
  maxInFlight: number;
  ackDeadlineMs: number;
  maxAttempts: number;
  deadLetterChannel: string;
  /** For a group learnt from a peer: when it was created there, Unix ms. Default: now. */
  createdAt?: number | undefined;
}

/** What the member got: the settings in force and where the group stands. */
export interface Joined {
  created: boolean;
  ackedThrough: number;
  maxInFlight: number;
  ackDeadlineMs: number;
  maxAttempts: number;
  deadLetterChannel: string;
}

/** A member's handle on its group. Every method is safe to call after `leave()` (no-op). */
export interface Membership {
  readonly joined: Joined;
  /** Marks deliveries handled. Late or repeated acks are ignored. @throws WeftError for ids never issued. */
  ack(deliveryIds: readonly number[]): void;
  /** Refuses deliveries: redelivered after `delayMs`, or dead-lettered at max attempts. */
  nack(deliveryIds: readonly number[], delayMs: number): void;
  /**
   * Hands deliveries back: delivered again without counting an attempt, or, with
   * `attempts` (per delivery), after that many attempts (more deliveries were made behind
   * a peer) and dead-lettered at max attempts.
   */
  giveBack(deliveryIds: readonly number[], attempts?: readonly number[]): void;
  /** Moves the deadline of deliveries to now + `extensionMs`. */
  extend(deliveryIds: readonly number[], extensionMs: number): void;
  /** Raises this member's max in flight. @throws WeftError past the limit. */
  credit(credits: number): void;
  /**
   * Leaves the group: this member's unacked deliveries go to the other members. With
   * `returned`, the member handed them back unhandled (a clean goodbye) and they do not count
   * as attempts. Idempotent.
   */
  leave(returned?: boolean): void;
}

export const DEFAULTS = {
  maxInFlight: 100,
  ackDeadlineMs: 30_000,
  maxAttempts: 5,
  maxCredits: 10_000,
} as const;

/**
 * The dead-letter channel of a group that names none: "<channel>.dlq.<group>", or, when that
 * would pass the 200-character name limit, "dlq.x<hash>.<group>" (or just "dlq.x<hash>" for
 * a very long group), stable for the pair. The Subscribed response tells the member which.
 */
export function defaultDeadLetterChannel(channel: string, group: string): string {
  const plain = `${channel}.dlq.${group}`;
  if (plain.length <= MAX_NAME_LENGTH) return plain;
  const hashed = `dlq.x${fnv1a(`${channel}!${group}`).toString(16)}`;
  return isName(`${hashed}.${group}`) ? `${hashed}.${group}` : hashed;
}
