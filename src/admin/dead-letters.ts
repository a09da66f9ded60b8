import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Reason, exhausted, invalid, notFound } from "../contract/errors.js";
import { checkChannel, checkGroup } from "../contract/validate.js";
import type { DeliveryEngine } from "../delivery/delivery-engine.js";
import { type Event, EventSchema } from "../gen/weft/v1/event_pb.js";
import type { DeadLetterMarks } from "../delivery/group-state.js";
import type { EventLog } from "../log/event-log.js";
import { type StoredEvent, redriveIdentity } from "../log/record.js";

/** One dead letter of a group, as this sidecar stores it. */
export interface DeadLetter {
  /** Its sequence in the dead-letter channel at this sidecar: names it for redrive and purge. */
  sequence: number;
  /** When it was dead-lettered (stored in the dead-letter channel), Unix ms. */
  time: number;
  /**
   * The event as stored in the dead-letter channel: `channel` is the dead-letter channel,
   * and the "weft.dead_letter.*" attributes say why, after how many attempts, and from where.
   */
  event: Event;
}

/** A page of a group's dead letters. */
export interface DeadLetterPage {
  /** The group's dead-letter channel. */
  deadLetterChannel: string;
  /** Pending dead letters (neither redriven nor purged), oldest first. */
  deadLetters: DeadLetter[];
  /** Pass as `after` for the next page; 0 when there are no more. */
  nextAfter: number;
}

/** One redriven dead letter. */
export interface Redriven {
  /** Its sequence in the dead-letter channel. */
  deadLetterSequence: number;
  /** The event's new sequence in the group's channel at this sidecar. */
  sequence: number;
  /** Already redriven within the dedup window (a repeat after a crash): stored once. */
  duplicate: boolean;
}

/** Limits of the dead-letter operations. */
export const DEAD_LETTER_LIMITS = {
  /** Dead letters per page: the default and the most. */
  page: { default: 100, max: 1000 },
  /** Dead letters one redrive of "all" handles: the default and the most. */
  redrive: { default: 1000, max: 10_000 },
  /** Sequences named in one redrive or purge. */
  sequences: 10_000,
  /** Events of the dead-letter channel one page or count reads. */
  scan: 10_000,
} as const;

const READ_CHUNK = 256;

/** What a dead-letter channel holds at one sequence: the stored record and its event, if readable. */
interface Read {
  stored: StoredEvent;
  event: Event | undefined;
}

/**
 * A group's dead letters at this sidecar: lists, redrives and purges them.
 *
 * Dead letters are events of the group's dead-letter channel (with "weft.dead_letter.group"
 * and ".channel" naming the group), stored by the sidecar whose members were given the
 * attempts. Which ones an operator has handled is kept apart from the log (DeadLetterMarks):
 *
 * - **Redrive** stores each dead letter again as a new event of the group's channel,
 *   addressed to that group only (DeliveryEngine.appendForGroup): the group receives it like
 *   any event (attempts from 1, per-key order behind events already stored, forwarded to
 *   its members behind peers); the channel's other groups skip it. The event is the
 *   original without "weft.dead_letter.*", plus "weft.redrive.group" and
 *   "weft.redrive.from" ("DEAD_LETTER_CHANNEL#SEQUENCE"), deduplicated per dead letter.
 * - **Purge** marks dead letters handled without sending them anywhere.
 *
 * Either way the dead letter is no longer listed; the dead-letter channel's events stay in
 * the log until retention removes them. Operations on one group run one at a time.
 */
export class DeadLetters {
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(
    private readonly log: EventLog,
    private readonly engine: DeliveryEngine,
  ) {}

  /**
   * A page of the group's pending dead letters, oldest first, after dead-letter channel
   * sequence `after` (0 for the first page). Reads at most DEAD_LETTER_LIMITS.scan events.
   * @throws WeftError INVALID_ARGUMENT for bad names or limits, NOT_FOUND for an unknown group.
   */
  async list(channel: string, group: string, options: { after?: number; limit?: number } = {}): Promise<DeadLetterPage> {
    const dlq = this.deadLetterChannel(channel, group);
    const limit = checkLimit(options.limit, DEAD_LETTER_LIMITS.page, "limit");
    const after = options.after ?? 0;
    if (!Number.isSafeInteger(after) || after < 0) throw invalid(Reason.INVALID_SEQUENCE, "after_sequence", `after_sequence ${after} is not a sequence; use 0 or a sequence from an earlier page`);
    const marks = await this.engine.state.deadLetterMarks(dlq, channel, group);
    const pending = pendingTest(marks, channel, group);
    const deadLetters: DeadLetter[] = [];
    let scanned = 0;
    let nextAfter = 0;
    for await (const r of this.read(dlq, Math.max(after, marks.through) + 1, this.log.head(dlq).last)) {
      if (deadLetters.length >= limit || scanned >= DEAD_LETTER_LIMITS.scan) {
        nextAfter = r.stored.sequence - 1;
        break;
      }
      scanned++;
      if (pending(r)) deadLetters.push({ sequence: r.stored.sequence, time: r.stored.appendedAt, event: r.event! });
    }
    return { deadLetterChannel: dlq, deadLetters, nextAfter };
  }

