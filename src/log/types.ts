import type { ClassicLevel } from "classic-level";
import type { Observer } from "../ops/observer.js";
import type { Origin } from "./record.js";

/** How long and how much a channel keeps. The first limit reached removes the oldest events. */
export interface Retention {
  /** Events older than this (by append time) are removed, in ms. */
  maxAgeMs: number;
  /** When a channel's stored events exceed this many bytes, the oldest are removed. */
  maxBytes: number;
}

export interface EventLogOptions {
  /** Sync every append batch to disk before acking it (group commit). Default false. */
  fsync?: boolean;
  /** Re-publishing (source, id) within this window is a duplicate, in ms. Default 10 minutes. */
  dedupWindowMs?: number;
  /** Retention for channels without their own. Default 7 days and 1 GiB. */
  retention?: Retention;
  /** Retention per channel name, overriding the default. */
  channelRetention?: Record<string, Retention>;
  /** The clock, Unix ms. Tests may pass their own. */
  now?: () => number;
  /** Told what is stored, deduplicated and expired, and when the disk fills up and has room again. */
  observer?: Observer;
  /**
   * Appends that count against the quota (`AppendOptions.quota`: publishes) are refused with
   * STORAGE_QUOTA while the retained events take this many bytes or more (the sum of every
   * channel's `bytes`); retention frees room. 0 for no quota. Default 0.
   */
  maxStoredBytes?: number;
  /**
   * Most channels the log holds: channels with events (published and dead-letter channels
   * alike) and channels with a group (see holdChannels). An append that would make
   * one more is refused with TOO_MANY_CHANNELS. Default: no limit.
   */
  maxChannels?: number;
}

/** How an append is made. */
export interface AppendOptions {
  /**
   * Refused with RESOURCE_EXHAUSTED / STORAGE_QUOTA while the log holds `maxStoredBytes`: set
   * for publishes. Relay copies, dead letters and redrives carry events the mesh already
   * accepted, and are stored past the quota.
   */
  quota?: boolean;
}

/** Why the log refuses appends for now: the disk is full. */
export interface DiskFull {
  /** Since when, Unix ms. */
  since: number;
  /** The error of the write that failed (the latest one while the log probes). */
  message: string;
}

/** One event to append: its raw bytes and the fields the log indexes. */
export interface AppendEntry {
  channel: string;
  source: string;
  id: string;
  key: string;
  bytes: Uint8Array;
  /** For a relay copy of an event another sidecar published: that sidecar and its sequence. */
  origin?: Origin | undefined;
  /**
   * For an event addressed to one group of the channel (a relay copy held for the group, or
   * a redriven dead letter): that group. Every other group skips it.
   */
  onlyGroup?: string | undefined;
  /** For a relay copy: the group's copy epoch (see relayIdentity). */
  copyEpoch?: number | undefined;
  /** For a relay copy: the group's attempts before it was forwarded here (see StoredEvent). */
  priorAttempts?: number | undefined;
}

/** What happened to one appended event. */
export interface AppendResult {
  sequence: number;
  duplicate: boolean;
}

/** A channel's position and counters. */
export interface ChannelHead {
  /** The oldest retained sequence; last + 1 when the channel is empty. */
  first: number;
  /** The newest sequence; 0 before the first event. */
  last: number;
  /** Bytes of the retained records. */
  bytes: number;
  /** Events removed by retention, ever. */
  expired: number;
}

export type Db = ClassicLevel<string, Uint8Array>;
export type ChainedBatch = ReturnType<Db["batch"]>;

/** One change of state kept beside the events (group state), as a batch collects it. */
export type StateOp = { type: "put"; key: string; value: Uint8Array } | { type: "del"; key: string };

/**
 * The part of the log's main database lent to the state kept beside the events (delivery's
 * group state, under keys of its own): reads, and writes that wait, in order, while the
 * disk is full.
 */
export interface StateStore {
  readonly db: Pick<Db, "get" | "put" | "del" | "iterator" | "keys" | "clear" | "batch">;
  /** One LevelDB write of `ops`; while the disk is full it waits, in order, or with `wait` false is refused (see DiskWatch). */
  write(ops: StateOp[], wait?: boolean): Promise<void>;
  /** Whether the log is closed. */
  readonly closed: boolean;
}

/** An empty head: a channel never written. */
export const emptyHead = (): ChannelHead => ({ first: 1, last: 0, bytes: 0, expired: 0 });

/**
 * How the log's LevelDB is sized. The memtable (two while one is flushed) and the block cache
 * are native memory, and the write-ahead log a restart replays is as large as a memtable:
 * LevelDB's own 4 MiB and 8 MiB keep the resident memory and a restart's replay small, and
 * larger ones do not append faster. Larger files mean fewer of them to open and compact.
 */
export const LEVELDB_OPTIONS = {
  writeBufferSize: 4 * 1024 * 1024,
  cacheSize: 8 * 1024 * 1024,
  maxFileSize: 16 * 1024 * 1024,
} as const;
