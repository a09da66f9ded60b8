import type { EventLog } from "../log/event-log.js";
import type { GroupBatch, GroupRecord, GroupState, LoadedGroup } from "./group-state.js";
import type { GroupDetail } from "./types.js";
import type { StoredEvent } from "../log/record.js";
import type { Observer } from "../ops/observer.js";
import { AttemptRecords } from "./attempt-records.js";
import { deadLetterEvent } from "./dead-letter.js";
import { Deadlines } from "./deadlines.js";
import { CopyKeeping } from "./copy-keeping.js";
import { handOut, send } from "./pump.js";
import { type Entry, type MemberState, checkDeliveryIds, orderKey } from "./entry.js";
import { GroupCursor } from "./group-cursor.js";
import { GroupReader, type ReadTarget } from "./group-reader.js";
import { KeyOrder } from "./key-order.js";
import { ReadAheadBudget } from "./read-ahead-budget.js";
import { ReadyQueues } from "./ready-queues.js";

export type { MemberState } from "./entry.js";

export interface DispatcherOptions {
  /** Most entries held in memory ahead of the cursor. */
  maxPending: number;
  /** Most event bytes held in memory ahead of the cursor. */
  maxPendingBytes: number;
  /** The bytes every group holds together (see ReadAheadBudget). Default: this group's own, unbounded. */
  budget?: ReadAheadBudget | undefined;
  now: () => number;
  /** Told about storage failures that the dispatcher survives. */
  onError: (error: unknown) => void;
  /** A relay copy is done for the group here (acked or dead-lettered): its origin is told (OriginRoute.done). */
  copyDone?: ((event: StoredEvent) => void) | undefined;
  /** A relay copy was given up after deliveries here that were not acked: its origin is told the attempts (OriginRoute.returned). */
  copyReturned?: ((event: StoredEvent, attempts: number) => void) | undefined;
  /** True while this sidecar keeps the relay copies it holds for the group (OriginRoute.keeps). Default: always. */
  keepsCopies?: (() => boolean) | undefined;
  /** Told about deliveries, acks, dead letters and expiry. */
  observer: Observer;
  /** Where the group's cursor, acks and attempts are stored. */
  state: GroupState;
}

/**
 * Delivers one channel to one group: reads ahead from the log, hands events to the group's
 * members within their credits, keeps per-key order, redelivers on nack and deadline,
 * dead-letters at max attempts, and advances the durable cursor as events are done.
 *
 * The channel's events are this sidecar's own and the relay copies held here for the group
 * (copies of events other sidecars published, forwarded for the group's members here). Both
 * take one path: the group's members share them by one rule (ReadyQueues), except that a
 * copy goes to local members only. When an event is done for the group, its outcome goes by
 * its origin: here, the cursor moves; for a copy, it moves too and the origin is told.
 *
 * Everything the group must not forget (cursor, acks above it, attempts: AttemptRecords)
 * is in the log; memory holds at most `maxPending` events read ahead, and as many copies
 * read ahead past them (see GroupReader).
 */
export class GroupDispatcher implements ReadTarget {
  readonly channel: string;
  readonly group: string;
  private readonly cursor: GroupCursor;
  private readonly members = new Map<number, MemberState>();
  readonly queues: ReadyQueues;
  private readonly copies: CopyKeeping;
  private readonly reader: GroupReader;
  private readonly attempts: AttemptRecords;
  private readonly entries = new Map<number, Entry>();
  /** Relay copies this group had in flight to members here when the log was last closed (set by the engine). */
  interruptedCopies: StoredEvent[] = [];
  private readonly keyOrder = new KeyOrder();
  private readonly deadlines = new Deadlines();
  private copiesInflight = 0;
  private rr = 0;
  private stopped = false;

