import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { Reason, WeftError } from "../contract/errors.js";
import { EventSchema } from "../gen/weft/v1/event_pb.js";
import type { GroupBatch, GroupRecord, InflightRecord, OriginLog } from "../log/origin-log.js";
import type { StoredEvent } from "../log/record.js";
import type { Observer } from "../ops/observer.js";
import { spreadHash } from "./hash.js";
import { ReadAheadBudget } from "./read-ahead-budget.js";
import type { MemberSink, OutgoingDelivery } from "./types.js";

type EntryState = "waiting" | "ready" | "inflight" | "delayed" | "dead";

/** One event the group has not finished, held while it is read ahead or in flight. */
interface Entry {
  seq: number;
  key: string;
  event: StoredEvent;
  /** Deliveries made so far. */
  attempt: number;
  state: EntryState;
  member?: MemberState | undefined;
  deliveryId?: number | undefined;
  /** For inflight: redeliver after this (Unix ms). For delayed: deliver again after this. */
  due: number;
  /**
   * The pump record its first attempt was stored in, while that counts it. Set when the
   * attempt is made, or before it for an event whose attempt was stored with it (claim).
   */
  pump?: PumpRecord | undefined;
  /** It has an in-flight record (f!) of its own. */
  recorded?: boolean;
  /** Its attempts are stored one by one, never in a pump record (restored, or given back). */
  perEvent?: boolean;
  /** Its dead letter was refused for maxChannels (reported once, then retried quietly). */
  refusedDeadLetter?: boolean;
}

/** A pump record (GroupBatch.putPump) and how many of its entries are not done yet. */
interface PumpRecord {
  first: number;
  remaining: number;
}

/**
 * The credits of one subscriber, shared by every dispatcher it is a member of (a group's
 * own events and its relay copies): in flight never exceeds the window across them, and
 * delivery ids are unique across them.
 */
export interface MemberCredits {
  window: number;
  inflight: number;
  lastDeliveryId: number;
  /** Called when a delivery ends, so the member's other dispatchers may use the credit. */
  released: () => void;
}

/** A member's deliveries in one dispatcher. */
export interface MemberState {
  readonly id: number;
  readonly sink: MemberSink;
  readonly credits: MemberCredits;
  /** Infinity for a peer link: its deliveries end by the peer's outcome, not a deadline. */
  ackDeadlineMs: number;
  readonly deliveries: Map<number, Entry>;
  /** Keyed entries hashed to this member, ready to go, in order. */
  readonly queue: Entry[];
  gone: boolean;
}

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
  /** Told when an event is done for the group (acked or dead-lettered). */
  onDone?: ((event: StoredEvent) => void) | undefined;
  /** Told about deliveries, acks, dead letters and expiry. */
  observer: Observer;
}

const READ_CHUNK = 512;
/** Most bytes one read takes from the budget (reserved while it runs). */
const READ_CHUNK_BYTES = 4 * 1024 * 1024;
/** A dead letter that could not be stored (a full disk) is tried again after this, ms. */
const DEAD_LETTER_RETRY_MS = 1000;

/**
 * Delivers one channel to one group: reads ahead from the origin log, hands events to the
 * group's members within their credits, keeps per-key order, redelivers on nack and
 * deadline, dead-letters at max attempts, and advances the durable cursor on acks.
 *
 * Everything the group must not forget (cursor, acks above it, attempts in flight) is in
 * the log; memory holds at most `maxPending` events read ahead.
 */
