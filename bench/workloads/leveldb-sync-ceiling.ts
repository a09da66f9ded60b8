import { randomUUID } from "node:crypto";
import { ClassicLevel } from "classic-level";
import { writeEvent } from "../../src/wire/messages.js";
import { dedupKey, eventKey, headKey } from "../../src/log/keys.js";
import { LEVELDB_OPTIONS, MAX_APPEND_GROUP, MAX_APPEND_GROUP_BYTES } from "../../src/log/event-log.js";
import { encodeRecord } from "../../src/log/record.js";

/**
 * The ceiling of W5: LevelDB alone, group-committed with sync, in this process. Appends of
 * `requestEvents` events (one publish request) are offered with `outstanding` events
 * unacked at most (the publisher's window); a write loop takes queued appends up to the
 * origin log's caps (MAX_APPEND_GROUP events or MAX_APPEND_GROUP_BYTES of events) into one chained batch (event
 * record, dedup entry, head: the keys the origin log writes) and writes it with
 * `sync: true`, so the groups form as the sidecar's do
 * under the same offered load. No gRPC, no checks, no delivery.
 */
export async function measureLevelDbSync(dir: string, events: number, payloadBytes: number, requestEvents: number, outstanding: number): Promise<{ eventsPerSecond: number; meanGroup: number }> {
  const db = new ClassicLevel<string, Uint8Array>(dir, { keyEncoding: "utf8", valueEncoding: "view", ...LEVELDB_OPTIONS });
  await db.open();
  const channel = "bench.events";
  const data = Buffer.alloc(payloadBytes, 120);
  const source = "//weft-bench";
  let sequence = 0;
  let groups = 0;
  let offered = 0;
  let acked = 0;
  const queue: { ids: string[]; bytes: Uint8Array[] }[] = [];
  let writing: Promise<void> | undefined;
  let wake: (() => void) | undefined;

  const writeLoop = async (): Promise<void> => {
    while (queue.length > 0) {
      let count = 0;
      let groupBytes = 0;
      const batch = db.batch();
      const now = Date.now();
      while (queue.length > 0 && count < MAX_APPEND_GROUP && groupBytes < MAX_APPEND_GROUP_BYTES) {
        const append = queue.shift()!;
        for (const b of append.bytes) groupBytes += b.length;
        append.bytes.forEach((bytes, i) => {
          const seq = ++sequence;
          batch.put(eventKey(channel, seq), encodeRecord(now, "", bytes));
          batch.put(dedupKey(channel, source, append.ids[i]!), Buffer.from(`${seq}:${now}`));
        });
        count += append.bytes.length;
      }
      batch.put(headKey(channel), Buffer.from(JSON.stringify({ first: 1, last: sequence })));
      await batch.write({ sync: true });
      groups++;
      acked += count;
      wake?.();
    }
    writing = undefined;
  };

  const start = performance.now();
  while (offered < events) {
    while (offered - acked + requestEvents > outstanding && offered > acked) await new Promise<void>((r) => (wake = r));
    const n = Math.min(requestEvents, events - offered);
    const ids = Array.from({ length: n }, () => randomUUID());
    // Encoded as the client encodes, so the records have the sidecar's sizes.
    queue.push({ ids, bytes: ids.map((id) => writeEvent({ id, source, type: "weft.event", subject: "", time: undefined, datacontenttype: "", data, attributes: { t: "0" }, channel, key: "" })) });
    offered += n;
    writing ??= writeLoop();
  }
  while (acked < events) await new Promise<void>((r) => (wake = r));
  const seconds = (performance.now() - start) / 1000;
  await db.close();
  return { eventsPerSecond: events / seconds, meanGroup: events / groups };
}