  constructor(
    private readonly log: EventLog,
    { record, acked, inflight, mark }: LoadedGroup,
    private readonly options: DispatcherOptions,
  ) {
    this.channel = record.channel;
    this.group = record.group;
    this.cursor = new GroupCursor(record, acked);
    this.queues = new ReadyQueues(record.channel);
    this.copies = new CopyKeeping(this.cursor, () => this.queues.hasLocal, () => options.keepsCopies?.() ?? true, options.copyReturned);
    const { cursor, queues } = this;
    const host = { channel: this.channel, group: this.group, ackedThrough: () => cursor.ackedThrough, credits: () => queues.credits };
    this.attempts = new AttemptRecords({ ...host, batch: () => options.state.batch(), write: (batch) => this.write(batch) }, mark, inflight);
    const limits = { maxPending: options.maxPending, maxPendingBytes: options.maxPendingBytes };
    this.reader = new GroupReader(log, this, limits, options.budget ?? new ReadAheadBudget(Infinity));
  }

  /** The group's stored record (cursor, settings, creation). */
  get stored(): GroupRecord {
    return this.cursor.record;
  }
  get ackedThrough(): number {
    return this.cursor.ackedThrough;
  }
  get settings(): { maxAttempts: number; deadLetterChannel: string } {
    const r = this.cursor.record;
    return { maxAttempts: r.maxAttempts, deadLetterChannel: r.deadLetterChannel };
  }
  /** The epoch of the relay copies held for the group (see relayIdentity): copies of earlier ones were given up. */
  get copyEpoch(): number {
    return this.cursor.copyEpoch;
  }
  /** True while the group reads its channel: it has members and is not closed. */
  get reading(): boolean {
    return this.members.size > 0 && !this.closed;
  }
  /** Entries held in memory: read, and not done. */
  get held(): number {
    return this.entries.size;
  }

  /** The group as operators see it (see GroupDetail). */
  detail(): GroupDetail {
    const r = this.cursor.record;
    let inflight = 0;
    let remote = 0;
    for (const m of this.members.values()) {
      inflight += m.deliveries.size;
      if (m.kind.kind === "peer") remote++;
    }
    const backlog = Math.max(0, this.log.head(this.channel).last - this.cursor.ackedThrough - this.cursor.ackedAbove);
    const { channel, group, ackedThrough } = this;
    const members = { localMembers: this.members.size - remote, remoteMembers: remote };
    const settings = { maxAttempts: r.maxAttempts, deadLetterChannel: r.deadLetterChannel, expiredUnacked: r.expiredUnacked, createdAt: r.createdAt ?? 0 };
    return { channel, group, ackedThrough, backlog, inflight, inflightCopies: this.copiesInflight, ...members, ...settings };
  }

  /** Updates the group's stored settings (the latest open wins). */
  async configure(maxAttempts: number, deadLetterChannel: string): Promise<void> {
    const batch = this.options.state.batch();
    if (this.cursor.configure(maxAttempts, deadLetterChannel, batch)) await batch.write();
  }

  addMember(member: MemberState): void {
    this.members.set(member.id, member);
    this.reassign();
    this.attempts.keepAhead();
    this.wake();
  }

  /**
   * Removes a member; its unacked deliveries go to the others. When the member said goodbye
   * (`returned`: its stream ended cleanly, or its peer withdrew the group), those deliveries
   * were handed back unhandled and do not count as attempts; when its stream broke (or its
   * peer timed out), they do.
   */
  removeMember(member: MemberState, returned = false): void {
    if (member.gone) return;
    member.gone = true;
    this.members.delete(member.id);
    this.reassign();
    const now = this.options.now();
    const batch = this.options.state.batch();
    for (const entry of [...member.deliveries.values()]) {
      this.endDelivery(member, entry);
      if (returned) this.uncount(entry, batch);
      else this.retry(entry, now, 0, "was lost when its member's stream broke");
    }
    void this.flush(batch);
    this.pump();
  }

  ack(member: MemberState, ids: readonly number[]): void {
    checkDeliveryIds(member, ids);
    const batch = this.options.state.batch();
    for (const id of ids) {
      const entry = member.deliveries.get(id);
      if (!entry) continue; // late or repeated: idempotent
      this.endDelivery(member, entry);
      this.options.observer.acked(this.channel, this.group, entry.event);
      this.complete(entry, batch);
    }
    void this.flush(batch);
    this.pump();
  }

  nack(member: MemberState, ids: readonly number[], delayMs: number): void {
    checkDeliveryIds(member, ids);
    const now = this.options.now();
    for (const id of ids) {
      const entry = member.deliveries.get(id);
      if (!entry) continue;
      this.endDelivery(member, entry);
      this.retry(entry, now, delayMs, "was nacked");
    }
    this.pump();
  }

