import { rm } from "node:fs/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { ClassicLevel } from "classic-level";
import { afterEach, describe, expect, it } from "vitest";
import { AttemptRecords } from "../src/delivery/attempt-records.js";
import { DeliveryEngine } from "../src/delivery/delivery-engine.js";
import { type GroupBatch, GroupState } from "../src/delivery/group-state.js";
import type { JoinSettings, OutgoingDelivery } from "../src/delivery/types.js";
import { EventSchema } from "../src/gen/weft/v1/event_pb.js";
import { EventLog } from "../src/log/event-log.js";
import { seqHex } from "../src/log/keys.js";
import { eventually } from "./support/collect.js";
import { tempDir } from "./support/sidecar.js";

// A group counts first attempts by its attempt mark (src/delivery/attempt-records.ts): a
// count may hold one attempt too many after a stop, never one too few. Each case runs on
// real LevelDB; a crash is an engine stopped without its clean close, and the log closed.

const event = (channel: string, id: string) => {
  const bytes = toBinary(EventSchema, create(EventSchema, { channel, id, source: "//mark", type: "t" }));
  return { channel, source: "//mark", id, key: "", bytes };
};
const settings = (channel: string, more: Partial<JoinSettings> = {}): JoinSettings => ({
  channel,
  group: "g",
  start: { kind: "earliest" },
  maxInFlight: 10,
  ackDeadlineMs: 30_000,
  maxAttempts: 5,
  deadLetterChannel: `${channel}.dlq.g`,
  ...more,
});
const pairs = (got: OutgoingDelivery[]): [number, number][] => got.map((d) => [d.event.sequence, d.attempt]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The group's stored attempt mark; undefined when none is stored. */
async function storedMark(db: Pick<ClassicLevel<string, Uint8Array>, "get">, channel: string): Promise<number | undefined> {
  const v = await db.get(`t!${channel}!g`);
  return v === undefined ? undefined : Number(Buffer.from(v).toString("utf8"));
}

/** Runs `edit` on the main database of the closed log in `dir`. */
async function editMain(dir: string, edit: (db: ClassicLevel<string, Uint8Array>) => Promise<void>): Promise<void> {
  const db = new ClassicLevel<string, Uint8Array>(dir, { keyEncoding: "utf8", valueEncoding: "view" });
  await db.open();
  try {
    await edit(db);
  } finally {
    await db.close();
  }
}

describe("the attempt mark", () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });
  async function dataDir(): Promise<string> {
    const dir = await tempDir();
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }

  /**
   * Runs `work` with the log in `dir` and an engine on it, then stops as a crash leaves
   * them (`clean`: with the engine's clean close).
   */
  const runIn =
    (dir: string) =>
    async (work: (log: EventLog, engine: DeliveryEngine) => Promise<void>, clean = false): Promise<void> => {
      const log = await EventLog.open(dir);
      const engine = new DeliveryEngine(log);
      await engine.start();
      try {
        await work(log, engine);
      } finally {
        if (clean) await engine.close();
        else engine.stop();
        await log.close();
      }
    };

  it("brings back after a crash every event delivered and not acked at the next attempt, never at attempt 1", async () => {
    const run = runIn(await dataDir());
    const attempts = new Map<number, number>();
    let appended = 0;
    for (let round = 0; round < 4; round++) {
      await run(async (log, engine) => {
        const got: OutgoingDelivery[] = [];
        const m = await engine.join(settings("crash", { maxInFlight: 7 }), { send: (ds) => got.push(...ds) });
        await log.append(Array.from({ length: 40 }, () => event("crash", String(++appended))));
        const acked = new Set<number>();
        // Acks every third delivery as they come, until the group's credits are held by the rest.
        for (let seen = 0; ; ) {
          await sleep(30);
          if (got.length === seen) break;
          const fresh = got.slice(seen);
          seen = got.length;
          const ack = fresh.filter((d) => d.event.sequence % 3 === round % 3);
          for (const d of ack) acked.add(d.event.sequence);
          m.ack(ack.map((d) => d.deliveryId));
        }
        for (const d of got) {
          const before = attempts.get(d.event.sequence);
          // Delivered before the crash: at least the next attempt now.
          if (before !== undefined) expect([d.event.sequence, d.attempt]).toEqual([d.event.sequence, Math.max(d.attempt, before + 1)]);
          attempts.set(d.event.sequence, d.attempt);
        }
        for (const s of acked) attempts.delete(s);
      });
    }
    expect([...attempts.values()].some((a) => a >= 2)).toBe(true);
  });

  it("sends a first attempt above the stored mark only once the raise covering it is stored", async () => {
    const dir = await dataDir();
    const log = await EventLog.open(dir);
    const engine = new DeliveryEngine(log);
    await engine.start();
    cleanup.push(() => log.close(), () => engine.stop());
    const got: OutgoingDelivery[] = [];
    const m = await engine.join(settings("raise", { maxInFlight: 2 }), { send: (ds) => got.push(...ds) });
    await eventually(async () => (await storedMark(log.db, "raise")) !== undefined);
    const mark = (await storedMark(log.db, "raise"))!;
    // From here no write of group state lands (a slow disk holds them).
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const writeState = log.writeState.bind(log);
    log.writeState = (ops, wait) => gate.then(() => writeState(ops, wait));
    // Events one at a time, each acked: those under the stored mark go at once.
    for (let i = 1; i <= mark + 1; i++) {
      await log.append([event("raise", String(i))]);
      if (i > mark) break;
      await eventually(() => got.length === i);
      m.ack([got[i - 1]!.deliveryId]);
    }
    await sleep(200);
    expect(got.length).toBe(mark);
    expect(await storedMark(log.db, "raise")).toBe(mark);
    release();
    await eventually(() => got.length === mark + 1);
    expect(await storedMark(log.db, "raise")).toBeGreaterThanOrEqual(mark + 1);
    expect(pairs(got).every(([, attempt]) => attempt === 1)).toBe(true);
  });

  it("raises the mark in the write of the first attempts above it, and one raise at a time", async () => {
    const log = await EventLog.open(await dataDir());
    cleanup.push(() => log.close());
    const state = new GroupState(log.state);
    // Writes of the group's state land when the test lets them.
    const held: (() => void)[] = [];
    const landNext = async (): Promise<void> => {
      await eventually(() => held.length > 0);
      held.shift()!();
      await sleep(20);
    };
    const host = {
      channel: "direct",
      group: "g",
      ackedThrough: () => 0,
      credits: () => 10,
      batch: () => state.batch(),
      write: (batch: GroupBatch) => new Promise<void>((r) => held.push(r)).then(() => batch.write()).then(() => true),
    };
    const attempts = new AttemptRecords(host, 0);
    const left: string[] = [];
    // First attempts up to 5, above the stored mark (0), with no raise under way: their pump's write raises it.
    void attempts.handedOut(5, state.batch())!.then(() => left.push("5"));
    // Up to 40 meanwhile: past what that raise covers (5 + 3 × 10), so it raises again once that one is stored.
    void attempts.handedOut(40, state.batch())!.then(() => left.push("40"));
    await sleep(20);
    expect(left).toEqual([]);
    expect(await storedMark(log.db, "direct")).toBeUndefined();
    await landNext();
    expect(left).toEqual(["5"]);
    expect(await storedMark(log.db, "direct")).toBe(35);
    await landNext();
    expect(left).toEqual(["5", "40"]);
    expect(await storedMark(log.db, "direct")).toBe(70);
    // Under the stored mark: no write, nothing to wait for.
    expect(attempts.handedOut(41, state.batch())).toBeUndefined();
  });

  it("costs an event two writes on the main database at a steady rate, its append and its ack: raises ride on the acks", async () => {
    const dir = await dataDir();
    const log = await EventLog.open(dir);
    const engine = new DeliveryEngine(log);
    await engine.start();
    cleanup.push(() => log.close(), () => engine.stop());
    const got: OutgoingDelivery[] = [];
    const m = await engine.join(settings("steady"), { send: (ds) => got.push(...ds) });
    await eventually(async () => (await storedMark(log.db, "steady")) !== undefined);
    let writes = 0;
    const db = log.db as unknown as { batch(): { write(...a: unknown[]): Promise<void> } };
    const batch = db.batch.bind(db);
    db.batch = () => {
      const b = batch();
      const write = b.write.bind(b);
      b.write = (...a: unknown[]) => (writes++, write(...a));
      return b;
    };
    for (let i = 1; i <= 200; i++) {
      await log.append([event("steady", String(i))]);
      await eventually(() => got.length === i);
      m.ack([got[i - 1]!.deliveryId]);
    }
    await eventually(() => engine.status()[0]?.ackedThrough === 200);
    expect(writes).toBe(400);
    // The mark moved with the events, many credits ahead of the last.
    expect(await storedMark(log.db, "steady")).toBeGreaterThan(200);
  });

  it("is brought down to the channel's head at start and stored so: events appended after a restart count no attempt", async () => {
    const dir = await dataDir();
    const run = runIn(dir);
    await run(async (log, engine) => {
      const got: OutgoingDelivery[] = [];
      const m = await engine.join(settings("clamp"), { send: (ds) => got.push(...ds) });
      await log.append([event("clamp", "1")]);
      await eventually(() => got.length === 1);
      m.ack([got[0]!.deliveryId]);
      await eventually(() => engine.status()[0]?.ackedThrough === 1);
    });
    await editMain(dir, async (db) => expect(await storedMark(db, "clamp")).toBeGreaterThan(1));
    // Started again, without a member: new events take sequences the mark had counted.
    await run(async (log) => {
      await log.append([event("clamp", "2"), event("clamp", "3")]);
    });
    await editMain(dir, async (db) => expect(await storedMark(db, "clamp")).toBe(1));
    await run(async (log, engine) => {
      const got: OutgoingDelivery[] = [];
      await engine.join(settings("clamp"), { send: (ds) => got.push(...ds) });
      await log.append([event("clamp", "4")]);
      await eventually(() => got.length === 3);
      expect(pairs(got)).toEqual([
        [2, 1],
        [3, 1],
        [4, 1],
      ]);
    });
  });

  it("delivers once more, at max attempts 1, an event the mark alone counted, before it can be dead-lettered", async () => {
    const dir = await dataDir();
    const run = runIn(dir);
    const once = settings("once", { maxAttempts: 1, maxInFlight: 1 });
    // For contrast: an attempt recorded on its own at max attempts is dead-lettered at start.
    const twice = settings("twice", { maxAttempts: 2 });
    await run(async (log, engine) => {
      const got: OutgoingDelivery[] = [];
      await engine.join(once, { send: (ds) => got.push(...ds) });
      const again: OutgoingDelivery[] = [];
      const t = await engine.join(twice, { send: (ds) => again.push(...ds) });
      // a goes; b waits for the one credit, under the mark raised ahead: both count one attempt.
      await log.append([event("once", "a"), event("once", "b"), event("twice", "c")]);
      await eventually(() => got.length === 1 && again.length === 1);
      t.nack([again[0]!.deliveryId], 0);
      await eventually(() => again.length === 2);
    });
    await run(async (log, engine) => {
      const got: OutgoingDelivery[] = [];
      const m = await engine.join(once, { send: (ds) => got.push(...ds) });
      await engine.join(twice, { send: () => {} });
      await eventually(() => got.length === 1);
      m.ack([got[0]!.deliveryId]);
      await eventually(() => got.length === 2);
      expect(pairs(got)).toEqual([
        [1, 2],
        [2, 2],
      ]);
      expect(log.head("once.dlq.g").last).toBe(0);
      m.nack([got[1]!.deliveryId], 0);
      await eventually(() => log.head("once.dlq.g").last === 1);
      await eventually(() => log.head("twice.dlq.g").last === 1);
    });
  });

  it("reads the pump records (p!) of a data directory written before it: attempt 1 each, converted on open", async () => {
    const dir = await dataDir();
    const run = runIn(dir);
    await run(async (log, engine) => {
      const got: OutgoingDelivery[] = [];
      await engine.join(settings("legacy"), { send: (ds) => got.push(...ds) });
      await log.append(["1", "2", "3", "4", "5"].map((id) => event("legacy", id)));
      await eventually(() => got.length === 5);
    });
    // As the code before the mark left it: 2, 3 and 4 went in two pumps, recorded in two p! records.
    const pump = (...seqs: number[]) => {
      const value = Buffer.alloc(seqs.length * 8);
      seqs.forEach((s, i) => value.writeDoubleLE(s, i * 8));
      return value;
    };
    await editMain(dir, async (db) => {
      await db.del("t!legacy!g");
      await db.put(`p!legacy!g!${seqHex(2)}`, pump(2, 3));
      await db.put(`p!legacy!g!${seqHex(4)}`, pump(4));
    });
    const keys = async (prefix: string) => {
      const out: string[] = [];
      await editMain(dir, async (db) => {
        for await (const k of db.keys({ gte: prefix, lt: `${prefix}\uffff` })) out.push(k);
      });
      return out;
    };
    await run(async (_log, engine) => {
      const got: OutgoingDelivery[] = [];
      const m = await engine.join(settings("legacy"), { send: (ds) => got.push(...ds) });
      await eventually(() => got.length === 5);
      expect(pairs(got)).toEqual([
        [1, 1],
        [2, 2],
        [3, 2],
        [4, 2],
        [5, 1],
      ]);
      m.ack(got.filter((d) => d.event.sequence !== 3).map((d) => d.deliveryId));
      await eventually(() => engine.status()[0]?.ackedThrough === 2);
    });
    expect(await keys("p!")).toEqual([]);
    expect(await keys("f!")).toEqual([`f!legacy!g!${seqHex(3)}`]);
    await run(async (_log, engine) => {
      const got: OutgoingDelivery[] = [];
      const m = await engine.join(settings("legacy"), { send: (ds) => got.push(...ds) });
      await eventually(() => got.length === 1);
      expect(pairs(got)).toEqual([[3, 3]]);
      m.ack([got[0]!.deliveryId]);
      await eventually(() => engine.status()[0]?.ackedThrough === 5);
    });
    expect(await keys("f!")).toEqual([]);
  });

  it("writes exact attempts at a clean close: a restart counts none too many, where a crash counts the mark's", async () => {
    const scenario = async (clean: boolean): Promise<[number, number][]> => {
      const run = runIn(await dataDir());
      await run(async (log, engine) => {
        const got: OutgoingDelivery[] = [];
        const m = await engine.join(settings("exact", { maxInFlight: 2 }), { send: (ds) => got.push(...ds) });
        await log.append(["1", "2", "3", "4"].map((id) => event("exact", id)));
        await eventually(() => got.length === 2);
        m.ack([got[0]!.deliveryId]);
        await eventually(() => got.length === 3);
      }, clean);
      const got: OutgoingDelivery[] = [];
      await run(async (_log, engine) => {
        await engine.join(settings("exact", { maxInFlight: 3 }), { send: (ds) => got.push(...ds) });
        await eventually(() => got.length === 3);
      });
      return pairs(got);
    };
    expect(await scenario(true)).toEqual([
      [2, 2],
      [3, 2],
      [4, 1],
    ]);
    expect(await scenario(false)).toEqual([
      [2, 2],
      [3, 2],
      [4, 2],
    ]);
  });

  it("writes nothing at a clean close while the disk is full, and does not wait for room: the next start counts as after a crash", async () => {
    const dir = await dataDir();
    const run = runIn(dir);
    await run(async (log, engine) => {
      const got: OutgoingDelivery[] = [];
      await engine.join(settings("full"), { send: (ds) => got.push(...ds) });
      await log.append([event("full", "1"), event("full", "2")]);
      await eventually(() => got.length === 2);
      // From here every write of the main database fails for want of room.
      const db = log.db as unknown as { batch(): { write(...a: unknown[]): Promise<void>; close(): Promise<void> } };
      const batch = db.batch.bind(db);
      db.batch = () => {
        const b = batch();
        b.write = () => b.close().then(() => Promise.reject(new Error("IO error: No space left on device")));
        return b;
      };
      await expect(log.append([event("full", "3")])).rejects.toThrow();
      expect(log.diskFull).toBeDefined();
    }, true);
    await run(async (_log, engine) => {
      const got: OutgoingDelivery[] = [];
      await engine.join(settings("full"), { send: (ds) => got.push(...ds) });
      await eventually(() => got.length === 2);
      expect(pairs(got)).toEqual([
        [1, 2],
        [2, 2],
      ]);
    });
  });

  it("tells after a crash which groups had relay copies in flight when only the mark counted them, and their origins once", async () => {
    const dir = await dataDir();
    const run = runIn(dir);
    const copy = (sequence: number) => ({ channel: "held", group: "g", origin: { node: "a", log: "1", sequence }, key: "", bytes: event("held", `c${sequence}`).bytes, attempt: 1 });
    await run(async (_log, engine) => {
      const got: OutgoingDelivery[] = [];
      await engine.join(settings("held"), { send: (ds) => got.push(...ds) });
      await engine.join(settings("own"), { send: (ds) => got.push(...ds) });
      await engine.appendCopies([copy(1), copy(2)]);
      await eventually(() => got.length === 2);
    });
    await run(async (_log, engine) => {
      expect(engine.interrupted().map((g) => `${g.channel}/${g.group}`)).toEqual(["held/g"]);
      // Given up once the group is withdrawn here: its origin hears of the attempt the mark
      // counted, once, not again when the copy is read.
      const told: [number, number][] = [];
      engine.routeOrigins({ done: () => {}, returned: (_c, _g, origin, attempts) => told.push([origin.sequence, attempts]), keeps: () => false });
      engine.release("held", "g");
      expect(told).toEqual([
        [1, 1],
        [2, 1],
      ]);
      const got: OutgoingDelivery[] = [];
      await engine.join(settings("held"), { send: (ds) => got.push(...ds) });
      await eventually(() => engine.status().find((g) => g.channel === "held")?.ackedThrough === 2);
      expect(told).toHaveLength(2);
      expect(got).toEqual([]);
    });
  });
});
