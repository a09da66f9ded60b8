/**
 * What observability reads of a stored event. The log's StoredEvent is one: callers pass
 * their events as they are, and src/ops imports nothing of the parts it observes.
 */
export interface ObservedEvent {
  readonly sequence: number;
  /** When the origin stored it, Unix ms. */
  readonly appendedAt: number;
  /** The encoded weft.v1.Event. */
  readonly bytes: Uint8Array;
  /** For a relay copy: the sidecar that published it and its sequence there. */
  readonly origin?: { readonly node: string; readonly sequence: number } | undefined;
}

/** Relay copies among the events of one append: how many, and their records' bytes. */
export interface StoredCopies {
  readonly count: number;
  readonly bytes: number;
}

/** What observability reads of one attempt to hand an event to a member (delivery's OutgoingDelivery is one). */
export interface ObservedDelivery {
  /** 1 for the first attempt; more for a redelivery. */
  readonly attempt: number;
  readonly event: ObservedEvent;
}

/**
 * What happens to events, told as it happens, for metrics, logs and traces. The log, the
 * delivery engine, the service API and the mesh each call it at one place; an observer must
 * be cheap (it runs on the path of every event) and must not throw.
 *
 * A relay copy (an event a peer forwarded, held here for one group) is an event of its
 * channel like any other; an ObservedEvent says whether it is one (its `origin`).
 */
export interface Observer {
  /** Valid events a publisher sent (before dedup), per channel, in one batch. */
  published(channel: string, count: number): void;
  /**
   * Events appended to the log (not duplicates): published, relay copies, dead letters.
   * `count` and `bytes` (the records' bytes) count them all; `copies` the relay copies among them.
   */
  stored(channel: string, count: number, bytes: number, copies: StoredCopies): void;
  /**
   * A re-published (source, id) acked with its original sequence, not stored again; `relay`
   * for a forward of a relay copy this sidecar already held.
   */
  deduplicated(channel: string, relay: boolean): void;
  /** Events forwarded to a peer for one of its groups, in one frame. */
  forwarded(peer: string, channel: string, group: string, count: number, bytes: number): void;
  /** Deliveries handed to one member (attempt > 1 is a redelivery). */
  delivered(channel: string, group: string, deliveries: readonly ObservedDelivery[]): void;
  /** An event a member acked (the handler processed it). */
  acked(channel: string, group: string, event: ObservedEvent): void;
  /** An event moved to the group's dead-letter channel. */
  deadLettered(channel: string, group: string, event: ObservedEvent): void;
  /** Events retention removed: from a channel (group undefined), or before a group finished them. */
  expired(channel: string, group: string | undefined, count: number): void;
  /** A peer link came up or went down. */
  peerLink(peer: string, up: boolean): void;
  /**
   * The mesh forgot a peer: it stayed away past the peer timeout. Nothing more is told about
   * it unless it links again, as a new peer; what is kept per peer may go.
   */
  peerGone(peer: string): void;
  /**
   * The disk of the log in `dir` filled up (`full`: a write failed for it; publishes are
   * refused) or has room again (`full` false: writes work again). Told once per change;
   * `detail` is the failed write's error, or how long it lasted.
   */
  diskFull(dir: string, full: boolean, detail: string): void;
  /**
   * A request was refused for one of the sidecar's limits (`reason`: TOO_MANY_CHANNELS,
   * TOO_MANY_GROUPS, TOO_MANY_PEERS, RECEIVE_BUDGET). Told once per refusal.
   */
  refused(reason: string): void;
}

/** Observes nothing. */
export const NO_OBSERVER: Observer = {
  published() {},
  stored() {},
  deduplicated() {},
  forwarded() {},
  delivered() {},
  acked() {},
  deadLettered() {},
  expired() {},
  peerLink() {},
  peerGone() {},
  diskFull() {},
  refused() {},
};

/**
 * One observer that tells each of `observers` everything, in order (undefined ones are
 * skipped). With none left it is {@link NO_OBSERVER}; with one, that one.
 */
export function composeObservers(...observers: (Observer | undefined)[]): Observer {
  const all = observers.filter((o): o is Observer => o !== undefined && o !== NO_OBSERVER);
  if (all.length === 0) return NO_OBSERVER;
  if (all.length === 1) return all[0]!;
  return {
    published(channel, count) {
      for (const o of all) o.published(channel, count);
    },
    stored(channel, count, bytes, events) {
      for (const o of all) o.stored(channel, count, bytes, events);
    },
    deduplicated(channel, relay) {
      for (const o of all) o.deduplicated(channel, relay);
    },
    forwarded(peer, channel, group, count, bytes) {
      for (const o of all) o.forwarded(peer, channel, group, count, bytes);
    },
    delivered(channel, group, deliveries) {
      for (const o of all) o.delivered(channel, group, deliveries);
    },
    acked(channel, group, event) {
      for (const o of all) o.acked(channel, group, event);
    },
    deadLettered(channel, group, event) {
      for (const o of all) o.deadLettered(channel, group, event);
    },
    expired(channel, group, count) {
      for (const o of all) o.expired(channel, group, count);
    },
    peerLink(peer, up) {
      for (const o of all) o.peerLink(peer, up);
    },
    peerGone(peer) {
      for (const o of all) o.peerGone(peer);
    },
    diskFull(dir, full, detail) {
      for (const o of all) o.diskFull(dir, full, detail);
    },
    refused(reason) {
      for (const o of all) o.refused(reason);
    },
  };
}
