/**
 * The LevelDB key layout of the event log; the group state kept beside it has its own
 * (src/delivery/group-keys.ts). Channel names cannot contain '!', so '!' separates the
 * parts; sequences are 16 hex digits so keys sort in sequence order.
 *
 *   e!CHANNEL!SEQ            a stored event (see record.ts), in the events' own LevelDB (EVENTS_DIR)
 *   h!CHANNEL                the channel's head: first and last sequence, bytes, counters
 *   d!#T!CHANNEL!LEN:SOURCEID  dedup entry of a publish (or a redrive) for (source, id),
 *                            "SEQ:APPEND_MS", in dedup table T (0 or 1; see DedupTables):
 *                            a table is cleared whole once its newest entry is past the window
 *   d!CHANNEL!LEN:SOURCEID   dedup entry of a relay copy, removed with the copy
 *   m!log-id                 8 random bytes chosen when the log was created
 *   m!dedup-tables           which dedup table is written, since when (see DedupTables)
 *   m!closed                 present while the log is closed cleanly: its open skips the repair
 *                            of a crash between two writes (see EventStore.reconcile)
 *   m!events-dir             written by 0.2 (always with no events here); deleted on open
 */
export const seqHex = (seq: number): string => seq.toString(16).padStart(16, "0");

export const eventKey = (channel: string, seq: number): string => `e!${channel}!${seqHex(seq)}`;
export const eventPrefix = (channel: string): string => `e!${channel}!`;
export const headKey = (channel: string): string => `h!${channel}`;
export const dedupKey = (channel: string, source: string, id: string): string =>
  `d!${channel}!${source.length}:${source}${id}`;
/** What every dedup key starts with. */
export const DEDUP_PREFIX = "d!";
/** What every dedup table's keys start with, before the table's digit and "!". */
const TABLE_MARK = `${DEDUP_PREFIX}#`;
/** What the keys of dedup table `table` (0 or 1) start with; no channel name starts with '#'. */
export const dedupTablePrefix = (table: number): string => `${TABLE_MARK}${table}!`;
/** The entry in dedup table `table` of the identity `key` (a dedupKey). */
export const dedupTableKey = (table: number, key: string): string => dedupTablePrefix(table) + key.slice(DEDUP_PREFIX.length);
/** What the dedup keys of `channel` start with: its relay copies' and its entries in each table. */
export const dedupPrefixes = (channel: string): string[] => [`${DEDUP_PREFIX}${channel}!`, `${dedupTablePrefix(0)}${channel}!`, `${dedupTablePrefix(1)}${channel}!`];
/** The identity (dedupKey) of a stored dedup key: itself, or a table entry's without "#T!". */
export const dedupIdentityOf = (stored: string): string =>
  stored.startsWith(TABLE_MARK) ? DEDUP_PREFIX + stored.slice(TABLE_MARK.length + 2) : stored;

/** The smallest string greater than every key that starts with `prefix`. */
export const prefixEnd = (prefix: string): string => `${prefix}\uffff`;

/** The sequence at the end of a key made by eventKey (or a group key with a sequence). */
export const seqOfKey = (key: string): number => Number.parseInt(key.slice(key.length - 16), 16);

/** The log's random id (see EventLog.id). */
export const LOG_ID_KEY = "m!log-id";
/** Present while the log is closed cleanly (see EventLog.close). */
export const CLOSED_KEY = "m!closed";
/** Written by 0.2 and deleted on open: every event is in the events' database. */
export const EVENTS_SPLIT_KEY = "m!events-dir";
/** Which dedup table the log writes and since when (see EventLog, DedupTables). */
export const DEDUP_TABLES_KEY = "m!dedup-tables";
/** Written to each database while the disk is full, to tell when writes work again (see DiskWatch.probe). */
export const PROBE_KEY = "m!probe";