export class GroupDispatcher {
  readonly channel: string;
  readonly group: string;
  private record: GroupRecord;
  private readonly members = new Map<number, MemberState>();
  private memberOrder: MemberState[] = [];
  private readonly entries = new Map<number, Entry>();
  private readonly acked = new Set<number>();
  private readonly restored = new Map<number, number>();
  /** Events not read yet whose first attempt was stored with them (see claim), and its pump record. */
  private readonly claimed = new Map<number, PumpRecord>();
  /** Deliveries that were in flight when the log was last closed (the group had members then). */
  readonly inflightAtStart: number;
  private readonly keyQueues = new Map<string, Entry[]>();
  private unassigned: Entry[] = [];
  private readonly timed = new Set<Entry>();
  private readPos: number;
  private pendingBytes = 0;
  private readonly budget: ReadAheadBudget;
  /** Waiting for the budget to give bytes back (see ReadAheadBudget.wait). */
  private budgetWait = false;
  private filling = false;
  private refill = false;
  private rr = 0;
  private closed = false;

  constructor(
    private readonly log: OriginLog,
    record: GroupRecord,
    acked: number[],
    inflight: InflightRecord[],
    private readonly options: DispatcherOptions,
  ) {
    this.channel = record.channel;
    this.group = record.group;
    this.record = record;
    for (const s of acked) if (s > record.ackedThrough) this.acked.add(s);
    for (const f of inflight) if (f.sequence > record.ackedThrough) this.restored.set(f.sequence, f.attempt);
    this.inflightAtStart = [...this.restored.values()].filter((a) => a > 0).length;
    this.readPos = record.ackedThrough + 1;
    this.budget = options.budget ?? new ReadAheadBudget(Infinity);
  }

  /** The group's stored record (cursor, settings, creation). */
  get stored(): GroupRecord {
    return this.record;
  }
  get ackedThrough(): number {
    return this.record.ackedThrough;
  }
  get settings(): { maxAttempts: number; deadLetterChannel: string } {
    return { maxAttempts: this.record.maxAttempts, deadLetterChannel: this.record.deadLetterChannel };
  }
  /** Events retention removed before the group finished them. */
  get expiredUnacked(): number {
    return this.record.expiredUnacked;
  }
  get memberCount(): number {
    return this.members.size;
  }
  /** Members on this sidecar (Subscribe streams) and peers standing for members behind them. */
  get memberKinds(): { local: number; remote: number } {
    let remote = 0;
    for (const m of this.members.values()) if (m.ackDeadlineMs === Infinity) remote++;
    return { local: this.members.size - remote, remote };
  }
  /** Deliveries handed to members and not yet acked, nacked, given back or past their deadline. */
  get inflight(): number {
    let n = 0;
    for (const m of this.members.values()) n += m.deliveries.size;
    return n;
  }
  /** Events of the channel the group has not finished. */
  get backlog(): number {
    return Math.max(0, this.log.head(this.channel).last - this.record.ackedThrough - this.acked.size);
  }

  /** Updates the group's stored settings (the latest open wins). */
  async configure(maxAttempts: number, deadLetterChannel: string): Promise<void> {
    if (maxAttempts === this.record.maxAttempts && deadLetterChannel === this.record.deadLetterChannel) return;
    this.record = { ...this.record, maxAttempts, deadLetterChannel };
    await this.log.groupBatch().putGroup(this.record).write();
  }

  addMember(member: MemberState): void {
    this.members.set(member.id, member);
    this.reassign();
    this.wake();
  }

  /**
   * Removes a member; its unacked deliveries go to the others. When the member said goodbye
   * (`returned`: its stream ended cleanly), those deliveries were handed back unhandled and
   * do not count as attempts; when its stream broke, they do.
   */
  removeMember(member: MemberState, returned = false): void {
    if (member.gone) return;
    member.gone = true;
    this.members.delete(member.id);
    this.reassign();
    const now = this.options.now();
    const batch = this.log.groupBatch();
    for (const entry of [...member.deliveries.values()]) {
      this.release(member, entry);
      if (returned) {
        this.uncount(entry, batch);
      } else {
        this.retry(entry, now, 0, "was lost when its member's stream broke");
      }
    }
    void this.flush(batch);
    this.pump();
  }

