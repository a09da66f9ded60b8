import { rm } from "node:fs/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterEach, describe, expect, it } from "vitest";
import { EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { type AppendEntry, EventLog, type EventLogOptions } from "../src/log/event-log.js";
import { DEDUP_TABLES_KEY, prefixEnd } from "../src/log/keys.js";
import { recordSize, relayIdentity } from "../src/log/record.js";
import { tempDir } from "./support/sidecar.js";
import { GroupState } from "../src/delivery/group-state.js";

function entry(channel: string, id: string, data = "x", key = ""): AppendEntry {
  const bytes = toBinary(EventSchema, create(EventSchema, { channel, id, source: "//unit", type: "t", key, data: Buffer.from(data) }));
  return { channel, source: "//unit", id, key, bytes };
}

interface RawBatch {
  put(key: string, value: Uint8Array): RawBatch;
  del(key: string): RawBatch;
  write(): Promise<void>;
}
interface RawDb {
  iterator(range: object): { all(): Promise<[string, Uint8Array][]> };
  keys(range: object): { all(): Promise<string[]> };
  batch(): RawBatch;
}
const dbOf = (log: EventLog): RawDb => (log as unknown as { db: RawDb }).db;
const keysUnder = async (log: EventLog, prefix: string): Promise<number> => (await dbOf(log).keys({ gte: prefix, lt: prefixEnd(prefix) }).all()).length;
/** Counts the events the log's store reads (retention's scans included) and the most one call asked for, from now on. */
function countReads(log: EventLog): { events: number; mostAsked: number } {
  const counts = { events: 0, mostAsked: 0 };
  const store = (log as unknown as { store: Pick<EventLog, "read"> }).store;
  const read = store.read.bind(store);
  store.read = async (...args) => {
    counts.mostAsked = Math.max(counts.mostAsked, args[2]);
    const events = await read(...args);
    counts.events += events.length;
    return events;
  };
  return counts;
}

describe("EventLog", () => {
  const open: EventLog[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    for (const l of open.splice(0)) await l.close();
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });
  async function openLog(options: EventLogOptions = {}, dir?: string): Promise<{ log: EventLog; dir: string }> {
    const d = dir ?? (await tempDir());
    if (!dir) dirs.push(d);
    const log = await EventLog.open(d, options);
    open.push(log);
    return { log, dir: d };
  }

  it("assigns strictly increasing sequences per channel, across concurrent appends", async () => {
    const { log } = await openLog();
    const results = await Promise.all([
      log.append([entry("a", "1"), entry("b", "1"), entry("a", "2")]),
      log.append([entry("a", "3")]),
      log.append([entry("b", "2")]),
    ]);
    expect(results.map((r) => r.map((x) => x.sequence))).toEqual([[1, 1, 2], [3], [2]]);
    expect(log.head("a")).toMatchObject({ first: 1, last: 3 });
    const read = await log.read("a", 1, 10);
    expect(read.map((e) => e.sequence)).toEqual([1, 2, 3]);
  });

  it("starts writing an append that comes alone right after the current callback, not after the loop's other callbacks", async () => {
    const { log } = await openLog();
    const db = (log as unknown as { db: { batch(): { write(...a: unknown[]): Promise<void> } } }).db;
    let writes = 0;
    const batch = db.batch.bind(db);
    db.batch = () => {
      const b = batch();
      const write = b.write.bind(b);
      b.write = (...a: unknown[]) => (writes++, write(...a));
      return b;
    };
    // An append made in one callback of the check phase, with another callback queued there before it.
    const seen = await new Promise<number>((resolve) =>
      setImmediate(() => {
        setImmediate(() => resolve(writes));
        void log.append([entry("a", "1")]);
      }),
    );
    expect(seen).toBe(1);
  });

  it("keeps the bytes it was given, and the key", async () => {
    const { log } = await openLog();
    const e = entry("a", "1", "payload", "k1");
    await log.append([e]);
    const [stored] = await log.read("a", 1, 1);
    expect(Buffer.from(stored!.bytes).equals(Buffer.from(e.bytes))).toBe(true);
    expect(stored!.key).toBe("k1");
  });

  it("dedups (channel, source, id) within the window, and not after it", async () => {
    let now = 1_000_000;
    const { log } = await openLog({ now: () => now, dedupWindowMs: 60_000 });
    const [[first, inBatch]] = [await log.append([entry("a", "x"), entry("a", "x")])];
    expect(first).toEqual({ sequence: 1, duplicate: false });
    expect(inBatch).toEqual({ sequence: 1, duplicate: true });
    expect(await log.append([entry("a", "x")])).toEqual([{ sequence: 1, duplicate: true }]);
    expect(await log.append([entry("b", "x")])).toEqual([{ sequence: 1, duplicate: false }]); // other channel
    now += 60_000;
    expect(await log.append([entry("a", "x")])).toEqual([{ sequence: 2, duplicate: false }]);
  });

  it("dedups across append groups written back to back (the next group is looked up while one is written)", async () => {
    const { log } = await openLog();
    // Events of 200 KB: an append group ends at a few of them, so these appends form several
    // groups, each looked up while the one before it is being written.
    const big = "x".repeat(200 * 1024);
    const ids = [["1", "2"], ["1", "3"], ["3", "4"], ["2", "4", "5"], ["5", "1"], ["6"], ["6", "2"]];
    const results = await Promise.all(ids.map((batch) => log.append(batch.map((id) => entry("a", id, big)))));
    const sequenceOf = new Map<string, number>();
    results.forEach((r, i) =>
      r.forEach((x, j) => {
        const id = ids[i]![j]!;
        if (!sequenceOf.has(id)) {
          expect(x.duplicate).toBe(false);
          sequenceOf.set(id, x.sequence);
        } else {
          expect(x).toEqual({ sequence: sequenceOf.get(id), duplicate: true });
        }
      }),
    );
    expect(sequenceOf.size).toBe(6);
    expect(log.head("a")).toMatchObject({ first: 1, last: 6 });
    expect((await log.read("a", 1, 100)).map((e) => e.sequence)).toEqual([1, 2, 3, 4, 5, 6]);
    // Many small appends at once (the getSync path) dedup the same way.
    const small = await Promise.all(Array.from({ length: 40 }, (_, i) => log.append([entry("b", String(i % 10))])));
    expect(small.filter((r) => !r[0]!.duplicate)).toHaveLength(10);
    expect(log.head("b")).toMatchObject({ last: 10 });
  });

  it("looks up in LevelDB only the ids its dedup filter may hold, once the filter is loaded", async () => {
    const { log } = await openLog();
    await log.append([entry("a", "first")]); // the first append starts loading the filter
    await log.dedupFilterSettled();
    // Count the keys the log asks LevelDB for (the real database, only counted).
    const db = (log as unknown as { db: { getMany(keys: string[]): Promise<unknown>; getSync(key: string): unknown } }).db;
    let asked = 0;
    const getMany = db.getMany.bind(db);
    const getSync = db.getSync.bind(db);
    db.getMany = (keys) => ((asked += keys.length), getMany(keys));
    db.getSync = (key) => (asked++, getSync(key));
    const fresh = Array.from({ length: 500 }, (_, i) => entry("a", `new-${i}`));
    expect((await log.append(fresh)).every((r) => !r.duplicate)).toBe(true);
    expect(asked).toBeLessThan(25); // ~1% of new ids may be asked for; without the filter, all 500
    asked = 0;
    expect(await log.append([entry("a", "new-7"), entry("a", "first")])).toEqual([
      { sequence: 9, duplicate: true },
      { sequence: 1, duplicate: true },
    ]);
    expect(asked).toBe(2); // in the one dedup table written so far (the other is empty)
  });

  it("takes its dedup filter's snapshot at the next point between groups, not behind every queued append", async () => {
    const { log, dir } = await openLog();
    await log.append(Array.from({ length: 1000 }, (_, i) => entry("a", `old-${i}`)));
    await log.close();
    const { log: again } = await openLog({}, dir);
    // Appends of 100 KB events queued at once make dozens of groups (a group ends at 256 KiB),
    // which keep the write loop busy from the first to the last; the first starts the load.
    const order: string[] = [];
    // The load's snapshot is the log's one read of keys alone (LevelDB's own, only noted).
    const db = dbOf(again);
    const keys = db.keys.bind(db);
    db.keys = (range) => (order.push("snapshot"), keys(range));
    const big = "x".repeat(100 * 1024);
    const appends = Array.from({ length: 100 }, (_, i) => again.append([entry("a", `new-${i}`, big)]).then(() => order.push(`append ${i}`)));
    await Promise.all(appends);
    // Taken after the first group or two, not once the last of the 100 appends is written.
    expect(order).toContain("snapshot");
    expect(order.indexOf("snapshot")).toBeLessThan(10);
    await again.dedupFilterSettled();
    // And it holds what was stored before the restart.
    expect(await again.append([entry("a", "old-7")])).toEqual([{ sequence: 8, duplicate: true }]);
  });

  it("dedups ids stored before a restart while its dedup filter loads, and ids appended meanwhile, after", async () => {
    const { log, dir } = await openLog();
    const ids = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => `id-${from + i}`);
    for (let i = 0; i < 20_000; i += 1000) await log.append(ids(i, i + 1000).map((id) => entry("a", id)));
    await log.close();
    const { log: again } = await openLog({}, dir);
    // The first append starts loading the filter; appends of new ids go on while it loads.
    let next = 20_000;
    expect((await again.append(ids(next, (next += 20)).map((id) => entry("a", id))))[0]!.duplicate).toBe(false);
    let loaded = false;
    const settled = again.dedupFilterSettled().then(() => (loaded = true));
    let during = 0;
    while (!loaded) {
      const results = await again.append(ids(next, (next += 20)).map((id) => entry("a", id)));
      expect(results.every((r) => !r.duplicate)).toBe(true);
      during++;
    }
    await settled;
    expect(during).toBeGreaterThan(1);
    // ...and every id, old or new, is a duplicate once it has loaded.
    for (let i = 0; i < next; i += 1000) {
      const results = await again.append(ids(i, Math.min(next, i + 1000)).map((id) => entry("a", id)));
      expect(results.every((r) => r.duplicate)).toBe(true);
    }
    expect(again.head("a").last).toBe(next);
  });

  it("reads the same events from memory right after they are stored as from LevelDB after a restart (relay copies and redriven ones too)", async () => {
    const { log, dir } = await openLog();
    const e = entry("a", "1", "payload", "k1");
    await log.append([
      e,
      // As releases that kept relay copies in their own log channel wrote them (version 2).
      { ...entry("a", "2", "relayed"), origin: { node: "n2", log: "00ff", sequence: 41 } },
      { ...entry("a", "3", "redriven", "k3"), onlyGroup: "g1" },
      // A relay copy held for one group (version 4): its origin, its group and its copy epoch.
      { ...entry("a", "4", "held", "k4"), origin: { node: "n3", log: "0a0b", sequence: 9 }, onlyGroup: "g2", copyEpoch: 3 },
      // One forwarded after attempts elsewhere (version 5): those attempts too.
      { ...entry("a", "5", "tried", "k5"), origin: { node: "n3", log: "0a0b", sequence: 10 }, onlyGroup: "g2", copyEpoch: 3, priorAttempts: 2 },
    ]);
    const fromMemory = await log.read("a", 1, 10);
    await log.close();
    const { log: again } = await openLog({}, dir);
    const fromDisk = await again.read("a", 1, 10);
    expect(fromDisk).toHaveLength(5);
    expect(fromMemory.map((x) => ({ ...x, bytes: Buffer.from(x.bytes) }))).toEqual(fromDisk.map((x) => ({ ...x, bytes: Buffer.from(x.bytes) })));
    expect(fromDisk[1]!.origin).toEqual({ node: "n2", log: "00ff", sequence: 41 });
    expect(fromDisk[1]!.onlyGroup).toBeUndefined();
    expect(fromDisk[2]!.onlyGroup).toBe("g1");
    expect(fromDisk[3]).toMatchObject({ key: "k4", origin: { node: "n3", log: "0a0b", sequence: 9 }, onlyGroup: "g2", copyEpoch: 3 });
    expect(Buffer.from(fromDisk[3]!.bytes)).toEqual(Buffer.from(entry("a", "4", "held", "k4").bytes));
    expect(fromDisk[3]!.priorAttempts).toBeUndefined();
    expect(fromDisk[4]).toMatchObject({ key: "k5", origin: { node: "n3", log: "0a0b", sequence: 10 }, onlyGroup: "g2", copyEpoch: 3, priorAttempts: 2 });
    expect(Buffer.from(fromDisk[4]!.bytes)).toEqual(Buffer.from(entry("a", "5", "tried", "k5").bytes));
    // Retention counts each record's stored size: the head's bytes are their sum.
    expect(again.head("a").bytes).toBe(fromDisk.reduce((n, x) => n + recordSize(x), 0));
  });

  it("survives reopening: heads, events and dedup entries are durable", async () => {
    const { log, dir } = await openLog();
    await log.append([entry("a", "1"), entry("a", "2")]);
    await log.close();
    const { log: again } = await openLog({}, dir);
    expect(again.head("a")).toMatchObject({ first: 1, last: 2 });
    expect(await again.append([entry("a", "2"), entry("a", "3")])).toEqual([
      { sequence: 2, duplicate: true },
      { sequence: 3, duplicate: false },
    ]);
  });

  it("removes events by age and by size, counts them, and tells listeners", async () => {
    let now = 1_000_000;
    const { log } = await openLog({
      now: () => now,
      retention: { maxAgeMs: 10_000, maxBytes: 1024 ** 3 },
      channelRetention: { small: { maxAgeMs: 1e12, maxBytes: 300 } },
    });
    const trims: [string, number][] = [];
    log.onTrim((c, first) => trims.push([c, first]));
    await log.append([entry("old", "1"), entry("old", "2")]);
    now += 5_000;
    await log.append([entry("old", "3")]);
    await log.append(Array.from({ length: 10 }, (_, i) => entry("small", String(i), "y".repeat(40))));
    now += 6_000; // events 1 and 2 of "old" are now 11 s old, event 3 is 6 s old
    await log.sweep();
    expect(log.head("old")).toMatchObject({ first: 3, last: 3, expired: 2 });
    expect((await log.read("old", 1, 10)).map((e) => e.sequence)).toEqual([3]);
    const small = log.head("small");
    expect(small.bytes).toBeLessThanOrEqual(300);
    expect(small.expired).toBe(small.first - 1);
    expect(small.expired).toBeGreaterThan(0);
    expect(trims).toContainEqual(["old", 3]);
    expect(trims).toContainEqual(["small", small.first]);
  });

  it("reads one event per scan in a sweep with nothing due, and removes thousands in passes of a few dozen", async () => {
    let now = 1_000_000;
    const { log } = await openLog({ now: () => now, retention: { maxAgeMs: 10_000, maxBytes: 1e12 }, dedupWindowMs: 10_000 });
    await log.append(Array.from({ length: 3000 }, (_, i) => entry("c", String(i))));
    const reads = countReads(log);
    await log.sweep();
    // One scan, for retention, which stops at the first event (the dedup window reads none).
    expect(reads.events).toBe(1);
    expect(log.head("c")).toMatchObject({ first: 1, expired: 0 });
    now += 20_000;
    await log.sweep();
    expect(log.head("c")).toMatchObject({ first: 3001, last: 3000, expired: 3000 });
    // A pass decodes and removes a few dozen events, so it holds the loop briefly.
    expect(reads.mostAsked).toBeLessThanOrEqual(64);
  });

  it("forgets dedup entries past the window without reading an event: their table is cleared whole", async () => {
    let now = 1_000_000;
    const { log } = await openLog({ now: () => now, retention: { maxAgeMs: 1e12, maxBytes: 1e12 }, dedupWindowMs: 10_000 });
    await log.append(Array.from({ length: 1000 }, (_, i) => entry("c", String(i))));
    const reads = countReads(log);
    // Two sweeps a window apart: the first makes the other (empty) table the one written,
    // the second clears the table that holds the 1000 entries.
    now += 10_000;
    await log.sweep();
    expect(await keysUnder(log, "d!")).toBe(1000);
    now += 10_000;
    await log.sweep();
    expect(await keysUnder(log, "d!")).toBe(0);
    expect(reads.events).toBe(2); // the retention scan's first read, in each sweep
    expect(log.head("c")).toMatchObject({ first: 1, last: 1000 });
    // Past the window, a re-publish is stored again; the events themselves stay.
    const again = await log.append([entry("c", "0"), entry("c", "999")]);
    expect(again).toEqual([
      { sequence: 1001, duplicate: false },
      { sequence: 1002, duplicate: false },
    ]);
  });

  it("keeps every dedup entry for at least the window across table switches and a restart", async () => {
    let now = 1_000_000;
    const options = { now: () => now, retention: { maxAgeMs: 1e12, maxBytes: 1e12 }, dedupWindowMs: 10_000 };
    const { log, dir } = await openLog(options);
    now += 5_000;
    await log.append([entry("c", "a")]); // in the table written first
    now += 5_000;
    await log.sweep(); // the other table is written from here on
    now += 1;
    await log.append([entry("c", "b")]);
    await log.close();
    const { log: again } = await openLog(options, dir);
    now += 4_998;
    // "a" is 9 999 ms old, in the table no longer written: still a duplicate.
    expect(await again.append([entry("c", "a"), entry("c", "b")])).toEqual([
      { sequence: 1, duplicate: true },
      { sequence: 2, duplicate: true },
    ]);
    now += 5_001; // a window since the switch: the first table is cleared, "b" (9 999 ms old) is kept
    await again.sweep();
    expect(await keysUnder(again, "d!#0!")).toBe(0);
    expect(await again.append([entry("c", "b")])).toEqual([{ sequence: 2, duplicate: true }]);
    expect(await again.append([entry("c", "a")])).toEqual([{ sequence: 3, duplicate: false }]);
  });

  it("keeps a relay copy's dedup entry past the window, as long as the copy, and removes it with the copy", async () => {
    let now = 1_000_000;
    const { log } = await openLog({ now: () => now, retention: { maxAgeMs: 100_000, maxBytes: 1e12 }, dedupWindowMs: 10_000 });
    // As the delivery engine appends a relay copy held for a group: under the copy's own
    // identity (origin, group, copy epoch). And one written as older releases did (no group).
    const origin = { node: "n2", log: "00ff", sequence: 7 };
    const held = { ...entry("c", "r"), ...relayIdentity(origin, "g", 2), origin, onlyGroup: "g", copyEpoch: 2 };
    const old = { ...entry("c", "o"), ...relayIdentity({ ...origin, sequence: 8 }), origin: { ...origin, sequence: 8 } };
    await log.append([held, old]);
    for (let i = 0; i < 3; i++) {
      now += 10_000;
      await log.sweep();
    }
    expect(await log.append([held, old])).toEqual([
      { sequence: 1, duplicate: true },
      { sequence: 2, duplicate: true },
    ]);
    // The same event held for another group, or in another copy epoch, is another copy.
    expect(await log.append([{ ...held, ...relayIdentity(origin, "h", 2), onlyGroup: "h" }])).toEqual([{ sequence: 3, duplicate: false }]);
    expect(await log.append([{ ...held, ...relayIdentity(origin, "g", 3), copyEpoch: 3 }])).toEqual([{ sequence: 4, duplicate: false }]);
    expect(await keysUnder(log, "d!")).toBe(4);
    now += 200_000;
    await log.sweep();
    expect(log.head("c")).toMatchObject({ first: 5, expired: 4 });
    expect(await keysUnder(log, "d!")).toBe(0);
  });

  it("applies the default retention to channels named like Object properties", async () => {
    let now = 1_000_000;
    const { log } = await openLog({ now: () => now, retention: { maxAgeMs: 1000, maxBytes: 1e9 }, channelRetention: {} });
    await log.append([entry("constructor", "1"), entry("tostring", "1")]);
    now += 2000;
    await log.sweep();
    expect(log.head("constructor").expired).toBe(1);
    expect(log.head("tostring").expired).toBe(1);
  });

  it("never loses an append that lands while a sweep runs, nor reuses its sequence", async () => {
    let now = 1_000_000;
    const { log } = await openLog({ now: () => now, retention: { maxAgeMs: 10_000, maxBytes: 1e12 }, dedupWindowMs: 1000 });
    await log.append(Array.from({ length: 50 }, (_, i) => entry("c", `old-${i}`)));
    now += 20_000; // all 50 past retention and past the dedup window
    const sweeping = log.sweep();
    const [during] = await log.append([entry("c", "during")]);
    await sweeping;
    const [after] = await log.append([entry("c", "after")]);
    expect([during!.sequence, after!.sequence]).toEqual([51, 52]);
    expect(log.head("c")).toMatchObject({ first: 51, last: 52, expired: 50 });
    expect((await log.read("c", 1, 10)).map((e) => e.sequence)).toEqual([51, 52]);
  });

  it("forgets the dedup entries of events that retention removed", async () => {
    let now = 1_000_000;
    const { log } = await openLog({ now: () => now, channelRetention: { c: { maxAgeMs: 1e12, maxBytes: 400 } } });
    await log.append(Array.from({ length: 20 }, (_, i) => entry("c", `e${i}`, "y".repeat(40))));
    await log.sweep();
    const head = log.head("c");
    expect(head.first).toBeGreaterThan(1);
    // Within the window, but the event is gone: re-publishing it stores it again.
    const [again] = await log.append([entry("c", "e0", "y".repeat(40))]);
    expect(again).toEqual({ sequence: head.last + 1, duplicate: false });
    // A retained one is still a duplicate.
    const [kept] = await log.append([entry("c", `e19`, "y".repeat(40))]);
    expect(kept).toEqual({ sequence: 20, duplicate: true });
  });

  it("lets a running sweep finish before it closes", async () => {
    let now = 1_000_000;
    const { log } = await openLog({ now: () => now, retention: { maxAgeMs: 10, maxBytes: 1e12 } });
    await log.append(Array.from({ length: 3000 }, (_, i) => entry("c", String(i))));
    now += 1000;
    const sweeping = log.sweep();
    await log.close();
    await expect(sweeping).resolves.toBeUndefined();
  });

  it("finds the first event stored at or after a time", async () => {
    let now = 1000;
    const { log } = await openLog({ now: () => now });
    for (let i = 1; i <= 5; i++) {
      await log.append([entry("a", String(i))]);
      now += 100;
    }
    expect(log.sequenceAtTime("a", 0)).toBe(1);
    expect(log.sequenceAtTime("a", 1150)).toBe(3);
    expect(log.sequenceAtTime("a", 1200)).toBe(3);
    expect(log.sequenceAtTime("a", 99_999)).toBe(6);
  });

  it("refuses appends after close, and close is idempotent", async () => {
    const { log } = await openLog();
    await log.close();
    await log.close();
    await expect(log.append([entry("a", "1")])).rejects.toThrow(/LOG_CLOSED/);
  });

  it("stores group cursors, acks above them and attempts in flight", async () => {
    const { log, dir } = await openLog();
    await new GroupState(log.state)
      .batch()
      .putGroup({ channel: "a", group: "g", ackedThrough: 4, maxAttempts: 5, deadLetterChannel: "a.dlq.g", expiredUnacked: 0 })
      .putAcked("a", "g", 6)
      .putInflight("a", "g", 5, 2)
      // At or below the cursor: done, so not loaded.
      .putAcked("a", "g", 3)
      .putInflight("a", "g", 4, 1)
      .write();
    await log.close();
    const { log: again } = await openLog({}, dir);
    const [g] = await new GroupState(again.state).loadGroups();
    expect(g!.record.ackedThrough).toBe(4);
    expect(g!.acked).toEqual([6]);
    expect(g!.inflight).toEqual([{ sequence: 5, attempt: 2 }]);
  });
});
