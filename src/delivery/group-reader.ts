import type { EventLog } from "../log/event-log.js";
import type { StoredEvent } from "../log/record.js";
import type { Entry } from "./entry.js";
import type { ReadAheadBudget } from "./read-ahead-budget.js";
import type { ReadyQueues } from "./ready-queues.js";

/** What a GroupReader needs of its group (the GroupDispatcher). */
export interface ReadTarget {
  readonly channel: string;
  readonly group: string;
  /** The group's cursor: every sequence up to it is done. */
  readonly ackedThrough: number;
  /** Entries held in memory (read and not done). */
  readonly held: number;
  /** The group's members, and what is ready for them. */
  readonly queues: ReadyQueues;
  /** True while the group reads: it has members and is not closed. */
  readonly reading: boolean;
  readonly closed: boolean;
  /** True when `seq` is done for the group, or held already. */
  known(seq: number): boolean;
  /** Takes a read event into the group; `ahead`: read past the window (see lookAhead). */
  admit(event: StoredEvent, ahead: boolean): void;
  /** Hands what is ready to the members. */
  pump(): void;
  /** Retention removed every event before `first`, some of them not done for the group. */
  trimmed(first: number): void;
  onError(error: unknown): void;
}

export interface ReadLimits {
  /** Most sequences held in memory past the cursor (the window), and most copies read ahead past it. */
  maxPending: number;
  /** Most event bytes held in memory by the window, and by the copies read ahead past it. */
  maxPendingBytes: number;
}

const READ_CHUNK = 512;
/** Most bytes one read takes from the budget (reserved while it runs). */
const READ_CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * Reads one group's channel ahead of its cursor, into the group, within bounds: at most
 * maxPending sequences past the cursor (which also bounds the acks held above it) and
 * maxPendingBytes of events, and what the sidecar's shared budget has room for (only what
 * free credits can take while it is pressed). Blocked by the budget, it reads again once
 * bytes are given back. One read runs at a time; a wake meanwhile reads again after it.
 */
export class GroupReader {
  /** The next sequence the window reads. */
  pos: number;
  /** The next sequence lookAhead reads, and what the copies it read take. */
  private aheadPos: number;
  private aheadBytes = 0;
  private aheadCount = 0;
  /** lookAhead stopped at its limits: it reads again once a copy it read is done. */
  private aheadFull = false;
  private pendingBytes = 0;
  /** Waiting for the budget to give bytes back (see ReadAheadBudget.wait). */
  private budgetWait = false;
  private filling = false;
  private refill = false;

  constructor(
    private readonly log: EventLog,
    private readonly target: ReadTarget,
    private readonly limits: ReadLimits,
    private readonly budget: ReadAheadBudget,
  ) {
    this.pos = target.ackedThrough + 1;
    this.aheadPos = this.pos;
  }

  /** An entry was taken into the group: its bytes are held. */
  took(entry: Entry): void {
    if (entry.ahead) {
      this.aheadBytes += entry.event.bytes.length;
      this.aheadCount++;
    } else {
      this.pendingBytes += entry.event.bytes.length;
    }
    this.budget.take(entry.event.bytes.length);
  }

  /** An entry is done (or gone): its bytes are given back. */
  released(entry: Entry): void {
    if (entry.ahead) {
      this.aheadBytes -= entry.event.bytes.length;
      this.aheadCount--;
      this.aheadFull = false;
    } else {
      this.pendingBytes -= entry.event.bytes.length;
    }
    this.budget.release(entry.event.bytes.length);
  }

  /** Retention removed everything before `first`: nothing before it is read any more. */
  skipTo(first: number): void {
    this.pos = Math.max(this.pos, first);
    this.aheadPos = Math.max(this.aheadPos, first);
  }

  /** New events may be there to read. */
  wake(): void {
    if (this.target.reading) void this.fill();
  }

  /** Reads ahead when the log has unread events and memory has room (see room and lookAhead). */
  readMore(): void {
    if (this.filling) return;
    const last = this.log.head(this.target.channel).last;
    if (this.target.held - this.aheadCount < this.limits.maxPending / 2 && this.pos <= last && this.room()) {
      this.wake();
    } else if (this.target.queues.mixed && !this.aheadFull && this.aheadCount < this.limits.maxPending / 2 && Math.max(this.aheadPos, this.pos) <= last) {
      this.wake();
    }
  }