  ack(member: MemberState, ids: readonly number[]): void {
    this.checkIds(member, ids);
    if (member.deliveries.size === 0) return; // the ids are another dispatcher's of this member
    const batch = this.log.groupBatch();
    for (const id of ids) {
      const entry = member.deliveries.get(id);
      if (!entry) continue; // late or repeated: idempotent
      this.release(member, entry);
      this.options.observer.acked(this.channel, this.group, entry.event);
      this.complete(entry, batch);
    }
    void this.flush(batch);
    this.pump();
  }

  nack(member: MemberState, ids: readonly number[], delayMs: number): void {
    this.checkIds(member, ids);
    const now = this.options.now();
    for (const id of ids) {
      const entry = member.deliveries.get(id);
      if (!entry) continue;
      this.release(member, entry);
      this.retry(entry, now, delayMs, "was nacked");
    }
    this.pump();
  }

  /** Takes deliveries back unhandled (a peer had no member for them): delivered again, not counted as an attempt. */
  giveBack(member: MemberState, ids: readonly number[]): void {
    this.checkIds(member, ids);
    const batch = this.log.groupBatch();
    for (const id of ids) {
      const entry = member.deliveries.get(id);
      if (!entry) continue;
      this.release(member, entry);
      this.uncount(entry, batch);
    }
    void this.flush(batch);
    this.pump();
  }

  extend(member: MemberState, ids: readonly number[], extensionMs: number): void {
    this.checkIds(member, ids);
    const now = this.options.now();
    for (const id of ids) {
      const entry = member.deliveries.get(id);
      if (entry && Number.isFinite(entry.due)) entry.due = now + extensionMs;
    }
  }

  /** Makes more room for a member (credits). */
  grant(member: MemberState, credits: number): void {
    member.credits.window += credits;
    this.pump();
  }

  /** Delivers what members have room for (after another dispatcher freed shared credits). */
  kick(): void {
    this.pump();
  }

  /**
   * `seq` is an event addressed to another group (a redriven dead letter): done here
   * without a delivery. Events are skipped when read anyway; this marks it at once, so a
   * group without members does not count it as backlog.
   */
  skip(seq: number): void {
    if (this.isDone(seq) || this.entries.has(seq)) return;
    const batch = this.log.groupBatch();
    this.markDone(seq, batch);
    void this.flush(batch);
  }

  /** True when `seq` is finished for the group (acked, dead-lettered, or skipped). */
  isDone(seq: number): boolean {
    return seq <= this.record.ackedThrough || this.acked.has(seq);
  }

  /** New events were appended up to `last`. */
  wake(): void {
    if (this.members.size === 0 || this.closed) return;
    void this.fill();
  }

  /**
   * New events of the channel are about to be written (OriginLog.onPrepare). When the group
   * has read everything before them, nothing is waiting to go, and its members have credits,
   * the first attempts of the events that will go at once are stored in the same write, as
   * one pump record: each leaves as soon as it is stored, without a write of its own on the
   * way (one LevelDB write less per event, on each hop). Returns what the log calls once
   * that write succeeded or failed.
   *
   * If the sidecar stops after the write and before the delivery, the event comes back as
   * attempt 2: the count may hold an attempt too many, never one too few.
   */
  claim(events: readonly StoredEvent[], attempts: GroupBatch): ((stored: boolean) => void) | undefined {
    if (this.closed || this.members.size === 0 || this.readPos !== events[0]?.sequence) return undefined;
    if (this.nextReady(this.unassigned)) return undefined;
    let free = 0;
    for (const m of this.members.values()) {
      if (this.nextReady(m.queue)) return undefined;
      free += Math.max(0, m.credits.window - m.credits.inflight);
    }
    const room = this.readRoom();
    if (!room) return undefined;
    const limit = Math.min(free, room.events);
    const seqs: number[] = [];
    const keys = new Set<string>();
    let bytes = 0;
    for (const event of events) {
      if (seqs.length >= limit || bytes + event.bytes.length > room.bytes) break;
      if (event.onlyGroup !== undefined && event.onlyGroup !== this.group) continue;
      if (event.key) {
        // Behind an earlier event of its key: it waits, and its attempt is stored when it goes.
        if (this.keyQueues.has(event.key) || keys.has(event.key)) continue;
        keys.add(event.key);
      }
      seqs.push(event.sequence);
      bytes += event.bytes.length;
    }
    if (seqs.length === 0) return undefined;
    attempts.putPump(this.channel, this.group, seqs);
    return (stored) => {
      if (!stored || this.closed) return;
      const pump: PumpRecord = { first: seqs[0]!, remaining: seqs.length };
      for (const seq of seqs) this.claimed.set(seq, pump);
    };
  }

