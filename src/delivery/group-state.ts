import { logClosed } from "../log/disk-full.js";
import { prefixEnd, seqOfKey } from "../log/keys.js";
import type { StateOp, StateStore } from "../log/types.js";
import { ackedKey, ackedPrefix, deadLetterMarksKey, groupKey, inflightKey, inflightPrefix, markKey, pumpPrefix } from "./group-keys.js";
import type { StartAt } from "./types.js";

/** A group's durable state, as stored. */
export interface GroupRecord {
  channel: string;
  group: string;
  /** Every sequence up to and including this one is done for the group. */
  ackedThrough: number;
  maxAttempts: number;
  deadLetterChannel: string;
  /** Events retention removed before the group had finished them. */
  expiredUnacked: number;
  /** When the group was created (here or, for a group learnt from a peer, where it was), Unix ms. */
  createdAt?: number | undefined;
  /** Where the group started when it was created. */
  start?: StartAt | undefined;
  /** The epoch of the relay copies held for the group (see relayIdentity); 0 when unset. */
  copyEpoch?: number | undefined;
}

/**
 * Which dead letters of one group in one dead-letter channel an operator has handled
 * (redriven or purged): every one up to `through`, and those in `handled` above it.
 */
export interface DeadLetterMarks {
  /** Every dead-letter channel sequence up to and including this one is handled (or not the group's). */
  through: number;
  /** Handled sequences above `through`, ascending. */
  handled: number[];
}

/** A delivery in flight, as stored, so a restart redelivers instead of forgetting. */
export interface InflightRecord {
  sequence: number;
  /** Deliveries made so far. */
  attempt: number;
}

/** A group's state on open: its record, the sequences acked above the cursor, in-flight, and its attempt mark. */
export interface LoadedGroup {
  record: GroupRecord;
  acked: number[];
  inflight: InflightRecord[];
  /** First attempts are counted through this sequence (see AttemptRecords); at least the cursor. */
  mark: number;
}

/** Where group state is written: one LevelDB write, held back in order while the disk is full (unless `wait` is false: refused then). */
export interface StateWriter {
  write(ops: StateOp[], wait?: boolean): Promise<void>;
}

/**
 * The durable state of the groups reading the log (cursors, acks above them, attempts in
 * flight, dead-letter marks), kept in the log's main database beside the heads, through
 * the handle the log lends it (StateStore).
 */
export class GroupState {
  private readonly db: StateStore["db"];

  constructor(private readonly store: StateStore) {
    this.db = store.db;
  }

  /** Every stored group, with its acked and in-flight entries above its cursor, and its attempt mark. */
  async loadGroups(): Promise<LoadedGroup[]> {
    const out: LoadedGroup[] = [];
    for await (const [, value] of this.db.iterator({ gte: "g!", lt: prefixEnd("g!") })) {
      const record = JSON.parse(Buffer.from(value).toString("utf8")) as GroupRecord;
      // From the cursor on: below it everything is done, and the entries of a backlog just
      // drained are a million deletes that LevelDB has not compacted away yet, which an
      // iterator from the prefix would step over one by one.
      const above = record.ackedThrough + 1;
      const acked: number[] = [];
      for await (const key of this.db.keys({
        gte: ackedKey(record.channel, record.group, above),
        lt: prefixEnd(ackedPrefix(record.channel, record.group)),
      })) {
        acked.push(seqOfKey(key));
      }
      const inflight: InflightRecord[] = [];
      const recorded = new Set<number>();
      for await (const [key, v] of this.db.iterator({
        gte: inflightKey(record.channel, record.group, above),
        lt: prefixEnd(inflightPrefix(record.channel, record.group)),
      })) {
        const sequence = seqOfKey(key);
        const attempt = Number(Buffer.from(v).toString("utf8"));
        recorded.add(sequence);
        // "0": given back after a first attempt the mark counts; none counts.
        inflight.push({ sequence, attempt: Number.isFinite(attempt) ? attempt : 1 });
      }
      // Pump records (written by earlier releases) become one in-flight record per first
      // attempt still open.
      const done = new Set(acked);
      const convert = this.db.batch();
      for await (const [key, v] of this.db.iterator({ gte: pumpPrefix(record.channel, record.group), lt: prefixEnd(pumpPrefix(record.channel, record.group)) })) {
        for (const sequence of pumpSequences(v)) {
          if (sequence < above || done.has(sequence) || recorded.has(sequence)) continue;
          recorded.add(sequence);
          inflight.push({ sequence, attempt: 1 });
          convert.put(inflightKey(record.channel, record.group, sequence), attemptValue(1));
        }
        convert.del(key);
      }
      if (convert.length > 0) await convert.write();
      else await convert.close();
      const mark = await this.db.get(markKey(record.channel, record.group));
      const through = mark === undefined ? 0 : Number(Buffer.from(mark).toString("utf8"));
      out.push({ record, acked, inflight, mark: Math.max(record.ackedThrough, Number.isSafeInteger(through) ? through : 0) });
    }
    return out;
  }