  /**
   * Takes deliveries back from a peer: unhandled (it had no member for them), delivered
   * again and not counted as an attempt; or, with `attempts`, after that many attempts in
   * all (its members had them and did not ack): delivered again from the next, or
   * dead-lettered at max attempts.
   */
  giveBack(member: MemberState, ids: readonly number[], attempts?: readonly number[]): void {
    checkDeliveryIds(member, ids);
    const now = this.options.now();
    const batch = this.options.state.batch();
    ids.forEach((id, i) => {
      const entry = member.deliveries.get(id);
      if (!entry) return;
      this.endDelivery(member, entry);
      const made = attempts?.[i] ?? 0;
      if (made < entry.attempt) {
        this.uncount(entry, batch);
        return;
      }
      this.attempts.count(entry, made, batch);
      this.retry(entry, now, 0, "was not acked by its members behind a peer");
    });
    void this.flush(batch);
    this.pump();
  }

  extend(member: MemberState, ids: readonly number[], extensionMs: number): void {
    checkDeliveryIds(member, ids);
    this.deadlines.extend(member, ids, this.options.now(), extensionMs);
  }

  /** Delivers what members have room for (after a member's credits were raised). */
  kick(): void {
    this.attempts.keepAhead();
    this.pump();
  }

  /**
   * `seq` is an event addressed to another group (a relay copy held for it, or a redriven
   * dead letter): done here without a delivery. Events are skipped when read anyway; this
   * marks it at once, so a group without members does not count it as backlog.
   */
  skip(seq: number): void {
    if (this.isDone(seq) || this.entries.has(seq)) return;
    const batch = this.options.state.batch();
    this.cursor.markDone(seq, batch);
    void this.flush(batch);
  }

  /** True when `seq` is finished for the group (acked, dead-lettered, skipped, or a relay copy given up). */
  isDone(seq: number): boolean {
    return this.cursor.isDone(seq);
  }

  /** New events were appended. */
  wake(): void {
    this.reader.wake();
  }

  /** True when `seq` is done for the group, or held in memory. */
  known(seq: number): boolean {
    return this.isDone(seq) || this.entries.has(seq);
  }

  onError(error: unknown): void {
    this.options.onError(error);
  }

  /** Retention removed everything before `first`. */
  trimmed(first: number): void {
    if (this.cursor.ackedThrough >= first - 1) return;
    const batch = this.options.state.batch();
    const lost = this.cursor.trim(first, batch, (s) => {
      const entry = this.entries.get(s);
      if (entry) this.drop(entry);
      batch.delInflight(this.channel, this.group, s);
      this.attempts.forget(s);
    });
    if (lost > 0) this.options.observer.expired(this.channel, this.group, lost);
    this.reader.skipTo(first);
    void this.flush(batch);
    this.pump();
  }

  /** Redelivers what passed its deadline and releases delayed retries that are due. */
  tick(): void {
    const now = this.options.now();
    const due = this.deadlines.due(now);
    if (due.length === 0) return;
    for (const entry of due) {
      if (entry.state === "inflight") {
        this.endDelivery(entry.member!, entry);
        this.retry(entry, now, 0, "passed its ack deadline");
      } else if (entry.state === "delayed") {
        this.deadlines.delete(entry);
        this.makeReady(entry, true);
      }
    }
    this.pump();
  }

  /**
   * This sidecar no longer keeps the relay copies it holds for the group (the mesh withdrew
   * the group: its origins took back what they had forwarded here): the copy epoch moves on,
   * so that every copy held so far is given up, those read and waiting now, the others when
   * they are read (see CopyKeeping.stale).
   */
  release(): void {
    if (this.closed || this.copies.keeping) return;
    const batch = this.options.state.batch();
    this.cursor.nextEpoch(batch);
    for (const entry of [...this.entries.values()]) {
      if (entry.event.origin && entry.state !== "inflight" && entry.state !== "dead") this.giveUp(entry, batch);
    }
    // Copies in flight at the last stop and not read since: their origins hear of their
    // attempts now, before the withdrawal, as of those read.
    for (const event of this.interruptedCopies) {
      if (this.known(event.sequence)) continue;
      const attempts = this.attempts.atStart(event);
      if (attempts === undefined) continue;
      this.attempts.told(event.sequence); // nothing more to tell when it is read
      this.copies.tell(event, attempts);
    }
    this.interruptedCopies = [];
    void this.flush(batch);
    this.pump();
  }