  /** Retention removed everything before `first`. */
  trimmed(first: number): void {
    for (const seq of this.claimed.keys()) if (seq < first) this.claimed.delete(seq);
    if (this.record.ackedThrough >= first - 1) return;
    const batch = this.log.groupBatch();
    let lost = 0;
    for (let s = this.record.ackedThrough + 1; s < first; s++) {
      if (this.acked.delete(s)) {
        batch.delAcked(this.channel, this.group, s);
        continue;
      }
      lost++;
      const entry = this.entries.get(s);
      if (entry) {
        this.leavePump(entry, batch);
        this.drop(entry);
      }
      batch.delInflight(this.channel, this.group, s);
      this.restored.delete(s);
    }
    this.record = { ...this.record, ackedThrough: first - 1, expiredUnacked: this.record.expiredUnacked + lost };
    if (lost > 0) this.options.observer.expired(this.channel, this.group, lost);
    this.readPos = Math.max(this.readPos, first);
    batch.putGroup(this.record);
    void this.flush(batch);
    this.pump();
  }

  /** Redelivers what passed its deadline and releases delayed retries that are due. */
  tick(): void {
    if (this.timed.size === 0) return;
    const now = this.options.now();
    let changed = false;
    for (const entry of [...this.timed]) {
      if (entry.due > now) continue;
      changed = true;
      if (entry.state === "inflight") {
        this.release(entry.member!, entry);
        this.retry(entry, now, 0, "passed its ack deadline");
      } else if (entry.state === "delayed") {
        this.timed.delete(entry);
        this.makeReady(entry, true);
      }
    }
    if (changed) this.pump();
  }

  close(): void {
    this.closed = true;
  }

  // ---- internals ----

  private checkIds(member: MemberState, ids: readonly number[]): void {
    for (const id of ids) {
      if (!Number.isSafeInteger(id) || id < 1 || id > member.credits.lastDeliveryId) {
        throw new WeftError(
          status.INVALID_ARGUMENT,
          Reason.UNKNOWN_DELIVERY,
          `delivery id ${id} was never issued on this stream (ids issued so far: 1 to ${member.credits.lastDeliveryId})`,
          "delivery_ids",
        );
      }
    }
  }

  private release(member: MemberState, entry: Entry): void {
    member.deliveries.delete(entry.deliveryId!);
    member.credits.inflight--;
    member.credits.released();
    this.timed.delete(entry);
    entry.member = undefined;
    entry.deliveryId = undefined;
  }

  /** A delivery came back unhandled: its attempt does not count, and it goes first again. */
  private uncount(entry: Entry, batch: GroupBatch): void {
    entry.attempt--;
    if (entry.pump || entry.attempt > 0) {
      // A pump record says attempt 1: an in-flight record of its own says otherwise (and
      // wins), and from now on the entry's attempts are recorded one by one.
      this.leavePump(entry, batch);
      batch.putInflight(this.channel, this.group, entry.seq, entry.attempt);
      entry.recorded = true;
    } else if (entry.recorded) {
      batch.delInflight(this.channel, this.group, entry.seq);
      entry.recorded = false;
    }
    entry.perEvent = true;
    this.makeReady(entry, true);
  }