  /**
   * Brings each group's attempt mark down to its channel's last sequence (`last`), in one
   * write, before anything is delivered or appended: a mark raised past the last sequence at
   * a stop counts sequences that new appends take again, events never delivered (see
   * AttemptRecords).
   */
  async clampMarks(groups: LoadedGroup[], last: (channel: string) => number): Promise<void> {
    const batch = this.batch();
    for (const g of groups) {
      const through = Math.max(g.record.ackedThrough, last(g.record.channel));
      if (g.mark <= through) continue;
      g.mark = through;
      batch.putMark(g.record.channel, g.record.group, through);
    }
    await batch.write();
  }

  /** The dead letters of `group` (of `channel`) in `deadLetterChannel` an operator has handled. */
  async deadLetterMarks(deadLetterChannel: string, channel: string, group: string): Promise<DeadLetterMarks> {
    const value = await this.db.get(deadLetterMarksKey(deadLetterChannel, channel, group));
    if (value === undefined) return { through: 0, handled: [] };
    return JSON.parse(Buffer.from(value).toString("utf8")) as DeadLetterMarks;
  }

  /** Stores what `deadLetterMarks` reads. */
  async putDeadLetterMarks(deadLetterChannel: string, channel: string, group: string, marks: DeadLetterMarks): Promise<void> {
    if (this.store.closed) throw logClosed();
    await this.db.put(deadLetterMarksKey(deadLetterChannel, channel, group), Buffer.from(JSON.stringify(marks)));
  }

  /** Removes every record of one group: its cursor, acks, attempts and mark. */
  async drop(channel: string, group: string): Promise<void> {
    if (this.store.closed) throw logClosed();
    await this.db.del(groupKey(channel, group));
    await this.db.del(markKey(channel, group));
    for (const prefix of [ackedPrefix(channel, group), inflightPrefix(channel, group), pumpPrefix(channel, group)]) {
      await this.db.clear({ gte: prefix, lt: prefixEnd(prefix) });
    }
  }

  /** Starts a batch of group-state changes, written together by `write()`. */
  batch(): GroupBatch {
    return new GroupBatch(this.store);
  }
}

/**
 * Changes to group state, applied atomically by `write()` (through a StateWriter,
 * which holds them back, in order, while the disk is full).
 */
export class GroupBatch {
  private readonly ops: StateOp[] = [];
  private size = 0;
  /** Group records to put, by key, encoded once at write: an ack batch advances a cursor many times. */
  private groups: Map<string, GroupRecord> | undefined;

  constructor(private readonly writer: StateWriter) {}

  private put(key: string, value: Uint8Array): void {
    this.ops.push({ type: "put", key, value });
    this.size++;
  }

  private del(key: string): void {
    this.ops.push({ type: "del", key });
    this.size++;
  }

  /** Puts a group's record; when one batch puts the same group again, the last record wins. */
  putGroup(record: GroupRecord): this {
    const key = groupKey(record.channel, record.group);
    this.groups ??= new Map();
    if (!this.groups.has(key)) this.size++;
    this.groups.set(key, record);
    return this;
  }
  putAcked(channel: string, group: string, seq: number): this {
    this.put(ackedKey(channel, group, seq), EMPTY);
    return this;
  }
  delAcked(channel: string, group: string, seq: number): this {
    this.del(ackedKey(channel, group, seq));
    return this;
  }
  putInflight(channel: string, group: string, seq: number, attempt: number): this {
    this.put(inflightKey(channel, group, seq), attemptValue(attempt));
    return this;
  }
  delInflight(channel: string, group: string, seq: number): this {
    this.del(inflightKey(channel, group, seq));
    return this;
  }
  /** Puts a group's attempt mark (see AttemptRecords): only one write that puts it may be under way at a time. */
  putMark(channel: string, group: string, through: number): this {
    this.put(markKey(channel, group), Buffer.from(String(through)));
    return this;
  }
  get length(): number {
    return this.size;
  }
  /** Writes the changes in one LevelDB write; while the disk is full it waits for room, or with `wait` false is refused. */
  async write(wait = true): Promise<void> {
    if (this.size === 0) return;
    if (this.groups) {
      const groups = this.groups;
      this.groups = undefined;
      for (const [key, record] of groups) this.ops.push({ type: "put", key, value: Buffer.from(JSON.stringify(record)) });
    }
    await this.writer.write(this.ops, wait);
  }
}

const EMPTY = new Uint8Array(0);

/** The sequences of a pump record (p!, see group-keys.ts). */
function pumpSequences(value: Uint8Array): number[] {
  const buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  const out: number[] = [];
  for (let i = 0; i + 8 <= buf.length; i += 8) out.push(buf.readDoubleLE(i));
  return out;
}

/** In-flight record values by attempt, made once: LevelDB copies a value when it is put. */
const ATTEMPT_VALUES = Array.from({ length: 64 }, (_, i) => Buffer.from(String(i)));
const attemptValue = (attempt: number): Uint8Array => ATTEMPT_VALUES[attempt] ?? Buffer.from(String(attempt));

