import { fromBinary } from "@bufbuild/protobuf";
import { EventSchema } from "../../src/gen/weft/v1/event_pb.js";
import { EventLog } from "../../src/log/event-log.js";
import type { Origin } from "../../src/log/record.js";
import { GroupState, type LoadedGroup } from "../../src/delivery/group-state.js";

/** One stored record of a log, with the identity the delivery contract dedups it by. */
export interface AuditedRecord {
  channel: string;
  /** The record's sequence in this log's channel. */
  sequence: number;
  /** The event's (source, id), decoded from its bytes. */
  source: string;
  id: string;
  key: string;
  /** For a relay copy: the origin sidecar and the event's sequence there. */
  origin?: Origin | undefined;
  /** For a relay copy: the group it is held for (or a redriven event's group), and the copy's epoch. */
  onlyGroup?: string | undefined;
  copyEpoch?: number | undefined;
}

/** Everything a stopped sidecar's data directory holds: records per channel, and groups. */
export interface LogContents {
  dataDir: string;
  channels: Map<string, AuditedRecord[]>;
  groups: LoadedGroup[];
}

/** Two or more records that the delivery contract says must be one. */
export interface DuplicateRecords {
  channel: string;
  /** "source id" for an event published here, "node/log#sequence for group (epoch)" for a relay copy. */
  identity: string;
  sequences: number[];
}

/**
 * Reads every record of every channel of a sidecar's data directory. The sidecar must be
 * stopped (LevelDB allows one process); nothing is written.
 */
export async function readLog(dataDir: string): Promise<LogContents> {
  const log = await EventLog.open(dataDir);
  try {
    const channels = new Map<string, AuditedRecord[]>();
    for (const channel of log.channels()) {
      const head = log.head(channel);
      const records: AuditedRecord[] = [];
      for (let from = head.first; from <= head.last; ) {
        const events = await log.read(channel, from, 1000);
        if (events.length === 0) break;
        for (const e of events) {
          const event = fromBinary(EventSchema, e.bytes);
          records.push({ channel, sequence: e.sequence, source: event.source, id: event.id, key: e.key, origin: e.origin, onlyGroup: e.onlyGroup, copyEpoch: e.copyEpoch });
        }
        from = events[events.length - 1]!.sequence + 1;
      }
      channels.set(channel, records);
    }
    return { dataDir, channels, groups: await new GroupState(log.state).loadGroups() };
  } finally {
    await log.close();
  }
}

/**
 * Records stored more than once in a channel: two records of one event published here
 * (source, id), or two relay copies of one origin event (origin node, its log, its
 * sequence) held for one group in one copy epoch. (A copy the sidecar gave up, when it
 * withdrew the group, is done for the group; a later forward of the event is a copy of the
 * next epoch.)
 */
export function findDuplicates(contents: LogContents): DuplicateRecords[] {
  const out: DuplicateRecords[] = [];
  for (const [channel, records] of contents.channels) {
    const seen = new Map<string, number[]>();
    for (const r of records) {
      const identity = r.origin ? `${r.origin.node}/${r.origin.log}#${r.origin.sequence} for ${r.onlyGroup ?? "?"} (${r.copyEpoch ?? 0})` : `${r.source} ${r.id}`;
      const list = seen.get(identity);
      if (list) list.push(r.sequence);
      else seen.set(identity, [r.sequence]);
    }
    for (const [identity, sequences] of seen) if (sequences.length > 1) out.push({ channel, identity, sequences });
  }
  return out;
}

/**
 * The records of `channel` that `group` has not finished (neither at or below its cursor nor
 * acked above it): events published here, and the relay copies held for the group.
 */
export function unfinished(contents: LogContents, channel: string, group: string): AuditedRecord[] {
  const g = contents.groups.find((l) => l.record.channel === channel && l.record.group === group);
  const records = (contents.channels.get(channel) ?? []).filter((r) => r.onlyGroup === undefined || r.onlyGroup === group);
  if (!g) return records;
  const acked = new Set(g.acked);
  return records.filter((r) => r.sequence > g.record.ackedThrough && !acked.has(r.sequence));
}

/** A one-line summary of an audit, for the test output. */
export function describeAudit(name: string, contents: LogContents, duplicates: DuplicateRecords[]): string {
  const parts = [...contents.channels].map(([c, r]) => `${c}=${r.length}`).join(" ");
  return `log-audit[${name}]: ${parts || "(empty)"}; duplicates ${duplicates.length}`;
}

/**
 * Reads each stopped sidecar's data directory and returns its duplicates, printing one line
 * per sidecar. "No event is stored twice in any log" holds when every list is empty.
 */
export async function auditLogs(dirs: Record<string, string>): Promise<Record<string, DuplicateRecords[]>> {
  const out: Record<string, DuplicateRecords[]> = {};
  for (const [name, dir] of Object.entries(dirs)) {
    const contents = await readLog(dir);
    const duplicates = findDuplicates(contents);
    console.log(describeAudit(name, contents, duplicates));
    out[name] = duplicates;
  }
  return out;
}
