import type { EventLog } from "../log/event-log.js";
import type { StoredEvent } from "../log/record.js";
import type { Entry } from "./entry.js";
import type { GroupBatch, InflightRecord, LoadedGroup } from "./group-state.js";

/** What AttemptRecords needs of its group. */
export interface AttemptHost {
  readonly channel: string;
  readonly group: string;
  /** The group's cursor: every sequence up to it is done for the group. */
  ackedThrough(): number;
  /** The credits of the group's members together: the most deliveries one pump hands out. */
  credits(): number;
  batch(): GroupBatch;
  /** Writes a batch of the group's state; resolves false when the write failed (reported, not thrown). */
  write(batch: GroupBatch): Promise<boolean>;
}

/**
 * Most first attempts one raise of the attempt mark looks ahead by (c below), whatever the
 * members' credits: it bounds what a crash counts one attempt too many. A pump of more
 * first attempts than that waits for its raise, as it waits for the records of later ones.
 */
const MAX_AHEAD = 1024;

/**
 * The stored attempts of one group's deliveries, so that a restart redelivers with the next
 * attempt number instead of forgetting: a count may hold one attempt too many, never one
 * too few.
 *
 * First attempts are counted by the group's attempt mark M (t!, see group-keys.ts). The
 * invariant: an event of the group above the stored M without an in-flight record has never
 * been delivered. So a first attempt at or below it leaves without a write of its own, and
 * after a stop an event at or below M that is not done and has no in-flight record has had
 * at most one attempt: it counts one. Every other attempt (after the first, or of an entry
 * given back or restored) is an in-flight record (f!) of its own, which wins over the mark.
 *
 * The mark is raised ahead of need, with c = the members' credits (at most MAX_AHEAD), to 3c
 * past the highest first attempt handed out (the frontier). A write of the group's state
 * that is made anyway (an ack's) carries a raise once fewer than 2c are left under the mark,
 * at no cost; a pump that leaves fewer than c raises it in a write of its own, in the
 * background. One pump hands out at most c first attempts, so while a raise is written the
 * next pump still finds its first attempts under the stored mark: at a steady rate none
 * waits for a write. A first attempt above it waits for the raise that covers it.
 *
 * What a crash counts one attempt too many is the events up to M that had not gone: at most
 * 3c past the frontier, and those below it that were held back (behind their key, or read
 * ahead for a member without credits). A start brings M down to the channel's head first
 * (GroupState.clampMarks): sequences past it were never delivered, and new appends take them.
 * A clean stop writes the exact attempts instead (settle).
 *
 * One write that puts the mark is under way at a time, so the stored mark never goes back
 * (only settle brings it down, once no raise is made any more).
 */
export class AttemptRecords {
  /** The mark as stored. */
  private stored: number;
  /** The mark being written (above `stored`), or `stored`. */
  private target: number;
  /** The write of `target`, while under way. */
  private landing: Promise<boolean> | undefined;
  /** The highest first attempt handed out. */
  private frontier = 0;
  private closed = false;

  /** In-flight records found at start, of events not read since: sequence → attempts. */
  private readonly atStop = new Map<number, number>();

  constructor(
    private readonly host: AttemptHost,
    /** The mark at start: an event up to it without an in-flight record had one attempt, perhaps. */
    readonly restored: number,
    /** The in-flight records found at start (those of events already done are left out). */
    inflight: readonly InflightRecord[] = [],
  ) {
    this.stored = this.target = restored;
    const done = host.ackedThrough();
    for (const f of inflight) if (f.sequence > done) this.atStop.set(f.sequence, f.attempt);
  }

  /** Takes into a new entry what a stop left of its attempts: its in-flight record, or the mark's count. */
  restore(entry: Entry): void {
    const recorded = this.atStop.get(entry.seq);
    this.atStop.delete(entry.seq);
    if (recorded !== undefined) {
      entry.attempt = Math.max(entry.attempt, recorded);
      entry.recorded = true;
      entry.perEvent = true;
    } else if (entry.seq <= this.restored && entry.attempt === 0) {
      entry.attempt = 1;
      entry.perEvent = true;
      entry.byMark = true;
    }
  }

  /** Stores the entry's current attempt as its own in-flight record. */
  record(entry: Entry, batch: GroupBatch): void {
    batch.putInflight(this.host.channel, this.host.group, entry.seq, entry.attempt);
    entry.recorded = true;
  }

  /** A delivery came back unhandled: its attempt no longer counts (a record of "0" says so over the mark), and from now on its attempts are recorded one by one. */
  uncount(entry: Entry, batch: GroupBatch): void {
    entry.attempt--;
    this.record(entry, batch);
    entry.perEvent = true;
  }

  /** The entry had `attempts` in all (some made elsewhere): from now on its attempts are recorded one by one. */
  count(entry: Entry, attempts: number, batch: GroupBatch): void {
    entry.attempt = attempts;
    this.record(entry, batch);
    entry.perEvent = true;
  }

  /**
   * The attempts a stop left for an event not read since: its in-flight record, or 1 when
   * only the mark counts it (none for a copy forwarded after attempts elsewhere, whose
   * attempts here are all recorded); undefined for none, or once `told`.
   */
  atStart(event: StoredEvent): number | undefined {
    const recorded = this.atStop.get(event.sequence);
    if (recorded !== undefined) return recorded || undefined;
    return event.sequence <= this.restored && !event.priorAttempts ? 1 : undefined;
  }

