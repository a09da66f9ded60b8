import { statfs } from "node:fs/promises";
import { status } from "@grpc/grpc-js";
import { Reason, WeftError } from "../contract/errors.js";
import type { Observer } from "../ops/observer.js";
import { PROBE_KEY } from "./keys.js";
import { type Db, type DiskFull, LEVELDB_OPTIONS, type StateOp } from "./types.js";

/** How often a log whose disk is full tries a write again, ms. */
export const DISK_PROBE_MS = 1000;
/**
 * A full disk counts as having room again once this much of it is free: each database is
 * then opened again (see DiskWatch.probe), which writes its memtables (up to two) to a table.
 */
const REOPEN_FREE_BYTES = 2 * LEVELDB_OPTIONS.writeBufferSize + 1024 * 1024;
const PROBE_VALUE = Buffer.from("1");

/**
 * Whether `error` says the disk (or the user's disk quota) is full: ENOSPC or EDQUOT, or
 * LevelDB's "IO error: FILE: No space left on device".
 */
export function isDiskFull(error: unknown): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOSPC" || code === "EDQUOT" || /No space left on device|Disk quota exceeded/i.test(e.message)) return true;
  }
  return false;
}

export const logClosed = (): WeftError => new WeftError(status.UNAVAILABLE, Reason.LOG_CLOSED, "the log is closed");

/** Group state that could not be written for a full disk, waiting its turn. */
interface StalledWrite {
  /** Its place among every state write, in the order they were made. */
  order: number;
  ops: StateOp[];
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** What a probe needs of the log: its databases, and the repair of failed appends. */
export interface ProbeHost {
  readonly main: Db;
  readonly events: Db;
  readonly fsync: boolean;
  /** Sets right what failed append writes left (see EventStore.repair). */
  repair(): Promise<void>;
  /** Whether the log is closed. */
  readonly closed: boolean;
}

/**
 * The log's full-disk state, and the state writes (cursors, acks, attempts) made beside the
 * events. From the first write that failed for a full disk until a probe (every
 * DISK_PROBE_MS) finds both databases writable again, appends are refused with DISK_FULL
 * and state writes wait, in the order they were made: a cursor, an ack or an attempt is
 * late, never lost or written out of order. Nothing that was acked is lost: it is all on disk.
 */
export class DiskWatch {
  private full: DiskFull | undefined;
  private probing: NodeJS.Timeout | undefined;
  /** State writes made so far (each one's `order`). */
  private stateWrites = 0;
  /** State writes waiting for room on the disk, in the order they were made. */
  private readonly stalled: StalledWrite[] = [];

  constructor(
    private readonly dir: string,
    private readonly host: ProbeHost,
    private readonly observer: Observer,
    private readonly now: () => number,
    /** Runs a probe in the write loop, where no append is written meanwhile. */
    private readonly schedule: (probe: () => Promise<void>) => Promise<void>,
    /** Told when the log is writable again after a full disk. */
    private readonly onWritable: () => void,
  ) {}

  /** Set while the disk is full (a copy). */
  get state(): DiskFull | undefined {
    return this.full && { ...this.full };
  }

  get isFull(): boolean {
    return this.full !== undefined;
  }

  error(): WeftError {
    return new WeftError(
      status.RESOURCE_EXHAUSTED,
      Reason.DISK_FULL,
      `the disk of the log (${this.dir}) is full (${this.full?.message ?? "no space left on device"}); nothing was stored: publish again once it has room`,
    );
  }

  /**
   * What a failed write is reported as: a full disk starts the full state (and its probe)
   * and is DISK_FULL; any other error is itself.
   */
  failed(e: unknown): unknown {
    if (!isDiskFull(e) || this.host.closed) return e;
    const message = (e as Error).message;
    if (!this.full) {
      this.full = { since: this.now(), message };
      this.observer.diskFull(this.dir, true, message);
      this.probing = setInterval(() => void this.schedule(() => this.probe()).catch(() => {}), DISK_PROBE_MS);
      this.probing.unref();
    }
    return e instanceof WeftError ? e : this.error();
  }