  /** The entry is no longer counted by the pump record it was sent in; the record goes with its last entry. */
  private leavePump(entry: Entry, batch: GroupBatch): void {
    const pump = entry.pump;
    if (!pump) return;
    entry.pump = undefined;
    if (--pump.remaining === 0) batch.delPump(this.channel, this.group, pump.first);
  }

  /** A delivery failed (nack, deadline, member gone): deliver again, or dead-letter at max attempts. */
  private retry(entry: Entry, now: number, delayMs: number, why: string): void {
    if (entry.attempt >= this.record.maxAttempts) {
      this.deadLetter(entry, why);
      return;
    }
    if (delayMs > 0) {
      entry.state = "delayed";
      entry.due = now + delayMs;
      this.timed.add(entry);
    } else {
      this.makeReady(entry, true);
    }
  }

  private deadLetter(entry: Entry, why: string): void {
    entry.state = "dead";
    let bytes: Uint8Array;
    try {
      const event = fromBinary(EventSchema, entry.event.bytes);
      // For a relay copy, the event's own channel and its sequence at the origin.
      const channel = event.channel;
      const origin = entry.event.origin;
      // A redriven event that fails again is a new dead letter, not a duplicate of the first.
      const redriven = event.attributes["weft.redrive.from"];
      event.channel = this.record.deadLetterChannel;
      event.attributes["weft.dead_letter.reason"] = "max_attempts";
      event.attributes["weft.dead_letter.detail"] = `${entry.attempt} of ${this.record.maxAttempts} attempts made; the last ${why}`;
      event.attributes["weft.dead_letter.attempts"] = String(entry.attempt);
      event.attributes["weft.dead_letter.channel"] = channel;
      event.attributes["weft.dead_letter.group"] = this.group;
      event.attributes["weft.dead_letter.sequence"] = String(origin?.sequence ?? entry.seq);
      if (origin) event.attributes["weft.dead_letter.origin"] = origin.node;
      bytes = toBinary(EventSchema, event);
      this.log
        // Deduplicated per group, so groups sharing a dead-letter channel each keep theirs,
        // and a dead-lettering repeated after a crash is stored once.
        .append([{ channel: event.channel, source: `weft-dlq:${this.group}:${redriven === undefined ? "" : `${redriven}:`}${event.source}`, id: event.id, key: event.key, bytes }])
        .then(() => {
          this.options.observer.deadLettered(this.channel, this.group);
          const batch = this.log.groupBatch();
          this.complete(entry, batch);
          this.pump();
          return this.flush(batch);
        })
        .catch((e: unknown) => {
          // The log is closing (the in-flight record stays, and a restart dead-letters it),
          // its disk is full, or the dead-letter channel would pass maxChannels: tried again
          // until it is stored (a repeat is stored once).
          if (this.closed) return;
          if (e instanceof WeftError && e.reason === Reason.TOO_MANY_CHANNELS && !entry.refusedDeadLetter) {
            entry.refusedDeadLetter = true;
            this.options.onError(new Error(`${this.channel}#${entry.seq} waits to be dead-lettered: ${e.message}`));
          }
          setTimeout(() => {
            if (!this.closed && this.entries.get(entry.seq) === entry) this.deadLetter(entry, why);
          }, DEAD_LETTER_RETRY_MS).unref();
        });
    } catch {
      // Stored events were validated on publish; an undecodable one is completed, not looped on.
      const batch = this.log.groupBatch();
      this.complete(entry, batch);
      void this.flush(batch);
    }
  }

  /** The entry is done for the group: acked or dead-lettered. */
  private complete(entry: Entry, batch: ReturnType<OriginLog["groupBatch"]>): void {
    if (!this.entries.has(entry.seq)) return;
    this.drop(entry);
    this.options.onDone?.(entry.event);
    this.leavePump(entry, batch);
    if (entry.recorded) batch.delInflight(this.channel, this.group, entry.seq);
    this.markDone(entry.seq, batch);
  }

