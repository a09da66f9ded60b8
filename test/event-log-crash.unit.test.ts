import { rm } from "node:fs/promises";
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ClassicLevel } from "classic-level";
import { afterEach, describe, expect, it } from "vitest";
import { EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { type AppendEntry, EVENTS_DIR, EventLog, type EventLogOptions } from "../src/log/event-log.js";
import { CLOSED_KEY, eventKey, prefixEnd } from "../src/log/keys.js";
import { encodeRecord } from "../src/log/record.js";
import { eventually, within } from "./support/collect.js";
import { tempDir } from "./support/sidecar.js";
import { GroupState } from "../src/delivery/group-state.js";

/**
 * An append group is two LevelDB writes (its events, and the rest), and a crash can land
 * between them; so can one between retention's two writes. Each case is made by editing the
 * closed log's databases as that crash would have left them.
 */


/** Makes the log's next main-database batch write fail with `message` (its events' write succeeds). */
function failNextMainWrite(log: EventLog, message: string): void {
  const db = (log as unknown as { db: { batch(): { write(...a: unknown[]): Promise<void> } } }).db;
  const batch = db.batch.bind(db);
  let failNext = true;
  db.batch = () => {
    const b = batch();
    const write = b.write.bind(b);
    b.write = (...a: unknown[]) => {
      if (!failNext) return write(...a);
      failNext = false;
      return (b as unknown as { close(): Promise<void> }).close().then(() => Promise.reject(new Error(message)));
    };
    return b;
  };
}

function entry(channel: string, id: string, data = id): AppendEntry {
  const bytes = toBinary(EventSchema, create(EventSchema, { channel, id, source: "//crash", type: "t", data: Buffer.from(data) }));
  return { channel, source: "//crash", id, key: "", bytes };
}
const dataOf = (bytes: Uint8Array): string => Buffer.from(fromBinary(EventSchema, bytes).data).toString();

type Raw = ClassicLevel<string, Uint8Array>;
/**
 * Runs `edit` on the closed log's main database and its events' database, and (unless
 * `closedCleanly`) takes away the mark of a clean close, as a crash leaves none.
 */
async function editDatabases(dir: string, edit: (main: Raw, events: Raw) => Promise<void>, closedCleanly = false): Promise<void> {
  const main: Raw = new ClassicLevel(dir, { keyEncoding: "utf8", valueEncoding: "view" });
  const events: Raw = new ClassicLevel(join(dir, EVENTS_DIR), { keyEncoding: "utf8", valueEncoding: "view" });
  await main.open();
  await events.open();
  try {
    if (!closedCleanly) await main.del(CLOSED_KEY);
    await edit(main, events);
  } finally {
    await main.close();
    await events.close();
  }
}
const keysOf = async (db: Raw, prefix: string): Promise<string[]> => db.keys({ gte: prefix, lt: prefixEnd(prefix) }).all();

describe("EventLog after a crash between its two writes", () => {
  const open: EventLog[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    for (const l of open.splice(0)) await l.close();
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });
  async function openLog(dir: string, options: EventLogOptions = {}): Promise<EventLog> {
    const log = await EventLog.open(dir, options);
    open.push(log);
    return log;
  }
  async function newDir(): Promise<string> {
    const d = await tempDir();
    dirs.push(d);
    return d;
  }
  async function closeLast(): Promise<void> {
    await open.pop()!.close();
  }
  const ids = async (log: EventLog, channel: string): Promise<[number, string][]> =>
    (await log.read(channel, 1, 100)).map((e) => [e.sequence, dataOf(e.bytes)]);

  it("drops events written without their head (a channel's first too), and the next appends take their sequences", async () => {
    const dir = await newDir();
    const log = await openLog(dir);
    await log.append([entry("c", "1"), entry("c", "2"), entry("c", "3")]);
    await closeLast();
    // The events' write of a fourth event (and of a new channel's first) made it; the head did not.
    await editDatabases(dir, async (_main, events) => {
      await events.put(eventKey("c", 4), encodeRecord(1, "", entry("c", "lost").bytes));
      await events.put(eventKey("new", 1), encodeRecord(1, "", entry("new", "lost").bytes));
      await events.put(eventKey("gone", 1), encodeRecord(1, "", entry("gone", "lost").bytes));
    });

    const again = await openLog(dir);
    expect(again.head("c")).toMatchObject({ first: 1, last: 3 });
    expect((again as unknown as { events: Raw }).events.getSync(eventKey("c", 4))).toBeUndefined();
    expect(again.channels()).not.toContain("new");
    expect(await ids(again, "c")).toEqual([[1, "1"], [2, "2"], [3, "3"]]);
    expect(await again.append([entry("c", "4"), entry("new", "1")])).toEqual([
      { sequence: 4, duplicate: false },
      { sequence: 1, duplicate: false },
    ]);
    expect(await ids(again, "c")).toEqual([[1, "1"], [2, "2"], [3, "3"], [4, "4"]]);
    expect(await ids(again, "new")).toEqual([[1, "1"]]);
    await closeLast();
    await editDatabases(dir, async (_main, events) => {
      expect(await keysOf(events, "e!gone!")).toEqual([]);
    });
  });

  it("moves a head written without its events back to the last stored one; their publishes are stored again, not called duplicates", async () => {
    const dir = await newDir();
    let now = 1_000_000;
    const clock = { now: () => now };
    const log = await openLog(dir, clock);
    await log.append([entry("c", "1"), entry("c", "2"), entry("c", "3")]);
    now += 10;
    await log.append([entry("c", "4"), entry("c", "5")]);
    await closeLast();
    // The second group's head and dedup entries were written; its events were not.
    await editDatabases(dir, async (_main, events) => {
      await events.del(eventKey("c", 4));
      await events.del(eventKey("c", 5));
    });

    now += 10;
    const again = await openLog(dir, clock);
    expect(again.head("c")).toMatchObject({ first: 1, last: 3 });
    // Another event takes sequence 4; "4"'s entry still names it, with its own time.
    now += 10;
    expect(await again.append([entry("c", "x")])).toEqual([{ sequence: 4, duplicate: false }]);
    now += 10;
    expect(await again.append([entry("c", "4"), entry("c", "5"), entry("c", "2")])).toEqual([
      { sequence: 5, duplicate: false },
      { sequence: 6, duplicate: false },
      { sequence: 2, duplicate: true },
    ]);
    expect(await ids(again, "c")).toEqual([[1, "1"], [2, "2"], [3, "3"], [4, "x"], [5, "4"], [6, "5"]]);
    // And the repaired head is what the next open finds.
    await closeLast();
    const third = await openLog(dir, clock);
    expect(third.head("c")).toMatchObject({ first: 1, last: 6 });
    expect(await third.append([entry("c", "4")])).toEqual([{ sequence: 5, duplicate: true }]);
  });

  it("removes events below a head's first that retention's second write did not", async () => {
    const dir = await newDir();
    let now = 1_000_000;
    const options = { now: () => now, retention: { maxAgeMs: 10_000, maxBytes: 1e12 } };
    const log = await openLog(dir, options);
    await log.append([entry("c", "1"), entry("c", "2")]);
    now += 20_000;
    await log.append([entry("c", "3")]);
    await log.sweep();
    expect(log.head("c")).toMatchObject({ first: 3, last: 3 });
    await closeLast();
    // The pass's removal of events 1 and 2 (one write) did not happen.
    await editDatabases(dir, async (_main, events) => {
      await events.put(eventKey("c", 1), encodeRecord(1_000_000, "", entry("c", "1").bytes));
      await events.put(eventKey("c", 2), encodeRecord(1_000_000, "", entry("c", "2").bytes));
    });

    const again = await openLog(dir, options);
    expect(await ids(again, "c")).toEqual([[3, "3"]]);
    await closeLast();
    await editDatabases(dir, async (_main, events) => {
      expect(await keysOf(events, "e!")).toEqual([eventKey("c", 3)]);
    });
  });

  it("marks a clean close, whose next open skips the repair; a read never passes the head either way", async () => {
    const dir = await newDir();
    const log = await openLog(dir);
    await log.append([entry("c", "1"), entry("c", "2")]);
    await closeLast();
    await editDatabases(
      dir,
      async (main, events) => {
        expect(await main.get(CLOSED_KEY)).toBeDefined();
        await events.put(eventKey("c", 3), encodeRecord(1, "", entry("c", "lost").bytes));
      },
      true,
    );

    const again = await openLog(dir);
    const inside = again as unknown as { db: Raw; events: Raw };
    expect(await inside.db.get(CLOSED_KEY)).toBeUndefined(); // a crash from here on is repaired
    expect(inside.events.getSync(eventKey("c", 3))).toBeDefined(); // not looked for
    expect(await ids(again, "c")).toEqual([[1, "1"], [2, "2"]]);
    expect(await again.append([entry("c", "3")])).toEqual([{ sequence: 3, duplicate: false }]);
    expect(await ids(again, "c")).toEqual([[1, "1"], [2, "2"], [3, "3"]]);
  });

  it("sets right a group whose main write failed before the next group is written, while it runs", async () => {
    const dir = await newDir();
    const log = await openLog(dir);
    await log.append([entry("c", "a0")]);
    // The next main-database write fails (its events' write succeeds), as a write error would.
    failNextMainWrite(log, "IO error: simulated");
    await expect(log.append([entry("c", "a1"), entry("c", "a2"), entry("c", "a3")])).rejects.toThrow("simulated");
    expect(log.head("c").last).toBe(1);
    const [r] = await log.append([entry("c", "b1")]);
    expect(r!.sequence).toBe(2);
    await log.close();
    open.splice(open.indexOf(log), 1);
    // Closed cleanly, with nothing left for the next open to repair: events 1 and 2, no more.
    await editDatabases(
      dir,
      async (main, events) => {
        expect(await main.get(CLOSED_KEY)).toBeDefined();
        expect(await keysOf(events, "e!c!")).toEqual([eventKey("c", 1), eventKey("c", 2)]);
      },
      true,
    );
    const reopened = await openLog(dir);
    expect((await reopened.read("c", 1, 10)).map((e) => dataOf(e.bytes))).toEqual(["a0", "b1"]);
  });

  it("writes the group state made while the probe repairs, and never leaves it waiting once writable", async () => {
    const dir = await newDir();
    const log = await openLog(dir);
    await log.append([entry("c", "a0")]);
    // The next main-database write fails as LevelDB fails on a full disk.
    failNextMainWrite(log, "IO error: /weft/000007.log: No space left on device");
    await expect(log.append([entry("c", "a1")])).rejects.toMatchObject({ reason: "DISK_FULL" });
    expect(log.diskFull).toBeDefined();
    // While the probe sets the failed group right, a member acks: its write must not be left behind.
    const events = (log as unknown as { events: { clear(...a: unknown[]): Promise<void> } }).events;
    const clear = events.clear.bind(events);
    let during: Promise<void> | undefined;
    events.clear = (...a: unknown[]) => {
      during ??= new GroupState(log.state).batch().putAcked("c", "g", 1).write();
      return clear(...a);
    };
    await eventually(() => log.diskFull === undefined, 20_000, "the log writable again");
    expect(during).toBeDefined();
    await within(during!, 10_000, "the ack written during the repair");
    await within(new GroupState(log.state).batch().putAcked("c", "g", 2).write(), 10_000, "an ack written after");
    const [r] = await log.append([entry("c", "b1")]);
    expect(r!.sequence).toBe(2);
  });
});