  /**
   * How many pending dead letters the group has here, counted among at most
   * DEAD_LETTER_LIMITS.scan events of the dead-letter channel (`more` when it stopped there).
   */
  async count(channel: string, group: string): Promise<{ count: number; more: boolean }> {
    const dlq = this.deadLetterChannel(channel, group);
    const marks = await this.engine.state.deadLetterMarks(dlq, channel, group);
    const pending = pendingTest(marks, channel, group);
    let count = 0;
    let scanned = 0;
    for await (const r of this.read(dlq, marks.through + 1, this.log.head(dlq).last)) {
      if (scanned++ >= DEAD_LETTER_LIMITS.scan) return { count, more: true };
      if (pending(r)) count++;
    }
    return { count, more: false };
  }

  /**
   * Redrives dead letters to the group that dead-lettered them (see the class comment):
   * those named by `sequences` (each must be pending, or nothing happens), or else every
   * pending one, oldest first, at most `limit` (`more` says whether others remain).
   * @throws WeftError INVALID_ARGUMENT, NOT_FOUND (unknown group, or a sequence that is not a
   *   pending dead letter), RESOURCE_EXHAUSTED (too many sequences), UNAVAILABLE (stopping).
   */
  async redrive(channel: string, group: string, options: { sequences?: readonly number[]; limit?: number } = {}): Promise<{ redriven: Redriven[]; more: boolean }> {
    const dlq = this.deadLetterChannel(channel, group);
    const named = options.sequences ?? [];
    const limit = checkLimit(options.limit, DEAD_LETTER_LIMITS.redrive, "limit");
    return this.exclusive(dlq, channel, group, async () => {
      const marks = await this.engine.state.deadLetterMarks(dlq, channel, group);
      let chosen: Read[];
      let more = false;
      if (named.length > 0) {
        chosen = await this.named(dlq, channel, group, marks, named);
      } else {
        chosen = [];
        const pending = pendingTest(marks, channel, group);
        for await (const r of this.read(dlq, marks.through + 1, this.log.head(dlq).last)) {
          if (!pending(r)) continue;
          if (chosen.length >= limit) {
            more = true;
            break;
          }
          chosen.push(r);
        }
      }
      if (chosen.length === 0) return { redriven: [], more };
      const entries = chosen.map(({ stored, event }) => {
        const from = `${dlq}#${stored.sequence}`;
        const original = event!;
        original.channel = channel;
        for (const name of Object.keys(original.attributes)) {
          if (name.startsWith("weft.dead_letter.") || name.startsWith("weft.redrive.")) delete original.attributes[name];
        }
        original.attributes["weft.redrive.group"] = group;
        original.attributes["weft.redrive.from"] = from;
        return { ...redriveIdentity(group, from), key: original.key, bytes: toBinary(EventSchema, original) };
      });
      const results = await this.engine.appendForGroup(channel, group, entries);
      await this.mark(dlq, channel, group, marks, chosen.map((r) => r.stored.sequence));
      const redriven = chosen.map((r, i) => ({ deadLetterSequence: r.stored.sequence, sequence: results[i]!.sequence, duplicate: results[i]!.duplicate }));
      return { redriven, more };
    });
  }

  /**
   * Purges dead letters: those named by `sequences` (each must be pending, or nothing
   * happens), or else every pending one. Resolves with how many were purged. They are no
   * longer listed and cannot be redriven; the log keeps the events until retention.
   * @throws WeftError like `redrive`.
   */
  async purge(channel: string, group: string, options: { sequences?: readonly number[] } = {}): Promise<number> {
    const dlq = this.deadLetterChannel(channel, group);
    const named = options.sequences ?? [];
    return this.exclusive(dlq, channel, group, async () => {
      const marks = await this.engine.state.deadLetterMarks(dlq, channel, group);
      if (named.length > 0) {
        const chosen = await this.named(dlq, channel, group, marks, named);
        await this.mark(dlq, channel, group, marks, chosen.map((r) => r.stored.sequence));
        return chosen.length;
      }
      const to = this.log.head(dlq).last;
      const pending = pendingTest(marks, channel, group);
      let purged = 0;
      for await (const r of this.read(dlq, marks.through + 1, to)) if (pending(r)) purged++;
      if (to > marks.through) {
        await this.engine.state.putDeadLetterMarks(dlq, channel, group, { through: to, handled: marks.handled.filter((s) => s > to) });
      }
      return purged;
    });
  }