  /** Records `seq` done: the cursor moves past it and the acks above it, or it is acked above the cursor. */
  private markDone(seq: number, batch: GroupBatch): void {
    if (seq === this.record.ackedThrough + 1) {
      let through = seq;
      while (this.acked.delete(through + 1)) {
        through++;
        batch.delAcked(this.channel, this.group, through);
      }
      this.record = { ...this.record, ackedThrough: through };
      batch.putGroup(this.record);
    } else {
      this.acked.add(seq);
      batch.putAcked(this.channel, this.group, seq);
    }
  }

  /** Forgets an entry and lets the next event of its key go. */
  private drop(entry: Entry): void {
    this.entries.delete(entry.seq);
    this.timed.delete(entry);
    if (entry.member) this.release(entry.member, entry);
    this.pendingBytes -= entry.event.bytes.length;
    this.budget.release(entry.event.bytes.length);
    entry.state = "dead"; // ready queues skip dead entries (see nextReady)
    if (entry.key) {
      const q = this.keyQueues.get(entry.key);
      if (q) {
        const i = q.indexOf(entry);
        if (i >= 0) q.splice(i, 1);
        if (q.length === 0) this.keyQueues.delete(entry.key);
        else if (i === 0 && q[0]!.state === "waiting") this.releaseNext(q[0]!);
      }
    }
  }

  /** An event may go now (new, or next of its key): deliver it, or dead-letter it if a restart left it at max attempts. */
  private releaseNext(entry: Entry): void {
    if (entry.attempt >= this.record.maxAttempts) this.deadLetter(entry, "was in flight when the sidecar stopped");
    else this.makeReady(entry, false);
  }

  /** Takes the next deliverable entry from a ready queue, skipping ones dropped meanwhile. */
  private nextReady(queue: Entry[]): Entry | undefined {
    while (queue.length > 0 && queue[0]!.state !== "ready") queue.shift();
    return queue[0];
  }

  private makeReady(entry: Entry, front: boolean): void {
    entry.state = "ready";
    const target = entry.key ? this.memberFor(entry.key) : undefined;
    const queue = target ? target.queue : this.unassigned;
    if (front) queue.unshift(entry);
    else queue.push(entry);
  }

  private memberFor(key: string): MemberState | undefined {
    if (this.memberOrder.length === 0) return undefined;
    // Salted with the channel: a relay dispatcher ("channel~group") receives only the keys
    // the origin hashed to its sidecar, and hashing them the same way again would give
    // them all to one member there.
    return this.memberOrder[spreadHash(`${this.channel}\u0000${key}`) % this.memberOrder.length];
  }

  /** Rebuilds the ready queues after membership changed, keeping sequence order. */
  private reassign(): void {
    this.memberOrder = [...this.members.values()].sort((a, b) => a.id - b.id);
    const ready: Entry[] = [...this.entries.values()].filter((e) => e.state === "ready");
    ready.sort((a, b) => a.seq - b.seq);
    this.unassigned = [];
    for (const m of this.members.values()) m.queue.length = 0;
    for (const e of ready) this.makeReady(e, false);
  }

  private async fill(): Promise<void> {
    if (this.filling) {
      this.refill = true;
      return;
    }
    this.filling = true;
    try {
      do {
        this.refill = false;
        // Read ahead of the cursor within readRoom().
        while (!this.closed && this.members.size > 0) {
          const head = this.log.head(this.channel);
          if (this.record.ackedThrough < head.first - 1) this.trimmed(head.first);
          if (this.readPos > head.last) break;
          const room = this.readRoom();
          if (!room) break;
          // Reserved while the read runs, so that groups reading at once share the budget.
          const bytes = Math.min(room.bytes, READ_CHUNK_BYTES);
          this.budget.take(bytes);
          let events: StoredEvent[];
          try {
            events = await this.log.read(this.channel, this.readPos, Math.min(READ_CHUNK, room.events), bytes);
          } finally {
            this.budget.release(bytes);
          }
          if (events.length === 0) break;
          for (const event of events) this.admit(event);
          this.readPos = events[events.length - 1]!.sequence + 1;
          this.pump();
        }
      } while (this.refill);
    } catch (e) {
      if (!this.closed) this.options.onError(e);
    } finally {
      this.filling = false;
    }
    this.pump();
  }