  /**
   * The relay copies held for the group and not done here: those read ahead, and, counted by
   * reading the log, those not read yet.
   */
  async copiesPending(): Promise<number> {
    let held = 0;
    for (const e of this.entries.values()) if (e.event.origin) held++;
    return held + (await this.reader.countUnread((e) => e.origin !== undefined && e.onlyGroup === this.group && !this.known(e.sequence)));
  }

  /** Stops dispatching; what the group must not forget is in the log for the next start. */
  close(): void {
    this.stopped = true;
  }

  /** Stops dispatching and writes its exact attempts, so that the next start counts none too many (see AttemptRecords.settle). */
  settle(): Promise<void> {
    this.stopped = true;
    return this.attempts.settle(this.entries.values());
  }

  get closed(): boolean {
    return this.stopped;
  }

  // ---- internals ----

  /** The delivery of `entry` to `member` ended: the member's credit is free again. */
  private endDelivery(member: MemberState, entry: Entry): void {
    member.deliveries.delete(entry.deliveryId!);
    if (entry.event.origin) this.copiesInflight--;
    this.deadlines.delete(entry);
    entry.member = undefined;
    entry.deliveryId = undefined;
  }

  /** A delivery came back unhandled: its attempt does not count, and it goes first again. */
  private uncount(entry: Entry, batch: GroupBatch): void {
    this.attempts.uncount(entry, batch);
    this.makeReady(entry, true);
  }

  /** A delivery failed (nack, deadline, member gone): deliver again, or dead-letter at max attempts. */
  private retry(entry: Entry, now: number, delayMs: number, why: string): void {
    if (entry.attempt >= this.cursor.record.maxAttempts) {
      this.deadLetter(entry, why);
      return;
    }
    if (delayMs > 0) this.deadlines.delay(entry, now, delayMs);
    else this.makeReady(entry, true);
  }

  private deadLetter(entry: Entry, why: string): void {
    entry.state = "dead";
    deadLetterEvent(this.log, entry.event, { group: this.group, ...this.settings, attempts: entry.attempt, why }, {
      done: (stored) => {
        if (stored) this.options.observer.deadLettered(this.channel, this.group, entry.event);
        const batch = this.options.state.batch();
        this.complete(entry, batch);
        this.pump();
        void this.flush(batch);
      },
      stop: () => this.closed || this.entries.get(entry.seq) !== entry,
      refused: (e) => {
        if (entry.refusedDeadLetter) return;
        entry.refusedDeadLetter = true;
        this.options.onError(new Error(`${this.channel}#${entry.seq} waits to be dead-lettered: ${e.message}`));
      },
    });
  }

  /** The entry is done for the group (acked or dead-lettered): the cursor moves, and a copy's origin is told. */
  private complete(entry: Entry, batch: GroupBatch): void {
    if (!this.entries.has(entry.seq)) return;
    this.drop(entry);
    if (entry.event.origin) this.options.copyDone?.(entry.event);
    this.attempts.finished(entry, batch);
    this.cursor.markDone(entry.seq, batch);
  }

  /** Gives up a relay copy (see CopyKeeping): done for the group here. */
  private giveUp(entry: Entry, batch: GroupBatch): void {
    this.copies.givenUp(entry.event, batch, entry.attempt);
    this.drop(entry);
    this.attempts.finished(entry, batch);
    this.cursor.markDone(entry.seq, batch);
  }

  /** Forgets an entry and lets the next event of its key go. */
  private drop(entry: Entry): void {
    this.entries.delete(entry.seq);
    this.deadlines.delete(entry);
    if (entry.member) this.endDelivery(entry.member, entry);
    this.reader.released(entry);
    entry.state = "dead"; // ready queues skip dead entries (see nextReady)
    const next = this.keyOrder.remove(entry);
    if (next) this.releaseNext(next);
  }