  /** The attempts a stop left for `seq` were told to its origin: none are left to tell. */
  told(seq: number): void {
    this.atStop.set(seq, 0);
  }

  /** `seq` is done for the group unread (given up, skipped, or removed by retention): what a stop left of it goes. */
  forget(seq: number): void {
    this.atStop.delete(seq);
  }

  /** The entry is done for the group: its record goes. */
  finished(entry: Entry, batch: GroupBatch): void {
    if (entry.recorded) batch.delInflight(this.host.channel, this.host.group, entry.seq);
  }

  /** Writes `batch` (when it holds anything), with a raise of the mark when one is due. Resolves true once stored. */
  write(batch: GroupBatch): Promise<boolean> {
    if (batch.length === 0) return Promise.resolve(true);
    if (this.due(2)) return this.raise(batch, 0);
    return this.host.write(batch);
  }

  /**
   * First attempts up to `highest` (0 for none) were handed out, and the records of later
   * attempts put into `batch`. Returns what their sending waits for: undefined when nothing
   * (the stored mark covers them and `batch` is empty), else the writes that store them.
   */
  handedOut(highest: number, batch: GroupBatch): Promise<unknown> | undefined {
    if (highest > this.frontier) this.frontier = highest;
    if (highest <= this.stored) {
      if (batch.length > 0) return this.write(batch);
      if (highest > 0) this.keepAhead();
      return undefined;
    }
    const landing = this.landing;
    if (!landing) return this.raise(batch, highest);
    if (highest <= this.target) return Promise.all([landing, this.write(batch)]);
    // One raise at a time: the next once this one is stored.
    return landing.then(() => this.handedOut(highest, batch));
  }

  /** Raises the mark in the background when fewer than c first attempts are left under it (after a pump, or when members or credits came). */
  keepAhead(): void {
    if (this.due(1)) void this.raise(this.host.batch(), 0);
  }

  /**
   * For a clean stop: an in-flight record for each held entry whose attempt only the mark
   * counts, and the mark brought down to the cursor (not below the mark at start: what it
   * counted and was not delivered since stays so), so that the next start counts exactly.
   * A raise still under way may land after it, which counts more, never less. While the disk
   * is full nothing is written (the next start counts as after a crash). No raise after it.
   */
  settle(held: Iterable<Entry>): Promise<void> {
    this.closed = true;
    const batch = this.host.batch();
    for (const e of held) if (e.attempt > 0 && !e.recorded && !e.byMark) this.record(e, batch);
    const through = Math.max(this.host.ackedThrough(), this.restored);
    if (through < this.target) batch.putMark(this.host.channel, this.host.group, through);
    return batch.write(false).catch(() => {});
  }

  /** True when no raise is under way and fewer than `times` c first attempts are left under the mark past the frontier. */
  private due(times: number): boolean {
    const c = this.ahead();
    return c > 0 && !this.landing && !this.closed && this.target - Math.max(this.frontier, this.host.ackedThrough()) < times * c;
  }

  /** c: how many first attempts one pump may hand out (0 without members: nothing goes). */
  private ahead(): number {
    return Math.min(this.host.credits(), MAX_AHEAD);
  }

  /** Puts a raise into `batch` (covering `need` and 3c past the frontier) and writes it. */
  private raise(batch: GroupBatch, need: number): Promise<boolean> {
    if (this.closed) return this.host.write(batch);
    const through = Math.max(need, this.frontier, this.host.ackedThrough()) + 3 * Math.max(1, this.ahead());
    batch.putMark(this.host.channel, this.host.group, through);
    this.target = through;
    const landing = this.host.write(batch).then((stored) => {
      if (stored) this.stored = through;
      this.target = this.stored;
      this.landing = undefined;
      return stored;
    });
    this.landing = landing;
    return landing;
  }
}

/** Events read per step by attemptedCopies. */
const READ_STEP = 512;

/**
 * The relay copies of a loaded group that may have been in flight to members here when the
 * log was last closed (not done, and not trimmed): those with an attempt recorded, and those
 * the mark counts (see atStart), read from the log.
 */
export async function attemptedCopies(log: EventLog, loaded: LoadedGroup, isDone: (seq: number) => boolean): Promise<StoredEvent[]> {
  const { channel, group, ackedThrough } = loaded.record;
  const head = log.head(channel);
  const isCopy = (e: StoredEvent | undefined): e is StoredEvent => e !== undefined && e.origin !== undefined && e.onlyGroup === group && !isDone(e.sequence);
  const recorded = new Map(loaded.inflight.map((f) => [f.sequence, f.attempt]));
  const sent = [...recorded].filter(([s, attempt]) => attempt > 0 && s >= head.first).map(([s]) => s);
  const copies = sent.length > 0 ? (await log.get(channel, sent)).filter(isCopy) : [];
  const through = Math.min(loaded.mark, head.last);
  for (let pos = Math.max(ackedThrough + 1, head.first); pos <= through; ) {
    const events = await log.read(channel, pos, Math.min(READ_STEP, through - pos + 1));
    if (events.length === 0) break;
    for (const e of events) if (e.sequence <= through && !recorded.has(e.sequence) && !e.priorAttempts && isCopy(e)) copies.push(e);
    pos = events[events.length - 1]!.sequence + 1;
  }
  return copies;
}