  private admit(event: StoredEvent): void {
    const seq = event.sequence;
    if (seq <= this.record.ackedThrough || this.acked.has(seq) || this.entries.has(seq)) return;
    if (event.onlyGroup !== undefined && event.onlyGroup !== this.group) {
      // Addressed to another group of the channel (a redriven dead letter): not ours.
      this.restored.delete(seq);
      const batch = this.log.groupBatch().delInflight(this.channel, this.group, seq);
      this.markDone(seq, batch);
      void this.flush(batch);
      return;
    }
    const entry: Entry = { seq, key: event.key, event, attempt: 0, state: "waiting", due: 0 };
    this.entries.set(seq, entry);
    this.pendingBytes += event.bytes.length;
    this.budget.take(event.bytes.length);
    entry.pump = this.claimed.get(seq);
    this.claimed.delete(seq);
    const restored = this.restored.get(seq);
    if (restored !== undefined) {
      this.restored.delete(seq);
      entry.attempt = restored;
      entry.recorded = true;
      entry.perEvent = true;
    }
    let blocked = false;
    if (entry.key) {
      const q = this.keyQueues.get(entry.key);
      if (q) {
        q.push(entry);
        blocked = true;
      } else this.keyQueues.set(entry.key, [entry]);
    }
    if (!blocked) this.releaseNext(entry);
  }

  /** Hands ready entries to members with free credits, round-robin, then persists attempts. */
  private pump(): void {
    if (this.members.size === 0 || this.closed) return;
    // Most calls (a credit freed, an ack, a fill that found nothing) have nothing to send:
    // they allocate nothing either.
    if (!this.sendable()) {
      this.readMore();
      return;
    }
    const now = this.options.now();
    const out = new Map<MemberState, OutgoingDelivery[]>();
    const batch = this.log.groupBatch();
    const order = this.memberOrder;
    // First attempts are stored in one pump record, not one in-flight record each (which
    // each ack would then delete): that would be two more writes per event.
    const firsts: Entry[] = [];
    let progress = true;
    while (progress) {
      progress = false;
      for (let i = 0; i < order.length; i++) {
        const member = order[(this.rr + i) % order.length]!;
        if (member.credits.inflight >= member.credits.window) continue;
        const mine = this.nextReady(member.queue);
        const any = this.nextReady(this.unassigned);
        const entry = mine && (!any || mine.seq < any.seq) ? member.queue.shift() : this.unassigned.shift();
        if (!entry) continue;
        progress = true;
        entry.attempt++;
        entry.state = "inflight";
        entry.member = member;
        entry.deliveryId = ++member.credits.lastDeliveryId;
        // The deadline runs from when the delivery leaves (send, below), not from here: an
        // attempt still being stored (a full disk holds it) must not expire unsent.
        entry.due = Infinity;
        member.deliveries.set(entry.deliveryId, entry);
        member.credits.inflight++;
        if (entry.attempt > 1 || entry.perEvent) {
          batch.putInflight(this.channel, this.group, entry.seq, entry.attempt);
          entry.recorded = true;
        } else if (!entry.pump) firsts.push(entry); // with a pump already, it was stored with the event (claim)
        let list = out.get(member);
        if (!list) out.set(member, (list = []));
        list.push({ deliveryId: entry.deliveryId, attempt: entry.attempt, deadline: entry.due, event: entry.event });
      }
      this.rr = (this.rr + 1) % Math.max(1, order.length);
    }
    if (out.size === 0) {
      this.readMore();
      return;
    }
    if (firsts.length > 0) {
      const pump: PumpRecord = { first: firsts[0]!.seq, remaining: firsts.length };
      for (const e of firsts) e.pump = pump;
      batch.putPump(this.channel, this.group, firsts.map((e) => e.seq));
    }
    const send = (): void => {
      const at = this.options.now();
      for (const [member, deliveries] of out) {
        if (member.gone) continue;
        // Only deliveries still in flight to this member leave: one given back or handed on
        // while its attempt was being stored is no longer this delivery.
        const leaving = deliveries.filter((d) => {
          const entry = member.deliveries.get(d.deliveryId);
          if (!entry || entry.state !== "inflight") return false;
          entry.due = at + member.ackDeadlineMs;
          if (Number.isFinite(entry.due)) this.timed.add(entry);
          d.deadline = entry.due;
          return true;
        });
        if (leaving.length === 0) continue;
        this.options.observer.delivered(this.channel, this.group, leaving);
        member.sink.send(leaving);
      }
    };
    // The attempt is stored before the event leaves, so a crash never loses count of it.
    if (batch.length === 0) send();
    else void this.flush(batch).then(send);
    this.readMore();
  }

