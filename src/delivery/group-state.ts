import { logClosed } from "../log/disk-full.js";
import { prefixEnd, seqOfKey } from "../log/keys.js";
import type { ChainedBatch, StateOp, StateStore } from "../log/types.js";
import { ackedKey, ackedPrefix, deadLetterMarksKey, groupKey, inflightKey, inflightPrefix, pumpKey, pumpPrefix } from "./group-keys.js";
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

/** A group's state on open: its record, the sequences acked above the cursor, in-flight. */
export interface LoadedGroup {
  record: GroupRecord;
  acked: number[];
  inflight: InflightRecord[];
}

/** Where group state is written: one LevelDB write, held back in order while the disk is full. */
export interface StateWriter {
  write(ops: StateOp[]): Promise<void>;
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

  /** Every stored group, with its acked and in-flight entries above its cursor. */
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
        // "0": given back after a first attempt recorded in a pump record; none counts.
        inflight.push({ sequence, attempt: Number.isFinite(attempt) ? attempt : 1 });
      }
      // Pump records become one in-flight record per first attempt still open, so a
      // dispatcher only tracks the pump records it writes itself.
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
      out.push({ record, acked, inflight });
    }
    return out;
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

  /** Removes every record of one group: its cursor, acks, attempts and pump records. */
  async drop(channel: string, group: string): Promise<void> {
    if (this.store.closed) throw logClosed();
    await this.db.del(groupKey(channel, group));
    for (const prefix of [ackedPrefix(channel, group), inflightPrefix(channel, group), pumpPrefix(channel, group)]) {
      await this.db.clear({ gte: prefix, lt: prefixEnd(prefix) });
    }
  }

  /** Starts a batch of group-state changes, written together by `write()`. */
  batch(within?: ChainedBatch): GroupBatch {
    return new GroupBatch(this.store, within);
  }
}

/**
 * Changes to group state, applied atomically by `write()` (through a StateWriter,
 * which holds them back, in order, while the disk is full). Within an append group (see
 * the log's write stage) they go straight into the group's LevelDB batch instead.
 */
export class GroupBatch {
  private readonly ops: StateOp[] = [];
  private size = 0;
  /** Group records to put, by key, encoded once at write: an ack batch advances a cursor many times. */
  private groups: Map<string, GroupRecord> | undefined;
  /**
   * `within`: an append group's batch, which the log writes (see WriteStage); this
   * batch then only adds to it, and is never written by itself.
   */
  constructor(
    private readonly writer: StateWriter,
    private readonly within?: ChainedBatch,
  ) {}

  private put(key: string, value: Uint8Array): void {
    if (this.within) this.within.put(key, value);
    else this.ops.push({ type: "put", key, value });
  }

  private del(key: string): void {
    if (this.within) this.within.del(key);
    else this.ops.push({ type: "del", key });
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
    this.size++;
    return this;
  }
  delAcked(channel: string, group: string, seq: number): this {
    this.del(ackedKey(channel, group, seq));
    this.size++;
    return this;
  }
  putInflight(channel: string, group: string, seq: number, attempt: number): this {
    this.put(inflightKey(channel, group, seq), attemptValue(attempt));
    this.size++;
    return this;
  }
  /** Records first attempts sent together: one entry for all of `seqs` (in-flight entries win over it). */
  putPump(channel: string, group: string, seqs: readonly number[]): this {
    const value = Buffer.allocUnsafe(seqs.length * 8);
    seqs.forEach((seq, i) => value.writeDoubleLE(seq, i * 8));
    this.put(pumpKey(channel, group, seqs[0]!), value);
    this.size++;
    return this;
  }
  /** Deletes a pump record once every sequence in it is done. */
  delPump(channel: string, group: string, firstSeq: number): this {
    this.del(pumpKey(channel, group, firstSeq));
    this.size++;
    return this;
  }
  delInflight(channel: string, group: string, seq: number): this {
    this.del(inflightKey(channel, group, seq));
    this.size++;
    return this;
  }
  get length(): number {
    return this.size;
  }
  async write(): Promise<void> {
    if (this.within) throw new Error("a GroupBatch within an append group is written with it");
    if (this.size === 0) return;
    this.stage();
    await this.writer.write(this.ops);
  }
  /** Puts the group records into the batch (write() does it; the log does it for a batch within an append group). */
  stage(): void {
    if (!this.groups) return;
    for (const [key, record] of this.groups) this.put(key, Buffer.from(JSON.stringify(record)));
    this.groups = undefined;
  }
}

const EMPTY = new Uint8Array(0);

/** The sequences of a pump record (GroupBatch.putPump). */
function pumpSequences(value: Uint8Array): number[] {
  const buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  const out: number[] = [];
  for (let i = 0; i + 8 <= buf.length; i += 8) out.push(buf.readDoubleLE(i));
  return out;
}

/** In-flight record values by attempt, made once: LevelDB copies a value when it is put. */
const ATTEMPT_VALUES = Array.from({ length: 64 }, (_, i) => Buffer.from(String(i)));
const attemptValue = (attempt: number): Uint8Array => ATTEMPT_VALUES[attempt] ?? Buffer.from(String(attempt));