  /**
   * An event may go now (new, or next of its key): deliver it, or dead-letter it if a restart
   * left it at max attempts, unless the attempt mark alone counted its attempt (see byMark).
   */
  private releaseNext(entry: Entry): void {
    if (entry.attempt >= this.cursor.record.maxAttempts && !entry.byMark) {
      const forwarded = entry.attempt === entry.event.priorAttempts;
      this.deadLetter(entry, forwarded ? "had its max attempts before it was forwarded here" : "was in flight when the sidecar stopped");
      return;
    }
    this.makeReady(entry, false);
  }

  private makeReady(entry: Entry, front: boolean): void {
    entry.state = "ready";
    this.queues.push(entry, front);
  }

  /** Rebuilds the ready queues after membership changed, keeping sequence order. */
  private reassign(): void {
    const ready = [...this.entries.values()].filter((e) => e.state === "ready");
    this.queues.reset(this.members.values(), ready);
  }

  /** Takes a read event into the group: held to go, or done at once when it is not for the group. */
  admit(event: StoredEvent, ahead: boolean): void {
    const seq = event.sequence;
    if (this.known(seq)) return;
    const foreign = event.onlyGroup !== undefined && event.onlyGroup !== this.group;
    if (foreign || (event.origin && this.copies.stale(event))) {
      // Another group's (a relay copy held for it, or a redriven dead letter), or a copy
      // this sidecar no longer keeps: done here, without a delivery.
      const attempts = this.attempts.atStart(event);
      this.attempts.forget(seq);
      const batch = this.options.state.batch().delInflight(this.channel, this.group, seq);
      if (!foreign) this.copies.givenUp(event, batch, attempts);
      this.cursor.markDone(seq, batch);
      void this.flush(batch);
      return;
    }
    // A copy forwarded after attempts elsewhere counts on from them; each of its attempts is
    // recorded on its own (the attempt mark counts first attempts only).
    const prior = event.priorAttempts ?? 0;
    const entry: Entry = { seq, order: orderKey(event), event, attempt: prior, state: "waiting", due: 0, ahead, perEvent: prior > 0 };
    this.entries.set(seq, entry);
    this.reader.took(entry);
    this.attempts.restore(entry);
    if (!this.keyOrder.add(entry)) this.releaseNext(entry);
  }

  /** Hands ready entries to members with free credits, round-robin, and sends them once their attempts are stored. */
  pump(): void {
    if (this.members.size === 0 || this.closed) return;
    // Most calls (a credit freed, an ack, a fill that found nothing) have nothing to send:
    // they allocate nothing either.
    if (!this.sendable()) {
      this.reader.readMore();
      return;
    }
    const batch = this.options.state.batch();
    const { out, highest, rr } = handOut(this.queues, this.attempts, batch, this.rr);
    this.rr = rr;
    if (out.size === 0) {
      this.reader.readMore();
      return;
    }
    for (const deliveries of out.values()) for (const d of deliveries) if (d.event.origin) this.copiesInflight++;
    const leave = (): void => send(out, this.options.now(), this.deadlines, this.options.observer, this.channel, this.group);
    // Attempts are counted before the events leave, so a crash never loses count of one.
    const stored = this.attempts.handedOut(highest, batch);
    if (stored) void stored.then(leave);
    else leave();
    this.reader.readMore();
  }

  /** True when a member has a free credit and an entry is ready for it. */
  private sendable(): boolean {
    for (const m of this.queues.members) if (m.deliveries.size < m.window && this.queues.hasFor(m)) return true;
    return false;
  }

  /** Writes group state, with a raise of the attempt mark when one is due (see AttemptRecords.write). */
  private flush(batch: GroupBatch): Promise<boolean> {
    return this.attempts.write(batch);
  }

  /**
   * Writes group state (AttemptRecords writes through it). While the log's disk is full the
   * write waits for room (see EventLog.writeState), and attempts leave only once stored. A
   * failed write is reported, not thrown: memory is ahead of the disk then, and a restart
   * redelivers from the disk's older state (at least once still holds).
   */
  private async write(batch: GroupBatch): Promise<boolean> {
    try {
      await batch.write();
      return true;
    } catch (e) {
      if (!this.closed) this.options.onError(e);
      return false;
    }
  }
}