  /**
   * Writes state changes in one LevelDB write of the main database. While the disk is full
   * they wait, in order, and are written once there is room (rejects with LOG_CLOSED if the
   * log closes first); with `wait` false they are refused with DISK_FULL instead.
   */
  writeState(ops: StateOp[], wait = true): Promise<void> {
    const order = ++this.stateWrites;
    if (this.full || this.stalled.length > 0) return wait ? this.stall(order, ops) : Promise.reject(this.error());
    return this.writeOps(ops).catch((e: unknown) => {
      if (this.host.closed || !isDiskFull(e)) throw e;
      const error = this.failed(e);
      if (!wait) throw error;
      return this.stall(order, ops);
    });
  }

  /** One LevelDB write of `ops`, made afresh each time: a batch whose write failed cannot be written again. */
  private writeOps(ops: StateOp[]): Promise<void> {
    const batch = this.host.main.batch();
    for (const op of ops) {
      if (op.type === "put") batch.put(op.key, op.value);
      else batch.del(op.key);
    }
    return batch.write();
  }

  private stall(order: number, ops: StateOp[]): Promise<void> {
    if (this.host.closed) return Promise.reject(logClosed());
    return new Promise((resolve, reject) => {
      let at = this.stalled.length;
      while (at > 0 && this.stalled[at - 1]!.order > order) at--;
      this.stalled.splice(at, 0, { order, ops, resolve, reject });
    });
  }

  /**
   * Once the disk has REOPEN_FREE_BYTES free: opens both databases again, tries a small
   * write to each, writes the state that waited, in order, sets right the channels of failed
   * appends, and ends the full state. Runs in the write loop, so no append is written
   * meanwhile. Resolves true when the log is writable again.
   *
   * Why open them again: a write that failed for a full disk may have left part of itself at
   * the end of the database's write-ahead log, and LevelDB writes on past it as if it were
   * whole; the records written after it cannot be read when the log is replayed after a
   * crash, and acked events would be lost (test/disk-full.e2e.test.ts). Opened again, a
   * database replays its log into a table and starts a new one. It also clears LevelDB's
   * refusal of every write after a failed compaction. Reads fail while a database is closed;
   * readers are woken once the log is writable again (onWritable).
   */
  private async probe(): Promise<void> {
    if (!this.full || this.host.closed) return;
    try {
      const { bavail, bsize } = await statfs(this.dir);
      if (bavail * bsize < REOPEN_FREE_BYTES) return;
      for (const db of [this.host.events, this.host.main]) {
        await db.close();
        await db.open();
        await db.put(PROBE_KEY, PROBE_VALUE, { sync: this.host.fsync });
      }
      await this.writeStalled();
      await this.host.repair();
      // State written while the repair ran waited too: the full state ends only once none
      // waits, with no await between that check and the end (else it would wait forever).
      await this.writeStalled();
    } catch (e) {
      if (this.full) this.full.message = (e as Error).message;
      return;
    }
    const since = this.full.since;
    this.full = undefined;
    clearInterval(this.probing);
    this.probing = undefined;
    this.observer.diskFull(this.dir, false, `writable again after ${this.now() - since} ms`);
    this.onWritable();
  }

  /** Writes the state that waited for room, in the order it was made. */
  private async writeStalled(): Promise<void> {
    while (this.stalled.length > 0) {
      const write = this.stalled[0]!;
      await this.writeOps(write.ops);
      this.stalled.shift();
      write.resolve();
    }
  }

  /** Stops probing and refuses what waits (the log closes). */
  close(): void {
    clearInterval(this.probing);
    const closing = logClosed();
    for (const write of this.stalled.splice(0)) write.reject(closing);
  }
}