  /** The group's dead-letter channel. @throws WeftError for bad names or an unknown group. */
  deadLetterChannel(channel: string, group: string): string {
    checkChannel(channel, "channel");
    checkGroup(group, "group");
    const found = this.engine.describeGroups().find((g) => g.channel === channel && g.group === group);
    if (!found) {
      throw notFound(Reason.GROUP_NOT_FOUND, "group", `this sidecar has no group ${JSON.stringify(group)} of channel ${JSON.stringify(channel)}; list the channel's groups with ListGroups (weft groups CHANNEL)`);
    }
    return found.deadLetterChannel;
  }

  /** The named dead letters, each pending. @throws WeftError for a bad or unknown sequence. */
  private async named(dlq: string, channel: string, group: string, marks: DeadLetterMarks, sequences: readonly number[]): Promise<Read[]> {
    if (sequences.length > DEAD_LETTER_LIMITS.sequences) {
      throw exhausted(Reason.BATCH_TOO_LARGE, "sequences", `${sequences.length} sequences named; at most ${DEAD_LETTER_LIMITS.sequences} per request`);
    }
    sequences.forEach((s, i) => {
      if (!Number.isSafeInteger(s) || s < 1) throw invalid(Reason.INVALID_SEQUENCE, `sequences[${i}]`, `sequences[${i}] is ${s}; a dead letter's sequence is a whole number from 1`);
    });
    const unique = [...new Set(sequences)].sort((a, b) => a - b);
    const stored = await this.log.get(dlq, unique);
    const pending = pendingTest(marks, channel, group);
    return unique.map((sequence, i) => {
      const s = stored[i];
      const r: Read | undefined = s && { stored: s, event: decode(s.bytes) };
      if (!r || !pending(r)) {
        throw notFound(
          Reason.DEAD_LETTER_NOT_FOUND,
          `sequences[${sequences.indexOf(sequence)}]`,
          `${dlq}#${sequence} is not a pending dead letter of ${channel}/${group} at this sidecar (already redriven or purged, another group's, removed by retention, or never stored); list them with ListDeadLetters (weft dlq list)`,
        );
      }
      return r;
    });
  }

  /** Marks sequences handled, and moves `through` past every handled (or foreign) one it can. */
  private async mark(dlq: string, channel: string, group: string, marks: DeadLetterMarks, sequences: number[]): Promise<void> {
    const handled = new Set([...marks.handled, ...sequences]);
    const head = this.log.head(dlq);
    let through = Math.max(marks.through, head.first - 1);
    let scanned = 0;
    for await (const r of this.read(dlq, through + 1, head.last)) {
      if (scanned++ >= DEAD_LETTER_LIMITS.scan) break;
      const ours = r.event !== undefined && isFor(r.event, channel, group);
      if (ours && !handled.has(r.stored.sequence)) break;
      through = r.stored.sequence;
    }
    const left = [...handled].filter((s) => s > through).sort((a, b) => a - b);
    await this.engine.state.putDeadLetterMarks(dlq, channel, group, { through, handled: left });
  }

  /** Reads the dead-letter channel from `from` through `to`, in order. */
  private async *read(dlq: string, from: number, to: number): AsyncGenerator<Read> {
    let pos = from;
    while (pos <= to) {
      const events = await this.log.read(dlq, pos, Math.min(READ_CHUNK, to - pos + 1));
      if (events.length === 0) return;
      for (const stored of events) yield { stored, event: decode(stored.bytes) };
      pos = events[events.length - 1]!.sequence + 1;
    }
  }

  /** Runs `work` after every earlier redrive or purge of the same group's dead letters. */
  private async exclusive<T>(dlq: string, channel: string, group: string, work: () => Promise<T>): Promise<T> {
    const key = `${dlq}!${channel}!${group}`;
    const run = (this.locks.get(key) ?? Promise.resolve()).then(work);
    const tail = run.catch(() => {});
    this.locks.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    }
  }
}

/** True for a dead letter of `group` of `channel`. */
function isFor(event: Event, channel: string, group: string): boolean {
  return event.attributes["weft.dead_letter.group"] === group && event.attributes["weft.dead_letter.channel"] === channel;
}

/** Tests whether a read dead-letter channel event is a pending dead letter of the group. */
function pendingTest(marks: DeadLetterMarks, channel: string, group: string): (r: Read) => boolean {
  const handled = new Set(marks.handled);
  return (r) => r.stored.sequence > marks.through && !handled.has(r.stored.sequence) && r.event !== undefined && isFor(r.event, channel, group);
}

function checkLimit(value: number | undefined, limits: { default: number; max: number }, field: string): number {
  if (value === undefined || value === 0) return limits.default;
  if (!Number.isSafeInteger(value) || value < 1 || value > limits.max) {
    throw invalid(Reason.INVALID_LIMIT, field, `${field} is ${value}; use 1 to ${limits.max} (0 means ${limits.default})`);
  }
  return value;
}

function decode(bytes: Uint8Array): Event | undefined {
  try {
    return fromBinary(EventSchema, bytes);
  } catch {
    return undefined;
  }
}