  /** How much more the window may read now (events, bytes); undefined when it is full. */
  room(): { events: number; bytes: number } | undefined {
    let events = this.target.ackedThrough + this.limits.maxPending - this.pos + 1;
    const own = this.limits.maxPendingBytes - this.pendingBytes;
    if (events < 1 || own <= 0) return undefined;
    const bytes = Math.min(own, this.budget.room(this.pendingBytes));
    if (bytes <= 0) return this.waitForBudget();
    if (this.budget.pressed) {
      // Ready entries already held count against the credits (dropped ones still queued too: fewer read).
      const queues = this.target.queues;
      let wanted = -queues.unassigned;
      for (const m of queues.members) wanted += Math.max(0, m.window - m.deliveries.size) - m.queue.length;
      if (wanted <= 0 && this.pendingBytes > 0) return this.waitForBudget();
      events = Math.min(events, Math.max(1, wanted));
    }
    return { events, bytes };
  }

  /** Counts the unread events (past the window and what lookAhead read) for which `match` holds. */
  async countUnread(match: (event: StoredEvent) => boolean): Promise<number> {
    let count = 0;
    const last = this.log.head(this.target.channel).last;
    for (let pos = Math.max(this.pos, this.aheadPos); pos <= last; ) {
      const events = await this.log.read(this.target.channel, pos, READ_CHUNK, READ_CHUNK_BYTES);
      if (events.length === 0) break;
      for (const e of events) if (match(e)) count++;
      pos = events[events.length - 1]!.sequence + 1;
    }
    return count;
  }

  private async fill(): Promise<void> {
    if (this.filling) {
      this.refill = true;
      return;
    }
    this.filling = true;
    const target = this.target;
    try {
      do {
        this.refill = false;
        while (target.reading) {
          const head = this.log.head(target.channel);
          if (target.ackedThrough < head.first - 1) target.trimmed(head.first);
          if (this.pos > head.last) break;
          const room = this.room();
          if (!room) break;
          // Reserved while the read runs, so that groups reading at once share the budget.
          const bytes = Math.min(room.bytes, READ_CHUNK_BYTES);
          this.budget.take(bytes);
          let events: StoredEvent[];
          try {
            events = await this.log.read(target.channel, this.pos, Math.min(READ_CHUNK, room.events), bytes);
          } finally {
            this.budget.release(bytes);
          }
          if (events.length === 0) break;
          for (const event of events) target.admit(event, false);
          this.pos = events[events.length - 1]!.sequence + 1;
          target.pump();
        }
        await this.lookAhead();
      } while (this.refill);
    } catch (e) {
      if (!target.closed) target.onError(e);
    } finally {
      this.filling = false;
    }
    target.pump();
  }

  /**
   * Reads the relay copies held for the group past the window, for the local members,
   * while the group also has peer members. This sidecar's own events wait on the peers
   * they were forwarded to, and can fill the window; the copies past it must still be read,
   * or two sidecars could wait on each other for good: each one's window full of its own
   * events in flight to the other, whose copies of them lie past the other's window. A copy
   * depends on local members only, so reading copies breaks the cycle.
   *
   * Copies read here count against limits of their own (maxPending events, maxPendingBytes),
   * not the window's or the shared budget's room, which own events may have spent; other
   * events are left for the window. Copies done here are acks above the cursor until the
   * events before them are done.
   */
  private async lookAhead(): Promise<void> {
    const target = this.target;
    let pos = Math.max(this.aheadPos, this.pos);
    while (target.reading && target.queues.mixed && !this.aheadFull && pos <= this.log.head(target.channel).last) {
      const bytes = Math.max(1, Math.min(READ_CHUNK_BYTES, this.limits.maxPendingBytes - this.aheadBytes));
      const events = await this.log.read(target.channel, pos, READ_CHUNK, bytes);
      if (events.length === 0) break;
      for (const event of events) {
        if (event.sequence < this.pos) continue; // read by the window meanwhile
        if (event.origin && event.onlyGroup === target.group && !target.known(event.sequence)) {
          const full = this.aheadCount >= this.limits.maxPending || this.aheadBytes + event.bytes.length > this.limits.maxPendingBytes;
          if (this.aheadCount > 0 && full) {
            this.aheadFull = true;
            break;
          }
          target.admit(event, true);
        }
        pos = event.sequence + 1;
      }
      this.aheadPos = Math.max(this.aheadPos, pos);
      target.pump();
    }
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
}
