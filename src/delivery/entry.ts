import { status } from "@grpc/grpc-js";
import { Reason, WeftError } from "../contract/errors.js";
import type { StoredEvent } from "../log/record.js";
import type { MemberKind, MemberSink } from "./types.js";

export type EntryState = "waiting" | "ready" | "inflight" | "delayed" | "dead";

/** One event the group has not finished, held while it is read ahead or in flight. */
export interface Entry {
  seq: number;
  /**
   * What its per-key order is kept by: "" for an event without a key; otherwise its key,
   * prefixed with its origin (see orderKey).
   */
  order: string;
  event: StoredEvent;
  /** Deliveries made so far. */
  attempt: number;
  state: EntryState;
  member?: MemberState | undefined;
  deliveryId?: number | undefined;
  /** For inflight: redeliver after this (Unix ms). For delayed: deliver again after this. */
  due: number;
  /** It has an in-flight record (f!) of its own. */
  recorded?: boolean;
  /**
   * Its attempts are recorded one by one, even the first (restored, given back, or a copy
   * forwarded after attempts elsewhere): the attempt mark does not count them.
   */
  perEvent?: boolean;
  /**
   * Restored at attempt 1 by the attempt mark alone, without an in-flight record: it may
   * never have been delivered, so it is delivered once more before max attempts can
   * dead-letter it (see AttemptRecords).
   */
  byMark?: boolean;
  /** Its dead letter was refused for maxChannels (reported once, then retried quietly). */
  refusedDeadLetter?: boolean;
  /** Read ahead of the group's window for local members (see GroupDispatcher.lookAhead). */
  ahead?: boolean;
}

/** A member of one group: its credits and its deliveries. */
export interface MemberState {
  readonly id: number;
  readonly sink: MemberSink;
  readonly kind: MemberKind;
  /** Its credits: the most deliveries it holds at once. */
  window: number;
  /** The last delivery id issued to it; ids are 1, 2, ... per member. */
  lastDeliveryId: number;
  /** Its deliveries in flight, by delivery id. */
  readonly deliveries: Map<number, Entry>;
  /** Keyed entries hashed to it, ready to go, in order. */
  readonly queue: Entry[];
  gone: boolean;
}

/**
 * The order key of an event: "" without a key, else the key prefixed with the origin log
 * ("" for this sidecar's own events). Per-key order is a promise per origin, and keeping it
 * across origins would let two sidecars wait on each other: O's own event of key K in
 * flight to B while B's own event of key K is in flight to O, each copy waiting there
 * behind the other's event.
 */
export function orderKey(event: StoredEvent): string {
  if (event.key === "") return "";
  return event.origin ? `${event.origin.node}/${event.origin.log}\u0000${event.key}` : `\u0000${event.key}`;
}

/**
 * Checks that every id was issued to `member`.
 * @throws WeftError INVALID_ARGUMENT (UNKNOWN_DELIVERY) for an id never issued on its stream.
 */
export function checkDeliveryIds(member: MemberState, ids: readonly number[]): void {
  for (const id of ids) {
    if (!Number.isSafeInteger(id) || id < 1 || id > member.lastDeliveryId) {
      throw new WeftError(
        status.INVALID_ARGUMENT,
        Reason.UNKNOWN_DELIVERY,
        `delivery id ${id} was never issued on this stream (ids issued so far: 1 to ${member.lastDeliveryId})`,
        "delivery_ids",
      );
    }
  }
}