  /** True when a member has a free credit and an entry is ready for it. */
  private sendable(): boolean {
    const any = this.nextReady(this.unassigned) !== undefined;
    for (const m of this.memberOrder) {
      if (m.credits.inflight < m.credits.window && (any || this.nextReady(m.queue))) return true;
    }
    return false;
  }

  /** Reads ahead when the log has unread events and memory has room. */
  private readMore(): void {
    if (this.filling || this.entries.size >= this.options.maxPending / 2) return;
    if (this.readPos > this.log.head(this.channel).last) return;
    // Otherwise fill would stop at once, and pump again.
    if (!this.readRoom()) return;
    this.wake();
  }

  /**
   * How much more read-ahead may hold: at most maxPending sequences past the cursor (which
   * also bounds the acks held above it), maxPendingBytes of events, and what the shared
   * budget has room for (only what free credits can take while it is pressed); undefined
   * when full. Blocked by the budget, the group reads again once bytes are given back.
   */
  private readRoom(): { events: number; bytes: number } | undefined {
    let events = this.record.ackedThrough + this.options.maxPending - this.readPos + 1;
    const own = this.options.maxPendingBytes - this.pendingBytes;
    if (events < 1 || own <= 0) return undefined;
    const bytes = Math.min(own, this.budget.room(this.pendingBytes));
    if (bytes <= 0) return this.waitForBudget();
    if (this.budget.pressed) {
      // Ready entries already held count against the credits (dropped ones still queued too: fewer read).
      let wanted = -this.unassigned.length;
      for (const m of this.memberOrder) wanted += Math.max(0, m.credits.window - m.credits.inflight) - m.queue.length;
      if (wanted <= 0 && this.pendingBytes > 0) return this.waitForBudget();
      events = Math.min(events, Math.max(1, wanted));
    }
    return { events, bytes };
  }

  private waitForBudget(): undefined {
    if (!this.budgetWait) {
      this.budgetWait = true;
      this.budget.wait(() => {
        this.budgetWait = false;
        this.wake();
      });
    }
    return undefined;
  }

  /**
   * Writes group state. While the log's disk is full the write waits for room (see
   * OriginLog.writeState), and attempts leave only once stored. A failed write is reported,
   * not thrown: memory is ahead of the disk then, and a restart redelivers from the disk's
   * older state (at least once still holds).
   */
  private async flush(batch: ReturnType<OriginLog["groupBatch"]>): Promise<void> {
    try {
      await batch.write();
    } catch (e) {
      if (!this.closed) this.options.onError(e);
    }
  }
}
